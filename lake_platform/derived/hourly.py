"""Rebuilding and checking one hour of a derived table, one partition value at a time.

A `DerivedTable` names its input folder, its output folder and its pure transform; every
derived table (Silver and Gold) is rebuilt and checked by the same two functions. Memory holds
at most one partition value's hour of input, never the whole hour of a table.
"""

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl
import pyarrow.parquet as pq

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.derived.partition_files import (
    WrittenFile,
    read_with_metadata,
    replace_partition,
)
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder

PREVIEW_ROWS = 5

FileCheck = Callable[[pl.DataFrame, pq.FileMetaData, str, dt.datetime], CheckOutcome]


@dataclass(frozen=True)
class Reconciliation:
    """A total of the derived hour that must equal a total of its input hour.

    `derived` is aggregated over each derived file and `source` over each partition value's
    input files (one value's rows at a time); both are summed.
    """

    what: str
    derived: pl.Expr
    source: pl.Expr

    def source_columns(self) -> list[str]:
        """The input columns `source` reads (`event_id` when it only counts rows)."""
        return self.source.meta.root_names() or ["event_id"]


@dataclass(frozen=True)
class DerivedTable:
    """A derived table: where it reads, where it writes, how it transforms, what it checks."""

    source: str
    target: str
    transform: Callable[[pl.DataFrame], pl.DataFrame]
    schema: pl.Schema
    order: tuple[str, ...]
    unique_keys: tuple[str, ...]
    reconciliations: dict[str, Reconciliation]
    extra_file_checks: dict[str, FileCheck] = field(default_factory=dict)

    @property
    def check_names(self) -> tuple[str, ...]:
        """Check names: `sorted_by_…`, `…_unique`, bounds, schema, ZSTD, then the table's own."""
        return (
            f"sorted_by_{self.order[0]}",
            f"{'_'.join(self.unique_keys)}_unique",
            "within_partition_hour",
            "matches_declared_schema",
            "zstd_compressed",
            *self.extra_file_checks,
            *self.reconciliations,
        )

    def file_checks(self) -> dict[str, FileCheck]:
        """Every per-file check of this table, by name."""
        sorted_name, unique_name = self.check_names[:2]
        return {
            sorted_name: lambda frame, _, path, __: checks.sorted_by(frame, self.order, path),
            unique_name: lambda frame, _, path, __: checks.unique(frame, self.unique_keys, path),
            "within_partition_hour": lambda frame, _, path, hour: checks.within_hour(
                frame, hour, path
            ),
            "matches_declared_schema": lambda frame, _, path, __: checks.matches_schema(
                frame, self.schema, path
            ),
            "zstd_compressed": lambda _, metadata, path, __: checks.zstd_compressed(metadata, path),
            **self.extra_file_checks,
        }


@dataclass
class HourResult:
    """What rebuilding one hour read and wrote."""

    hour: dt.datetime
    rows_read: int = 0
    rows_written: int = 0
    files: list[WrittenFile] = field(default_factory=list)
    removed_values: list[str] = field(default_factory=list)
    preview: pl.DataFrame | None = None

    @property
    def duplicates_removed(self) -> int:
        return self.rows_read - self.rows_written

    @property
    def bytes(self) -> int:
        return sum(file.bytes for file in self.files)


def hour_files(store: LakeStore, base: str, hour: dt.datetime) -> dict[str, list[str]]:
    """Parquet files of the hour under `base`, by partition-value folder (`symbol=SPY`)."""
    found = {}
    for value_folder in store.list_folders(base):
        files = store.list_files(f"{base}/{value_folder}/{hour_folder(hour)}")
        if files:
            found[value_folder] = files
    return found


def rebuild_hour(store: LakeStore, table: DerivedTable, hour: dt.datetime) -> HourResult:
    """Replace the hour's files of `table` with the transform of its inputs."""
    result = HourResult(hour)
    inputs = hour_files(store, table.source, hour)
    for value_folder, files in inputs.items():
        source = store.read_parquet(files)
        output = table.transform(source)
        folder = f"{table.target}/{value_folder}/{hour_folder(hour)}"
        result.files.extend(replace_partition(store, folder, output))
        result.rows_read += source.height
        result.rows_written += output.height
        if result.preview is None:
            result.preview = output.head(PREVIEW_ROWS)
    for value_folder, stale in hour_files(store, table.target, hour).items():
        if value_folder not in inputs:
            store.delete(stale)
            result.removed_values.append(value_folder)
    return result


def _add(totals: dict[str, int | float], frame: pl.DataFrame, exprs: dict[str, pl.Expr]) -> None:
    """Add each expression's aggregate over `frame` to its running total (null counts as 0).

    A file that lacks a column (a schema failure, reported by its own check) adds nothing.
    """
    for name, expr in exprs.items():
        try:
            value = frame.select(expr).item()
        except pl.exceptions.PolarsError:
            continue
        totals[name] = totals.get(name, 0) + (value or 0)


def _reconcile(
    store: LakeStore, table: DerivedTable, hour: dt.datetime, derived: dict[str, int | float]
) -> dict[str, CheckOutcome]:
    """Each reconciliation's derived total against its input total, read one value at a time."""
    source: dict[str, int | float] = {}
    columns = sorted({c for r in table.reconciliations.values() for c in r.source_columns()})
    for files in hour_files(store, table.source, hour).values():
        rows = store.read_parquet(files, columns=columns)
        _add(source, rows, {name: r.source for name, r in table.reconciliations.items()})
    where = f"{table.target} {hour:%Y-%m-%d %H}:00"
    outcomes = {}
    for name, reconciliation in table.reconciliations.items():
        mine, theirs = derived.get(name, 0), source.get(name, 0)
        outcomes[name] = (
            CheckOutcome.ok(f"{where}: {reconciliation.what} {mine}")
            if mine == theirs
            else CheckOutcome(
                False, f"{where}: {reconciliation.what} is {mine} but its input gives {theirs}"
            )
        )
    return outcomes


def check_hour(store: LakeStore, table: DerivedTable, hour: dt.datetime) -> dict[str, CheckOutcome]:
    """Every check of the hour, on the files as they are in storage (each read once)."""
    failures: dict[str, CheckOutcome] = {}
    targets = [path for paths in hour_files(store, table.target, hour).values() for path in paths]
    rows = 0
    derived_totals: dict[str, int | float] = {}
    derived_exprs = {name: r.derived for name, r in table.reconciliations.items()}
    for path in targets:
        frame, metadata = read_with_metadata(store, path)
        rows += frame.height
        _add(derived_totals, frame, derived_exprs)
        for name, check in table.file_checks().items():
            if name not in failures:
                outcome = check(frame, metadata, path, hour)
                if not outcome.passed:
                    failures[name] = outcome
    for name, outcome in _reconcile(store, table, hour, derived_totals).items():
        if not outcome.passed:
            failures[name] = outcome
    passed = CheckOutcome.ok(f"{len(targets)} files, {rows} rows in {hour:%Y-%m-%d %H}:00")
    return {name: failures.get(name, passed) for name in table.check_names}
