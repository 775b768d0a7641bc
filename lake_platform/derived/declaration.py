"""What a derived table is: where it reads, where it writes, how it transforms, what it checks.

A `DerivedTable` is the one declaration from which every derived table (Silver and Gold) is
rebuilt (`rebuild.py`) and checked (`checking.py`), one partition value's hour at a time. Its
`source`'s value-hours drive the rebuild; `lookups` are further inputs read for the same
value (the same hour or the previous one), as an as-of join reads quotes beside trades.

The partition column lives in the path only (`symbol=SPY/…`), as in Hive and Spark tables:
files are read with it added from their folder (`with_partition_value`), and written without it.
"""

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import polars as pl

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.storage.paths import folder_partition_value

FileCheck = Callable[[pl.DataFrame, str, dt.datetime], CheckOutcome]
"""A check of one file's rows (as the checks see them), its path and the hour."""
LookupCheck = Callable[[pl.DataFrame, str, Mapping[str, pl.DataFrame]], CheckOutcome]
"""A check of one file's rows, its path, and its value-hour's lookup frames by name."""


@dataclass(frozen=True)
class Lookup:
    """An input a derived table reads for each partition value of its source besides it: the
    value's rows of another Silver table at an hour `hour_offset` from the rebuilt one (0 the
    same, -1 the previous), handed to the transform as the keyword `name`.

    The value's folder there is the source's value under `partition_column` (`underlying=SPY`
    → `symbol=SPY`). A value without rows there gets an empty frame of `schema`: `columns`
    (read from the files), then `partition_column`.
    """

    name: str
    source: str
    partition_column: str
    columns: tuple[str, ...]
    schema: pl.Schema
    hour_offset: int = 0

    def value_folder(self, source_value_folder: str) -> str:
        """This input's folder of the source's `{col}={escaped value}` folder."""
        return f"{self.partition_column}={source_value_folder.partition('=')[2]}"

    def hour(self, hour: dt.datetime) -> dt.datetime:
        """The hour this input is read at when `hour` is rebuilt."""
        return hour + dt.timedelta(hours=self.hour_offset)


@dataclass(frozen=True)
class Reconciliation:
    """A total of the derived hour that must equal a total of its input hour.

    `derived` is aggregated over each derived file when checking, `source` over each partition
    value's input rows while rebuilding (the frame the transform reads); both are summed.
    """

    what: str
    derived: pl.Expr
    source: pl.Expr


@dataclass(frozen=True)
class DerivedTable:
    """A derived table: where it reads, where it writes, how it transforms, what it checks.

    `source_columns` are the columns read from the input files (without the partition
    column); `schema` is a row as the checks see it: the file's columns, then
    `partition_column`, added from the folder, last.
    """

    source: str
    target: str
    partition_column: str
    source_columns: tuple[str, ...]
    transform: Callable[..., pl.DataFrame]
    """The value-hour's source frame (and each lookup's frame, by keyword) → its rows."""
    schema: pl.Schema
    order: tuple[str, ...]
    unique_keys: tuple[str, ...]
    reconciliations: dict[str, Reconciliation]
    extra_file_checks: dict[str, FileCheck] = field(default_factory=dict)
    lookups: tuple[Lookup, ...] = ()
    lookup_checks: dict[str, LookupCheck] = field(default_factory=dict)
    """Checks of a file's rows against the lookup frames its value-hour was built from."""
    column_docs: dict[str, str] = field(default_factory=dict)
    """What a column means in this table where it differs from the shared descriptions of
    `schemas/columns.py` (e.g. a bar's `open`)."""

    @property
    def sorted_check(self) -> str:
        """Name of the order check: files (and a value-hour's files in name order) are sorted."""
        return f"sorted_by_{self.order[0]}"

    @property
    def unique_check(self) -> str:
        """Name of the uniqueness check of `unique_keys` over each value-hour's files."""
        return f"{'_'.join(self.unique_keys)}_unique"

    @property
    def check_names(self) -> tuple[str, ...]:
        """Check names: order, uniqueness, bounds, schema, ZSTD, then the table's own."""
        return (
            self.sorted_check,
            self.unique_check,
            checks.WITHIN_PARTITION_HOUR,
            checks.MATCHES_DECLARED_SCHEMA,
            checks.ZSTD_COMPRESSED,
            *self.extra_file_checks,
            *self.lookup_checks,
            *self.reconciliations,
        )

    @property
    def input_hours(self) -> dict[str, tuple[int, ...]]:
        """Each input table's lake path, with the hour offsets it is read at (0: the rebuilt
        hour, -1: the one before), the source first: what the hour depends on."""
        offsets: dict[str, set[int]] = {self.source: {0}}
        for lookup in self.lookups:
            offsets.setdefault(lookup.source, set()).add(lookup.hour_offset)
        return {source: tuple(sorted(hours)) for source, hours in offsets.items()}

    def row_checks(self) -> dict[str, FileCheck]:
        """Every check of one file's rows, by name (schema and codec are read from footers)."""
        return {
            self.sorted_check: lambda frame, path, _: checks.sorted_by(frame, self.order, path),
            self.unique_check: lambda frame, path, _: checks.unique(frame, self.unique_keys, path),
            checks.WITHIN_PARTITION_HOUR: lambda frame, path, hour: checks.within_hour(
                frame, hour, path
            ),
            **self.extra_file_checks,
        }


@dataclass(frozen=True, kw_only=True)
class GoldTable(DerivedTable):
    """A Gold table: how it is derived (input and output folders, transform, partition column,
    order and unique keys, its own checks and reconciliations: see `DerivedTable`) and what the
    UI says of it.

    Its asset is keyed by its `target` path and depends on the assets of its `inputs`. Its
    columns are described by name in `schemas/columns.py` (`COLUMNS`), and by its own
    `column_docs` where it gives a common name another meaning; a column without a
    description is refused when its asset is built.
    """

    description: str
    """The asset's description in the UI (Markdown)."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """The lake paths of the tables it is derived from: its upstream assets."""
        return tuple(self.input_hours)


def with_partition_value(frame: pl.DataFrame, column: str, value_folder: str) -> pl.DataFrame:
    """`frame` (rows of files in `value_folder`) with the partition column from the folder
    name, last, as a string exactly as published.

    A file that holds the column itself keeps it in its own position, so the declared-schema
    check (which expects it last) names such a file.
    """
    value = folder_partition_value(value_folder)
    return frame.with_columns(pl.lit(value, dtype=pl.String()).alias(column))
