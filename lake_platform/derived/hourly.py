"""Rebuilding and checking one hour of a derived table, one partition value at a time.

A `DerivedTable` names its input folder, its output folder and its pure transform; every
derived table (Silver and Gold) is rebuilt and checked by the same two functions. Memory holds
at most one partition value's hour of input, never the whole hour of a table.

The partition column lives in the path only (`symbol=SPY/…`), as in Hive and Spark tables:
files are read with it added from their folder, and written without it.
"""

import datetime as dt
import hashlib
import io
import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.derived.inputs import hour_value_folders
from lake_platform.derived.partition_files import WrittenFile, replace_partition, sha256
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.parquet import read_parquet_file
from lake_platform.storage.paths import folder_partition_value, hour_folder

PREVIEW_ROWS = 5
MAX_VALUE_REBUILDS = 3
"""Rebuilds of one value-hour in a run when its inputs keep changing (see `_rebuild_value`)."""

FileCheck = Callable[[pl.DataFrame, str, dt.datetime], CheckOutcome]
"""A check of one file's rows (as the checks see them), its path and the hour."""
HourFiles = Mapping[str, Sequence[str]]
"""Parquet files of one hour of a table, by partition-value folder (`symbol=SPY`), by name."""


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


def files_digest(files: HourFiles) -> str:
    """SHA-256 of the sorted relative paths of `files`: names an exact set of input files."""
    paths = sorted(path for paths in files.values() for path in paths)
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()


@dataclass
class CheckedRows:
    """The row checks of one value-hour's files: the first failure of each check, by name,
    and each reconciliation's derived total.

    `digests` (path to SHA-256) name the exact files whose rows were checked when the checks
    ran on the rows a rebuild wrote them from; empty when they ran on the files as read.
    """

    failures: dict[str, CheckOutcome] = field(default_factory=dict)
    totals: dict[str, int | float] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)


@dataclass
class HourResult:
    """What rebuilding one hour read (`inputs`, the exact files) and wrote.

    `source_totals` holds each reconciliation's total of the rows the rebuild read, so the
    check compares with what the rebuild saw even after the inputs changed or vanished.
    `checked` holds, by value folder, the row checks of the rows each value-hour's files were
    written from (see `check_hour`). `values` are the value folders whose hour the rebuild
    listed when the ledger named them, for the checks to list the same; None: every one.
    """

    hour: dt.datetime
    inputs: dict[str, list[str]] = field(default_factory=dict)
    values: list[str] | None = None
    source_totals: dict[str, int | float] = field(default_factory=dict)
    rows_read: int = 0
    rows_written: int = 0
    files: list[WrittenFile] = field(default_factory=list)
    removed_values: list[str] = field(default_factory=list)
    preview: pl.DataFrame | None = None
    checked: dict[str, CheckedRows] = field(default_factory=dict)

    @property
    def duplicates_removed(self) -> int:
        return self.rows_read - self.rows_written

    @property
    def bytes(self) -> int:
        return sum(file.bytes for file in self.files)

    @property
    def input_files(self) -> int:
        return sum(len(files) for files in self.inputs.values())


def hour_files(
    store: LakeStore, base: str, hour: dt.datetime, value_folders: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Parquet files of the hour under `base`, by partition-value folder (`symbol=SPY`): of
    `value_folders`, or of every value folder there is."""
    found = {}
    if value_folders is None:
        value_folders = store.list_folders(base)
    for value_folder in value_folders:
        files = store.list_files(f"{base}/{value_folder}/{hour_folder(hour)}")
        if files:
            found[value_folder] = files
    return found


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
        _merge(result.source_totals, value.source_totals)
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
    source_folder = f"{table.source}/{value_folder}/{hour_folder(hour)}"
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
    folder = _target_folder(table, value_folder, hour)
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
    return bool(store.list_files(f"{table.source}/{value_folder}/{hour_folder(hour)}"))


def _merge(totals: dict[str, int | float], more: Mapping[str, int | float]) -> None:
    """Add `more` to the running `totals`, name by name."""
    for name, total in more.items():
        totals[name] = totals.get(name, 0) + total


def add_totals(
    totals: dict[str, int | float], frame: pl.DataFrame, exprs: Mapping[str, pl.Expr]
) -> dict[str, int | float]:
    """Add each expression's aggregate over `frame` to its running total (null counts as 0);
    returns `totals`. The one way reconciliation totals are taken, of rows read or written.

    A frame that lacks a column (a schema failure, reported by its own check) adds nothing.
    """
    for name, expr in exprs.items():
        try:
            value = frame.select(expr).item()
        except pl.exceptions.PolarsError:
            continue
        _merge(totals, {name: value or 0})
    return totals


def _reconcile(
    table: DerivedTable, rebuilt: HourResult, derived: dict[str, int | float]
) -> dict[str, CheckOutcome]:
    """Each reconciliation's derived total against the total of the rows the rebuild read."""
    where = f"{table.target} {rebuilt.hour:%Y-%m-%d %H}:00"
    read = f"{rebuilt.input_files} input files"
    outcomes = {}
    for name, reconciliation in table.reconciliations.items():
        mine, theirs = derived.get(name, 0), rebuilt.source_totals.get(name, 0)
        outcomes[name] = (
            CheckOutcome.ok(f"{where}: {reconciliation.what} {mine} ({read})")
            if mine == theirs
            else CheckOutcome(
                False,
                f"{where}: {reconciliation.what} is {mine} but the rebuild's {read} give {theirs}",
            )
        )
    return outcomes


@dataclass
class _AcrossFiles:
    """The order and uniqueness of one partition value's files taken together, in name order.

    A value-hour split over several files must be sorted from the first row of its first file
    to the last row of its last, with keys unique over all of them: each file's own checks
    cannot see a boundary or a key repeated in another file.
    """

    table: DerivedTable
    folder: str
    last_path: str | None = None
    last_row: pl.DataFrame | None = None
    keys: list[pl.DataFrame] = field(default_factory=list)

    def add(self, frame: pl.DataFrame, path: str) -> CheckOutcome | None:
        """Record a file; the order failure at its boundary with the previous file, if any."""
        try:
            order = frame.select(self.table.order)
            self.keys.append(frame.select(self.table.unique_keys))
        except pl.exceptions.PolarsError:
            return None  # a missing key column is the schema check's failure
        failure = None
        if self.last_row is not None and order.height:
            boundary = pl.concat([self.last_row, order.head(1)])
            outcome = checks.sorted_by(boundary, self.table.order, f"{self.last_path} -> {path}")
            failure = None if outcome.passed else outcome
        if order.height:
            self.last_path, self.last_row = path, order.tail(1)
        return failure

    def unique(self) -> CheckOutcome | None:
        """The uniqueness failure over all the files, if there are several and one repeats."""
        if len(self.keys) < 2:
            return None
        outcome = checks.unique(
            pl.concat(self.keys), self.table.unique_keys, f"{self.folder} ({len(self.keys)} files)"
        )
        return None if outcome.passed else outcome


def _check_rows(
    table: DerivedTable,
    hour: dt.datetime,
    folder: str,
    files: Iterable[tuple[str, pl.DataFrame]],
) -> CheckedRows:
    """The row checks of one value-hour's files (path and rows as the checks see them, in name
    order): each file's own, order and uniqueness across them, the reconciliations' totals."""
    checked = CheckedRows()
    derived_exprs = {name: r.derived for name, r in table.reconciliations.items()}
    across = _AcrossFiles(table, folder)
    for path, frame in files:
        add_totals(checked.totals, frame, derived_exprs)
        for name, check in table.row_checks().items():
            if name not in checked.failures:
                outcome = check(frame, path, hour)
                if not outcome.passed:
                    checked.failures[name] = outcome
        boundary = across.add(frame, path)
        if boundary is not None:
            checked.failures.setdefault(table.sorted_check, boundary)
    repeated = across.unique()
    if repeated is not None:
        checked.failures.setdefault(table.unique_check, repeated)
    return checked


def _target_folder(table: DerivedTable, value_folder: str, hour: dt.datetime) -> str:
    return f"{table.target}/{value_folder}/{hour_folder(hour)}"


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
    checked = _check_rows(table, hour, _target_folder(table, value_folder, hour), rows)
    checked.digests = {file.path: file.sha256 for file in files}
    return checked


def _stored_rows(
    store: LakeStore, table: DerivedTable, value_folder: str, paths: Sequence[str]
) -> Iterator[tuple[str, pl.DataFrame]]:
    """Each file's rows as stored, with the partition column from the folder, one at a time
    (a `rejected` error naming a file that is not valid Parquet)."""
    for path in paths:
        stored = read_parquet_file(io.BytesIO(store.read_bytes(path)), path, None)
        yield path, with_partition_value(stored, table.partition_column, value_folder)


def _stored_footer(body: bytes, path: str) -> tuple[pq.FileMetaData, pl.Schema]:
    """The footer of a stored file: its metadata and its schema as Polars reads the file; a
    `rejected` error naming the file when it is not valid Parquet, as for its rows
    (`read_parquet_file`): the hour fails, not the step."""
    try:
        metadata = pq.ParquetFile(pa.BufferReader(body)).metadata
        return metadata, pl.read_parquet_schema(io.BytesIO(body))
    except (pa.ArrowException, pl.exceptions.PolarsError) as error:
        message = f"cannot read {path}: not a readable Parquet file: {error}"
        raise StorageError(message, "rejected") from error


def _footer_checks(
    table: DerivedTable, schema: pl.Schema, metadata: pq.FileMetaData, path: str
) -> dict[str, CheckOutcome]:
    """The checks a file's footer settles: its declared schema (with the partition column from
    the folder, as `with_partition_value` adds it) and its codec."""
    with_value = pl.Schema({**schema, table.partition_column: pl.String()})
    return {
        checks.MATCHES_DECLARED_SCHEMA: checks.matches_schema(with_value, table.schema, path),
        checks.ZSTD_COMPRESSED: checks.zstd_compressed(metadata, path),
    }


def check_hour(
    store: LakeStore, table: DerivedTable, rebuilt: HourResult
) -> dict[str, CheckOutcome]:
    """Every check of the rebuilt hour, on the files as they are in storage (of the value
    folders the rebuild listed: `rebuilt.values`, or every one).

    Each file is read once: its footer settles its schema and codec. A value-hour whose files
    are exactly the ones this rebuild wrote (same names, same SHA-256 of their bytes) holds
    exactly the rows the rebuild checked before writing them (`rebuilt.checked`), so their
    row checks stand. Any other file (written by another run, changed, added) makes its
    value-hour's files read again and their rows checked here: a check still fails on a bad
    file whoever wrote it. A file that is not valid Parquet is a `rejected` `StorageError`
    naming it: the hour fails, as when an input cannot be read.

    Reconciliations compare the derived totals with the totals of the rows the rebuild read
    (`rebuilt.source_totals`): the inputs may have changed since (the ingest appends to Bronze,
    a Silver rebuild rewrites Silver under the same names), and are not read again.
    """
    hour = rebuilt.hour
    failures: dict[str, CheckOutcome] = {}
    rows = files = 0
    derived_totals: dict[str, int | float] = {}
    for value_folder, paths in hour_files(store, table.target, hour, rebuilt.values).items():
        digests = {}
        for path in paths:
            body = store.read_bytes(path)
            metadata, schema = _stored_footer(body, path)
            digests[path] = sha256(body)
            rows, files = rows + metadata.num_rows, files + 1
            for name, outcome in _footer_checks(table, schema, metadata, path).items():
                if not outcome.passed:
                    failures.setdefault(name, outcome)
        checked = rebuilt.checked.get(value_folder)
        if checked is None or checked.digests != digests:
            folder = _target_folder(table, value_folder, hour)
            stored = _stored_rows(store, table, value_folder, paths)
            checked = _check_rows(table, hour, folder, stored)
        for name, outcome in checked.failures.items():
            failures.setdefault(name, outcome)
        _merge(derived_totals, checked.totals)
    for name, outcome in _reconcile(table, rebuilt, derived_totals).items():
        if not outcome.passed:
            failures[name] = outcome
    passed = CheckOutcome.ok(f"{files} files, {rows} rows in {hour:%Y-%m-%d %H}:00")
    return {name: failures.get(name, passed) for name in table.check_names}
