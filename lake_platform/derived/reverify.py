"""Checking an hour of a derived table again, from its files as stored, without rebuilding it.

The checks are the rebuild's own (`check_hour`): every file of the hour is read and its rows
checked as the inline checks check a file they did not write. Only the reconciliations need
more: the totals of the input rows the rebuild read are not stored, so they are recomputed
from the hour's stored inputs, read only (the columns the reconciliations read, one partition
value's hour at a time). An hour whose input changed since its rebuild (late Bronze) then
fails its reconciliation: it no longer matches its input, and a rebuild is what fixes it.

The hour's files are those of the table's current snapshot; its inputs are found as a rebuild
finds them (Bronze from the ledger when that is cheaper than listing, a Silver input from its
current snapshot), so a verification reads what a rebuild of the hour would.
"""

import datetime as dt
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lake_platform.checks import CheckOutcome
from lake_platform.derived.checking import add_totals, check_hour
from lake_platform.derived.declaration import DerivedTable, with_partition_value
from lake_platform.derived.hour_files import HourFiles
from lake_platform.derived.results import HourResult
from lake_platform.derived.sources import hour_inputs
from lake_platform.storage import LakeStore, StorageError
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.tables.time_travel import snapshot_as_of

READABLE = "files_readable"
"""The outcome of an hour with a file no check could read (it replaces the checks' own)."""


@dataclass(frozen=True)
class Verification:
    """Every check of one stored hour, by name (or `READABLE` alone when a file could not
    be read), and what was read."""

    hour: dt.datetime
    outcomes: Mapping[str, CheckOutcome]
    files: int
    input_files: int

    @property
    def passed(self) -> bool:
        return all(outcome.passed for outcome in self.outcomes.values())

    @property
    def failures(self) -> dict[str, CheckOutcome]:
        return {name: outcome for name, outcome in self.outcomes.items() if not outcome.passed}


def verify_hour(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, as_of: str | None = None
) -> Verification:
    """The checks of `table`'s hour on the files of its current snapshot (or of the snapshot
    current at `as_of`: a tag, a snapshot id or a time), reconciled with its stored inputs
    (for a Silver input: its snapshot at the same `as_of`; Bronze as it is now).

    A file that is not valid Parquet (output or input) fails the hour with its name under
    `READABLE`; any other storage failure (an outage) is raised: the hour was not verified.
    """
    store = tables.store
    planned = hour_inputs(tables, table, hour, as_of)
    inputs = planned.files
    stored = HourResult(hour, inputs, planned.values, lookups=planned.lookups)
    iceberg = tables.table(table)
    current = iceberg.current_snapshot() if as_of is None else snapshot_as_of(iceberg, as_of)
    stored.snapshot_id = None if current is None else current.snapshot_id
    outputs = {} if current is None else hour_paths(iceberg, hour, stored.snapshot_id)
    counts = {"files": _count(outputs), "input_files": stored.input_files}
    try:
        stored.source_totals = input_totals(store, table, inputs)
        outcomes = check_hour(tables, table, stored)
    except (StorageError, pa.ArrowException, pl.exceptions.PolarsError) as error:
        if isinstance(error, StorageError) and error.kind != "rejected":
            raise
        unreadable = _unreadable(store, [*_paths(outputs), *_paths(inputs)], error)
        return Verification(hour, {READABLE: unreadable}, **counts)
    return Verification(hour, outcomes, **counts)


def input_totals(
    store: LakeStore, table: DerivedTable, inputs: HourFiles
) -> dict[str, int | float]:
    """Each reconciliation's total over the stored input rows of the hour, summed over its
    partition values (as a rebuild takes them while reading; null counts as 0)."""
    exprs = {name: r.source for name, r in table.reconciliations.items()}
    read = {column for expr in exprs.values() for column in expr.meta.root_names()}
    columns = [column for column in table.source_columns if column in read]
    columns = columns or list(table.source_columns[:1])  # `pl.len()` reads none, counts rows
    totals: dict[str, int | float] = {}
    for value_folder, files in inputs.items():
        rows = store.read_parquet(files, columns)
        add_totals(totals, with_partition_value(rows, table.partition_column, value_folder), exprs)
    return totals


def _count(files: HourFiles) -> int:
    return sum(len(paths) for paths in files.values())


def _paths(files: HourFiles) -> list[str]:
    return [path for paths in files.values() for path in paths]


def _unreadable(store: LakeStore, paths: Sequence[str], error: Exception) -> CheckOutcome:
    """The first of `paths` whose Parquet footer cannot be read, named with its error; the
    error alone when every footer reads (the failure was in a file's pages)."""
    for path in paths:
        try:
            pq.read_metadata(io.BytesIO(store.read_bytes(path)))
        except pa.ArrowException as unreadable:
            return CheckOutcome(False, f"{path}: not readable Parquet: {_first_line(unreadable)}")
    return CheckOutcome(False, f"a file of the hour is not readable: {_first_line(error)}")


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
