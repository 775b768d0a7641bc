"""What a derived table is: where it reads, where it writes, how it transforms, what it checks.

A `DerivedTable` is the one declaration from which every derived table (Silver and Gold) is
rebuilt (`rebuild.py`) and checked (`checking.py`), one partition value's hour at a time.

The partition column lives in the path only (`symbol=SPY/…`), as in Hive and Spark tables:
files are read with it added from their folder (`with_partition_value`), and written without it.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.storage.paths import folder_partition_value

FileCheck = Callable[[pl.DataFrame, str, dt.datetime], CheckOutcome]
"""A check of one file's rows (as the checks see them), its path and the hour."""


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
    transform: Callable[[pl.DataFrame], pl.DataFrame]
    schema: pl.Schema
    order: tuple[str, ...]
    unique_keys: tuple[str, ...]
    reconciliations: dict[str, Reconciliation]
    extra_file_checks: dict[str, FileCheck] = field(default_factory=dict)
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
            *self.reconciliations,
        )

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


def with_partition_value(frame: pl.DataFrame, column: str, value_folder: str) -> pl.DataFrame:
    """`frame` (rows of files in `value_folder`) with the partition column from the folder
    name, last, as a string exactly as published.

    A file that holds the column itself keeps it in its own position, so the declared-schema
    check (which expects it last) names such a file.
    """
    value = folder_partition_value(value_folder)
    return frame.with_columns(pl.lit(value, dtype=pl.String()).alias(column))
