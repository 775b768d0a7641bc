"""Rebuilding one hour of a derived table, one partition value at a time.

Each value-hour's input files are read, transformed by the table's pure transform, written,
and the rows written checked (`checking.check_rows`), so `check_hour` need not read them
again. Memory holds at most one partition value's hour of input, never the whole hour of a
table.
"""

import datetime as dt
import itertools
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import polars as pl

from lake_platform.derived.checking import add_totals, check_rows, merge_totals
from lake_platform.derived.declaration import DerivedTable, with_partition_value
from lake_platform.derived.hour_files import hour_files, value_hour_folder
from lake_platform.derived.inputs import hour_value_folders
from lake_platform.derived.partition_files import WrittenFile, replace_partition
from lake_platform.derived.results import CheckedRows, HourResult
from lake_platform.storage import LakeStore

PREVIEW_ROWS = 5
MAX_VALUE_REBUILDS = 3
"""Rebuilds of one value-hour in a run when its inputs keep changing (see `_rebuild_value`)."""


def rebuild_hour(store: LakeStore, table: DerivedTable, hour: dt.datetime) -> HourResult:
    """Replace the hour's files of `table` with the transform of its inputs.

    Two runs of the same hour at once (`dagster asset materialize` bypasses the instance's
    per-partition run limit) end with the output of the newest inputs: see `_rebuild_value`
    and `_has_inputs`. Each value-hour of one file is seen whole old or whole new throughout.

    Only the values the ledger names for the hour are listed, when it can (`inputs.py`);
    then the outputs of those values that lost their inputs are the stale ones looked for.
    """
    planned = hour_value_folders(store, table.source, hour, time.time_ns())
    inputs = hour_files(store, table.source, hour, planned.folders)
    values = planned.folders if planned.from_ledger else None
    result = HourResult(hour, inputs, values)
    for value_folder, files in inputs.items():
        value = _rebuild_value(store, table, hour, value_folder, files)
        inputs[value_folder] = value.inputs
        merge_totals(result.source_totals, value.source_totals)
        result.checked[value_folder] = value.checked
        result.files.extend(value.files)
        result.rows_read += value.rows_read
        result.rows_written += value.rows_written
        if result.preview is None:
            result.preview = value.preview
    outputs = None if values is None else [value for value in values if value not in inputs]
    for value_folder, stale in hour_files(store, table.target, hour, outputs).items():
        if value_folder not in inputs and not _has_inputs(store, table, hour, value_folder):
            store.delete(stale)
            result.removed_values.append(value_folder)
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
    store: LakeStore, table: DerivedTable, hour: dt.datetime, value_folder: str, files: list[str]
) -> _RebuiltValue:
    """Replace one value-hour's files; again when its inputs changed while it was rebuilt.

    Bronze only gains files, so inputs unchanged after the write mean the output holds every
    input file that existed before it was written: a concurrent run of the same hour that read
    fewer files and wrote later (overwriting a newer output with an older one) sees the new
    files here and rewrites. After `MAX_VALUE_REBUILDS` the last output stays: the newer
    inputs make the hour stale, and the automation requests it again.
    """
    source_folder = value_hour_folder(table.source, value_folder, hour)
    with ThreadPoolExecutor(1) as pool:
        for _ in range(MAX_VALUE_REBUILDS):
            rebuilt = _rebuild_once(store, table, hour, value_folder, files, pool)
            files = store.list_files(source_folder)
            if files == rebuilt.inputs:
                break
    return rebuilt


def _rebuild_once(
    store: LakeStore,
    table: DerivedTable,
    hour: dt.datetime,
    value_folder: str,
    files: list[str],
    pool: ThreadPoolExecutor,
) -> _RebuiltValue:
    """Read one value-hour's `files`, transform, write, and check the rows written.

    What memory holds at once is the input and the output growing from it: the
    reconciliations' totals of the input rows are taken in `pool` while the transform runs,
    on the columns they read only; the transform is handed the only reference to the input,
    so it may release input columns as it no longer needs them (`deduplicate` does); the
    files are streamed to storage, not built in memory; and nothing but counts and a
    preview outlives this call.
    """
    source = with_partition_value(
        store.read_parquet(files, table.source_columns), table.partition_column, value_folder
    )
    rows_read = source.height
    source_exprs = {name: r.source for name, r in table.reconciliations.items()}
    totals = pool.submit(add_totals, {}, _columns_read(source, source_exprs), source_exprs)
    handed_over = [source]  # so that the transform's argument is the input's only reference
    del source
    output = table.transform(handed_over.pop())
    folder = value_hour_folder(table.target, value_folder, hour)
    written = replace_partition(store, folder, output.drop(table.partition_column))
    return _RebuiltValue(
        inputs=files,
        rows_read=rows_read,
        rows_written=output.height,
        files=written,
        source_totals=totals.result(),
        checked=_check_written(table, hour, value_folder, output, written),
        preview=_detached(output.head(PREVIEW_ROWS)),
    )


def _columns_read(frame: pl.DataFrame, exprs: Mapping[str, pl.Expr]) -> pl.DataFrame:
    """The columns of `frame` that `exprs` read (those it has: a missing one fails its own
    expression in `add_totals`)."""
    names = {name for expr in exprs.values() for name in expr.meta.root_names()}
    return frame.select([name for name in frame.columns if name in names])


def _detached(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of a few rows of `frame` in buffers of its own: a slice would keep every row
    of the frame's buffers alive."""
    return pl.from_dicts(frame.to_dicts(), schema=frame.schema)


def _has_inputs(
    store: LakeStore, table: DerivedTable, hour: dt.datetime, value_folder: str
) -> bool:
    """Whether the value-hour has input files now: a concurrent run may have rebuilt a value
    this run never saw, whose output is then not stale."""
    return bool(store.list_files(value_hour_folder(table.source, value_folder, hour)))


def _check_written(
    table: DerivedTable,
    hour: dt.datetime,
    value_folder: str,
    output: pl.DataFrame,
    files: list[WrittenFile],
) -> CheckedRows:
    """The row checks of the `files` just written, on the rows they were written from (the
    transform's `output`, each file its slice), with the digests of the bytes written."""
    starts = itertools.accumulate((file.rows for file in files), initial=0)
    rows = (
        (file.path, output.slice(start, file.rows))
        for file, start in zip(files, starts, strict=False)
    )
    checked = check_rows(table, hour, value_hour_folder(table.target, value_folder, hour), rows)
    checked.digests = {file.path: file.sha256 for file in files}
    return checked
