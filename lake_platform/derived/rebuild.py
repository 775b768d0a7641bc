"""Rebuilding one hour of a derived table, one partition value at a time, committed to its
Iceberg table in one snapshot.

Each value-hour's input files are read, transformed by the table's pure transform, written
under content-addressed names, and the rows written checked (`checking.check_rows`), so
`check_hour` need not read them again. Memory holds at most one partition value's hour of
input, never the whole hour of a table. Then one commit makes the files written the hour's
files (`tables.hours.replace_hour`): a reader sees the hour whole old or whole new, values
that lost their input lose their files in the same snapshot, and the files of the previous
version stay for the snapshots that reference them.
"""

import datetime as dt
import itertools
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl
from pyiceberg.table import Table

from lake_platform.derived.checking import add_totals, check_rows, merge_totals
from lake_platform.derived.declaration import DerivedTable, with_partition_value
from lake_platform.derived.hour_files import files_digest, value_hour_folder
from lake_platform.derived.partition_files import WrittenFile, write_partition
from lake_platform.derived.results import CheckedRows, HourResult
from lake_platform.derived.sources import (
    HourInputs,
    catalog_inputs_changed,
    hour_inputs,
    is_listed,
    listed_value_inputs,
    lookup_frames,
)
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.hours import HourConflict, hour_paths, replace_hour, snapshot_properties
from lake_platform.tables.lake_tables import LakeTables

PREVIEW_ROWS = 5
MAX_VALUE_REBUILDS = 3
"""Rebuilds of one value-hour in a run when its inputs keep changing (see `_rebuild_value`)."""
MAX_HOUR_REBUILDS = 3
"""Rebuilds of the hour in a run when another run commits it meanwhile (see `rebuild_hour`)."""


def rebuild_hour(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, run_id: str = ""
) -> HourResult:
    """Replace the hour of `table` with the transform of its inputs, in one Iceberg commit
    whose snapshot records the hour, `run_id` (the Dagster run) and the inputs' digest.

    Two runs of the same hour at once (`dagster asset materialize` bypasses the instance's
    per-partition run limit, a backfill meets the automation) never leave two versions live,
    and never an older one over a newer: the hour's files are noted before its inputs are
    read, and when another run committed the hour in the meantime (from inputs this run may
    not have seen) this one's commit is refused (`HourConflict`) and the hour rebuilt, up to
    `MAX_HOUR_REBUILDS` times; the last conflict is raised. So is the rebuild repeated when a
    Silver input was committed anew meanwhile. Unchanged output commits nothing.
    """

    def write() -> tuple[HourResult, bool]:
        inputs = hour_inputs(tables, table, hour)
        result = _rebuild_files(tables, table, hour, inputs)
        return result, catalog_inputs_changed(tables, table, hour, inputs)

    return commit_rebuilt(tables.table(table), hour, run_id, write)


def commit_rebuilt(
    iceberg: Table,
    hour: dt.datetime,
    run_id: str,
    write: Callable[[], tuple[HourResult, bool]],
    attempts: int = MAX_HOUR_REBUILDS,
) -> HourResult:
    """Write an hour's files (`write`: the result, and whether its inputs changed while it
    ran) and commit them as the hour, up to `attempts` times: again when the inputs changed,
    or when another run committed the hour since its files were noted (`HourConflict`, the
    last one raised). The result holds the commit and the snapshot holding the hour."""
    for attempt in range(1, attempts + 1):
        before = [path for paths in hour_paths(iceberg, hour).values() for path in paths]
        result, inputs_changed = write()
        if attempt < attempts and inputs_changed:
            continue
        properties = snapshot_properties(hour, run_id, files_digest(result.every_input()))
        new_files = [NewFile(file.path, file.bytes) for file in result.files]
        try:
            result.commit = replace_hour(iceberg, hour, new_files, properties, before)
        except HourConflict:
            if attempt == attempts:
                raise
            continue
        current = iceberg.current_snapshot()
        result.snapshot_id = None if current is None else current.snapshot_id
        return result
    raise AssertionError("unreachable: the last attempt returns or raises")


def _rebuild_files(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, planned: HourInputs
) -> HourResult:
    """Write the hour's files from its inputs, one value at a time (nothing committed)."""
    inputs = dict(planned.files)
    result = HourResult(hour, inputs, planned.values, lookups=planned.lookups)
    for value_folder, files in planned.files.items():
        value = _rebuild_value(tables, table, hour, value_folder, files, planned.lookups)
        inputs[value_folder] = value.inputs
        merge_totals(result.source_totals, value.source_totals)
        result.checked[value_folder] = value.checked
        result.files.extend(value.files)
        result.rows_read += value.rows_read
        result.rows_written += value.rows_written
        if result.preview is None:
            result.preview = value.preview
    return result


@dataclass(frozen=True)
class _RebuiltValue:
    """One value-hour as rebuilt: its input files and what was written from them (no rows but
    a preview's, so nothing of the value-hour stays in memory once it is written)."""

    inputs: list[str]
    rows_read: int
    rows_written: int
    files: list[WrittenFile]
    source_totals: dict[str, int | float]
    checked: CheckedRows
    preview: pl.DataFrame


def _rebuild_value(
    tables: LakeTables,
    table: DerivedTable,
    hour: dt.datetime,
    value_folder: str,
    files: list[str],
    lookups: dict[str, dict[str, list[str]]],
) -> _RebuiltValue:
    """Write one value-hour's files; again when its Bronze inputs grew while it was rebuilt.

    Bronze only gains files, so inputs unchanged after the write mean the output holds every
    input file that existed before it was written. After `MAX_VALUE_REBUILDS` the last output
    stays: the newer inputs make the hour stale, and the automation requests it again. (A
    Silver input is pinned to a snapshot for the whole hour: `rebuild_hour`.)
    """
    with ThreadPoolExecutor(1) as pool:
        for _ in range(MAX_VALUE_REBUILDS):
            rebuilt = _rebuild_once(tables, table, hour, value_folder, files, lookups, pool)
            if not is_listed(table):
                break
            files = listed_value_inputs(tables, table, hour, value_folder)
            if files == rebuilt.inputs:
                break
    return rebuilt


def _rebuild_once(
    tables: LakeTables,
    table: DerivedTable,
    hour: dt.datetime,
    value_folder: str,
    files: list[str],
    lookups: dict[str, dict[str, list[str]]],
    pool: ThreadPoolExecutor,
) -> _RebuiltValue:
    """Read one value-hour's `files` (and its lookups' files), transform, write, and check
    the rows written.

    What memory holds at once is the input and the output growing from it: the
    reconciliations' totals of the input rows are taken in `pool` while the transform runs,
    on the columns they read only; the transform is handed the only reference to the input,
    so it may release input columns as it no longer needs them (`deduplicate` does); the
    files are streamed to storage, not built in memory; and nothing but counts and a
    preview outlives this call.
    """
    source = with_partition_value(
        tables.store.read_parquet(files, table.source_columns),
        table.partition_column,
        value_folder,
    )
    rows_read = source.height
    source_exprs = {name: r.source for name, r in table.reconciliations.items()}
    totals = pool.submit(add_totals, {}, _columns_read(source, source_exprs), source_exprs)
    looked_up = lookup_frames(tables.store, table, value_folder, lookups)
    handed_over = [source]  # so that the transform's argument is the input's only reference
    del source
    output = table.transform(handed_over.pop(), **looked_up)
    folder = value_hour_folder(table.target, value_folder, hour)
    written = write_partition(tables.store, folder, output.drop(table.partition_column))
    return _RebuiltValue(
        inputs=files,
        rows_read=rows_read,
        rows_written=output.height,
        files=written,
        source_totals=totals.result(),
        checked=_check_written(table, hour, value_folder, output, written, looked_up),
        preview=_detached(output.head(PREVIEW_ROWS)),
    )


def _columns_read(frame: pl.DataFrame, exprs: Mapping[str, pl.Expr]) -> pl.DataFrame:
    """The columns of `frame` that `exprs` read (those it has: a missing one fails its own
    expression in `add_totals`); its first column when they read none (`pl.len()`), so the
    rows are still counted."""
    names = {name for expr in exprs.values() for name in expr.meta.root_names()}
    read = [name for name in frame.columns if name in names]
    return frame.select(read or frame.columns[:1])


def _detached(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of a few rows of `frame` in buffers of its own: a slice would keep every row
    of the frame's buffers alive."""
    return pl.from_dicts(frame.to_dicts(), schema=frame.schema)


def _check_written(
    table: DerivedTable,
    hour: dt.datetime,
    value_folder: str,
    output: pl.DataFrame,
    files: list[WrittenFile],
    lookups: Mapping[str, pl.DataFrame],
) -> CheckedRows:
    """The row checks of the `files` just written, on the rows they were written from (the
    transform's `output`, each file its slice, and the `lookups` it was built from), with
    the digests of the bytes written."""
    starts = itertools.accumulate((file.rows for file in files), initial=0)
    rows = (
        (file.path, output.slice(start, file.rows))
        for file, start in zip(files, starts, strict=False)
    )
    folder = value_hour_folder(table.target, value_folder, hour)
    checked = check_rows(table, hour, folder, rows, lookups)
    checked.digests = {file.path: file.sha256 for file in files}
    return checked
