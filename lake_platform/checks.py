"""The invariants of derived files (docs/contract.md §1, 3–7), as plain functions, and what
each check of a derived hour verifies, as the UI shows it (`check_descriptions`).

Each returns a `CheckOutcome` whose message names the file and the first offending row, so a
failing Dagster check says exactly where to look.
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import polars as pl
import pyarrow.parquet as pq

from lake_platform.timestamps import HOUR_NS

if TYPE_CHECKING:
    from lake_platform.derived.declaration import DerivedTable

EXPECTED_COMPRESSION = "ZSTD"

WITHIN_PARTITION_HOUR: Final = "within_partition_hour"
MATCHES_DECLARED_SCHEMA: Final = "matches_declared_schema"
ZSTD_COMPRESSED: Final = "zstd_compressed"
OHLC_CONSISTENT: Final = "ohlc_consistent"
RECONCILES_WITH_BRONZE: Final = "reconciles_with_bronze"
NO_LOOK_AHEAD: Final = "no_look_ahead"
QUOTE_IS_LATEST: Final = "quote_is_latest"
GREEKS_ARE_LATEST: Final = "greeks_are_latest"
UNDERLYING_QUOTE_IS_LATEST: Final = "underlying_quote_is_latest"
"""Names of the checks every derived table has, of the Gold tables' own (bars, as-of joins)
and of the reconciliation of the tables built from Bronze; the order and uniqueness checks
are named after the table's keys (`DerivedTable.sorted_check`, `DerivedTable.unique_check`),
the other reconciliations by their `DerivedTable` entry."""

TABLE_CHECK_DESCRIPTIONS: Final = {
    OHLC_CONSISTENT: "Every bar has low <= open, close <= high.",
    NO_LOOK_AHEAD: "No joined quote or greeks snapshot lies after its trade: every age >= 0 "
    "and every joined ts_event_ns <= the trade's.",
    QUOTE_IS_LATEST: "Each trade holds the symbol's last Silver quote (in Silver order) at or "
    "before it within LAKE_ASOF_MAX_AGE, found by a sorted search over the quotes of the hour "
    "and the previous hour independent of the join: none lies in (matched time, trade time]; "
    "null exactly when none qualifies.",
    GREEKS_ARE_LATEST: "Each option trade holds its contract's last Silver greeks snapshot at or "
    "before it within LAKE_ASOF_MAX_AGE (sorted search over the hour and the previous hour, "
    "independent of the join); null exactly when none qualifies.",
    UNDERLYING_QUOTE_IS_LATEST: "Each option trade holds its underlying's last Silver stock "
    "quote at or before it within LAKE_ASOF_MAX_AGE (sorted search, independent of the join); "
    "null exactly when none qualifies.",
}
"""What a table's own check (`DerivedTable.extra_file_checks`, `lookup_checks`) verifies."""


def check_descriptions(table: "DerivedTable") -> dict[str, str]:
    """What each check of `table` verifies over one hour, by check name (the UI's text).

    Order and uniqueness span all the files of one partition value's hour (see
    `lake_platform.derived.checking.check_hour`), not each file alone; the reconciliations
    compare with the input rows the rebuild read.
    """
    value = table.partition_column
    descriptions = {
        table.sorted_check: (
            f"Each {value}'s files of the hour are sorted by ({', '.join(table.order)}): within "
            "every file and across its files in name order."
        ),
        table.unique_check: (
            f"No ({', '.join(table.unique_keys)}) appears twice among one {value}'s files of "
            "the hour, all of them together."
        ),
        WITHIN_PARTITION_HOUR: "Every row's ts_event_ns lies in the partition's UTC hour.",
        MATCHES_DECLARED_SCHEMA: (
            f"Every file's columns and types, with {value} from its folder last, are exactly "
            "the declared ones, in order."
        ),
        ZSTD_COMPRESSED: "Every column chunk of every file of the hour is ZSTD-compressed.",
        **{
            name: TABLE_CHECK_DESCRIPTIONS[name]
            for name in (*table.extra_file_checks, *table.lookup_checks)
        },
        **{
            name: (
                f"{reconciliation.what[0].upper()}{reconciliation.what[1:]}: the hour's total "
                f"equals that of the input rows its rebuild read, taken per {value} and summed."
            )
            for name, reconciliation in table.reconciliations.items()
        },
    }
    return {name: descriptions[name] for name in table.check_names}


@dataclass(frozen=True)
class CheckOutcome:
    """Whether an invariant holds, and where it first does not."""

    passed: bool
    message: str

    @classmethod
    def ok(cls, message: str) -> "CheckOutcome":
        return cls(True, message)


def _first_row(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def sorted_by(frame: pl.DataFrame, keys: Sequence[str], file: str) -> CheckOutcome:
    """Rows are in ascending order of `keys` (lexicographic)."""
    before_previous = pl.lit(False)
    equal_so_far = pl.lit(True)
    for key in keys:
        here, previous = pl.col(key), pl.col(key).shift(1)
        before_previous = before_previous | (equal_so_far & (here < previous))
        equal_so_far = equal_so_far & (here == previous)
    bad = frame.select(before_previous.fill_null(False).alias("bad")).to_series()
    order = ", ".join(keys)
    if not bad.any():
        return CheckOutcome.ok(f"{file}: {frame.height} rows in order of {order}")
    row = _first_row(bad)
    here = {key: frame[key][row] for key in keys}
    previous = {key: frame[key][row - 1] for key in keys}
    return CheckOutcome(
        False, f"{file}: row {row} {here} comes after row {row - 1} {previous} (order: {order})"
    )


def _hash_shared(values: pl.Series) -> pl.Series:
    """Whether each row's 64-bit hash is one another row has too.

    A row whose hash no other row has holds a value no other row holds; only the rows whose
    hash is shared (true duplicates, or the rare collision) need comparing by value. Shared
    hashes are found by sorting them, not in a hash table: several times faster than a hash
    table of the values themselves on long strings.
    """
    hashes = values.hash()
    in_order = hashes.sort()
    repeated = in_order.filter(in_order.eq_missing(in_order.shift(1))).unique()
    return hashes.is_in(repeated.implode())


def distinct_count(values: pl.Series) -> int:
    """`values.n_unique()`, exactly, in a fraction of its time on long strings."""
    shared = _hash_shared(values)
    return int((~shared).sum()) + values.filter(shared).n_unique()


def is_first_distinct(values: pl.Series) -> pl.Series:
    """`values.is_first_distinct()`, exactly, in a fraction of its time on long strings."""
    shared = _hash_shared(values)
    return (~shared).scatter(shared.arg_true(), values.filter(shared).is_first_distinct())


def unique(frame: pl.DataFrame, keys: Sequence[str], file: str) -> CheckOutcome:
    """No two rows share `keys`.

    Rows whose keys hash to 64-bit values all different are distinct: that settles it without
    comparing keys. Otherwise the keys are compared (a collision is no failure). One key is
    hashed as itself: hashing it wrapped in a struct takes twice as long.
    """
    keyed = pl.col(keys[0]) if len(keys) == 1 else pl.struct(list(keys))
    if frame.select(keyed.hash().n_unique()).item() == frame.height:
        return CheckOutcome.ok(f"{file}: {frame.height} distinct ({', '.join(keys)})")
    duplicated = frame.select(keyed.is_duplicated().alias("d")).get_column("d")
    if not duplicated.any():
        return CheckOutcome.ok(f"{file}: {frame.height} distinct ({', '.join(keys)})")
    row = _first_row(duplicated)
    values = {key: frame.row(row, named=True)[key] for key in keys}
    return CheckOutcome(False, f"{file}: row {row} repeats {values}")


def within_hour(frame: pl.DataFrame, hour: dt.datetime, file: str) -> CheckOutcome:
    """Every `ts_event_ns` lies in `[hour, hour + 1 h)`."""
    start = int(hour.timestamp()) * 10**9
    outside = frame.select(
        (~pl.col("ts_event_ns").is_between(start, start + HOUR_NS, closed="left")).alias("o")
    ).get_column("o")
    if not outside.any():
        return CheckOutcome.ok(f"{file}: every row in {hour:%Y-%m-%d %H}:00 UTC")
    row = _first_row(outside)
    return CheckOutcome(
        False,
        f"{file}: row {row} has ts_event_ns {frame['ts_event_ns'][row]} outside "
        f"[{start}, {start + HOUR_NS})",
    )


def matches_schema(actual: pl.Schema, declared: pl.Schema, file: str) -> CheckOutcome:
    """The file's columns and types (`actual`) are exactly the declared ones, in order."""
    if actual == declared:
        return CheckOutcome.ok(f"{file}: {len(declared)} declared columns")
    missing = [name for name in declared if name not in actual]
    extra = [name for name in actual if name not in declared]
    wrong = [
        f"{name} is {actual[name]}, declared {declared[name]}"
        for name in declared
        if name in actual and actual[name] != declared[name]
    ]
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra}")
    problems.extend(wrong)
    if not problems:
        problems.append(f"column order {list(actual)} differs from {list(declared)}")
    return CheckOutcome(False, f"{file}: " + "; ".join(problems))


def zstd_compressed(metadata: pq.FileMetaData, file: str) -> CheckOutcome:
    """Every column chunk of every row group is ZSTD."""
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for index in range(row_group.num_columns):
            chunk = row_group.column(index)
            if chunk.compression != EXPECTED_COMPRESSION:
                return CheckOutcome(
                    False,
                    f"{file}: column {chunk.path_in_schema} of row group {group} is "
                    f"{chunk.compression}, not ZSTD",
                )
    return CheckOutcome.ok(f"{file}: {metadata.num_row_groups} row groups, all ZSTD")
