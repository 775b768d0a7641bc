"""Rebuilding and checking one day of a SQL Gold table (`sql_tables.py`), in plain Python.

The day's input is the input table's files of that date in one snapshot (its current one,
pinned when the rebuild starts, as Gold bars read Silver: never a folder listing, which would
also see retained older versions), read with the partition column from their folders (exact
strings) and handed to the table's query in DuckDB as one frame. The result is written per
partition value by the hourly tables' writer (content-addressed names, pinned row groups: the
same input gives the same bytes, and an unchanged day commits nothing) into the day's
`hour=00` folder, and committed as the day's files in one snapshot by `replace_hour` of the
day's first hour (see `sql_tables`): a reader sees the day whole old or whole new. Two runs
of a day at once are handled as for an hour (`derived/rebuild.py`): a commit that finds the
day changed since it was read is refused and the day rebuilt, as is a day whose input was
committed anew meanwhile.

The checks read the committed files as stored; the reconciliations read the input files the
rebuild read again, with Polars, so they do not trust the query they check.
"""

import datetime as dt
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.expressions import EqualTo
from pyiceberg.table import Table

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.derived.declaration import with_partition_value
from lake_platform.derived.hour_files import value_hour_folder
from lake_platform.derived.partition_files import write_partition
from lake_platform.derived.rebuild import commit_rebuilt
from lake_platform.derived.results import HourResult
from lake_platform.derived.sql_tables import SqlGoldTable
from lake_platform.storage import StorageError
from lake_platform.storage.parquet import read_parquet_file
from lake_platform.storage.paths import folder_partition_value
from lake_platform.tables.data_files import lake_path, lake_path_of
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.tables.schema import DATE_COLUMN

PREVIEW_ROWS = 5
MAX_DAY_REBUILDS = 3
"""Rebuilds of a day in a run when another run commits it, or its input, meanwhile."""

DayFiles = dict[str, list[str]]
"""Lake paths of a day's files, by partition-value folder (`symbol=SPY`), each in name order."""


@dataclass(frozen=True)
class DayInputs:
    """The input table's files of the day in snapshot `snapshot_id` (None: no snapshot yet)."""

    files: DayFiles
    snapshot_id: int | None = None


def day_paths(table: Table, day: dt.datetime, snapshot_id: int | None = None) -> DayFiles:
    """The lake paths of the files of `day`'s date in a snapshot of an hourly table (the
    current one by default): one scan for its 24 hours, by partition-value folder."""
    scan = table.scan(
        row_filter=EqualTo(DATE_COLUMN, day.date().isoformat()), snapshot_id=snapshot_id
    )
    prefix = f"{lake_path_of(table)}/"
    found: DayFiles = {}
    for path in sorted(lake_path(table, task.file) for task in scan.plan_files()):
        found.setdefault(path.removeprefix(prefix).split("/", 1)[0], []).append(path)
    return dict(sorted(found.items()))


def day_inputs(tables: LakeTables, table: SqlGoldTable, day: dt.datetime) -> DayInputs:
    """The day's input files as of the input table's current snapshot (pinned)."""
    source = tables.existing(table.source)
    snapshot = None if source is None else source.current_snapshot()
    if source is None or snapshot is None:
        return DayInputs({})
    return DayInputs(day_paths(source, day, snapshot.snapshot_id), snapshot.snapshot_id)


def _inputs_changed(
    tables: LakeTables, table: SqlGoldTable, day: dt.datetime, inputs: DayInputs
) -> bool:
    """Whether the input's day holds other files now than `inputs`: an hour of it was
    committed anew while the day was rebuilt."""
    source = tables.existing(table.source)
    snapshot = None if source is None else source.current_snapshot()
    if source is None or snapshot is None or snapshot.snapshot_id == inputs.snapshot_id:
        return False
    return day_paths(source, day) != inputs.files


def rebuild_day(
    tables: LakeTables,
    table: SqlGoldTable,
    day: dt.datetime,
    connection: duckdb.DuckDBPyConnection | None = None,
    run_id: str = "",
) -> HourResult:
    """Replace the day of `table` with its query's result over the day's input, in one
    Iceberg commit whose snapshot records the day's start (`lake.hour`), `run_id` and the
    inputs' digest; the query runs in `connection` (an in-memory DuckDB of its own when
    None). Unchanged output commits nothing. The result's `hour` is the day's start."""
    if day.utcoffset() != dt.timedelta(0) or day != day.replace(hour=0, minute=0, second=0):
        raise ValueError(f"a day is a UTC midnight, got {day!r}")

    def write() -> tuple[HourResult, bool]:
        inputs = day_inputs(tables, table, day)
        result = _write_day(tables, table, day, inputs, connection)
        return result, _inputs_changed(tables, table, day, inputs)

    return commit_rebuilt(tables.table(table), day, run_id, write, MAX_DAY_REBUILDS)


def _write_day(
    tables: LakeTables,
    table: SqlGoldTable,
    day: dt.datetime,
    inputs: DayInputs,
    connection: duckdb.DuckDBPyConnection | None,
) -> HourResult:
    """Run the query over the day's input and write its rows per partition value (nothing
    committed). A value the input does not have is refused: the table is partitioned like
    its input, and the value's folder is the input's (escaped, cut to budget by the ingest)."""
    result = HourResult(day, dict(inputs.files))
    if not inputs.files:
        return result
    column = table.partition_column
    frames = [
        with_partition_value(tables.store.read_parquet(files, table.source_columns), column, folder)
        for folder, files in inputs.files.items()
    ]
    rows = pl.concat(frames)
    output = table.query(rows, connection).sort(table.order)
    folders = {folder_partition_value(folder): folder for folder in inputs.files}
    parts = output.partition_by(column, as_dict=True, maintain_order=True)
    unknown = sorted(str(value) for (value,) in parts if value not in folders)
    if unknown:
        raise ValueError(f"{table.target}: the query returned {column} {unknown}, not in its input")
    for (value,), part in sorted(parts.items(), key=lambda item: folders[item[0][0]]):
        folder = value_hour_folder(table.target, folders[value], day)
        result.files.extend(write_partition(tables.store, folder, part.drop(column)))
    result.rows_read, result.rows_written = rows.height, output.height
    result.preview = output.head(PREVIEW_ROWS)
    return result


def _evaluated(where: str, check: Callable[[], CheckOutcome]) -> CheckOutcome:
    """The outcome of `check`; a failure when it cannot be evaluated (a column missing or of
    another type: the file's schema is wrong, which its own check reports too)."""
    try:
        return check()
    except pl.exceptions.PolarsError as error:
        return CheckOutcome(False, f"{where}: cannot be checked: {error}")


def _stored_file(
    table: SqlGoldTable, body: bytes, path: str, value_folder: str
) -> tuple[pq.FileMetaData, pl.Schema, pl.DataFrame]:
    """A stored file's footer, its schema as Polars reads it and its rows (the partition
    column from the folder); a `rejected` error naming it when it is not valid Parquet."""
    try:
        metadata = pq.ParquetFile(pa.BufferReader(body)).metadata
        schema = pl.read_parquet_schema(io.BytesIO(body))
    except (pa.ArrowException, pl.exceptions.PolarsError) as error:
        message = f"cannot read {path}: not a readable Parquet file: {error}"
        raise StorageError(message, "rejected") from error
    rows = read_parquet_file(io.BytesIO(body), path, None)
    return metadata, schema, with_partition_value(rows, table.partition_column, value_folder)


def check_day(
    tables: LakeTables, table: SqlGoldTable, rebuilt: HourResult
) -> dict[str, CheckOutcome]:
    """Every check of the rebuilt day on the day's files in the snapshot the rebuild left
    (`rebuilt.snapshot_id`), as stored: each file's footer (schema, codec) and rows (order,
    uniqueness, day bounds), each value's files together (order and uniqueness across them),
    and the reconciliations per value against the input files the rebuild read."""
    day, store = rebuilt.hour, tables.store
    committed = (
        {}
        if rebuilt.snapshot_id is None
        else hour_paths(tables.table(table), day, rebuilt.snapshot_id)
    )
    failures: dict[str, CheckOutcome] = {}
    derived: dict[str, dict[str, object]] = {name: {} for name in table.reconciliations}
    rows = 0
    for value_folder, paths in committed.items():
        frames = []
        for path in paths:
            metadata, schema, frame = _stored_file(
                table, store.read_bytes(path), path, value_folder
            )
            rows += metadata.num_rows
            frames.append(frame)
            with_value = pl.Schema({**schema, table.partition_column: pl.String()})
            found = {
                checks.MATCHES_DECLARED_SCHEMA: checks.matches_schema(
                    with_value, table.schema, path
                ),
                checks.ZSTD_COMPRESSED: checks.zstd_compressed(metadata, path),
                **_row_outcomes(table, frame, path, day),
            }
            for name, outcome in found.items():
                if not outcome.passed:
                    failures.setdefault(name, outcome)
        folder = value_hour_folder(table.target, value_folder, day)
        if len(frames) > 1:
            try:
                together = pl.concat(frames)
            except pl.exceptions.PolarsError:
                together = None  # files of different schemas: their schema check fails
            if together is not None:
                across = _row_outcomes(table, together, f"{folder} ({len(frames)} files)", day)
                for name, outcome in across.items():
                    if not outcome.passed:
                        failures.setdefault(name, outcome)
        for name, reconciliation in table.reconciliations.items():
            derived[name][value_folder] = _total(frames, reconciliation.derived, folder)
    passed = CheckOutcome.ok(
        f"{sum(map(len, committed.values()))} files, {rows} rows of {day:%Y-%m-%d}"
    )
    outcomes = {name: passed for name in table.check_names}
    return outcomes | _reconcile(tables, table, rebuilt, derived) | failures


def _row_outcomes(
    table: SqlGoldTable, frame: pl.DataFrame, where: str, day: dt.datetime
) -> dict[str, CheckOutcome]:
    return {
        name: _evaluated(where, lambda check=check: check(frame, where, day))
        for name, check in table.row_checks().items()
    }


def _total(frames: list[pl.DataFrame], expr: pl.Expr, where: str) -> object:
    """The aggregate `expr` over each frame, summed (a string naming the problem when a frame
    cannot be aggregated: it then matches no input total)."""
    total: int | float = 0
    for frame in frames:
        try:
            total += frame.select(expr).item() or 0
        except pl.exceptions.PolarsError as error:
            return f"not computable in {where}: {error}"
    return total


def _reconcile(
    tables: LakeTables,
    table: SqlGoldTable,
    rebuilt: HourResult,
    derived: Mapping[str, Mapping[str, object]],
) -> dict[str, CheckOutcome]:
    """Each reconciliation's outcome: per value, the derived total against the total of the
    input files the rebuild read (read again here, only the columns the totals use)."""
    if not table.reconciliations:
        return {}
    exprs = {name: r.source for name, r in table.reconciliations.items()}
    columns = sorted({c for expr in exprs.values() for c in expr.meta.root_names()})
    source: dict[str, dict[str, object]] = {name: {} for name in exprs}
    for value_folder, files in rebuilt.inputs.items():
        read = tables.store.read_parquet(files, columns)
        for name, expr in exprs.items():
            source[name][value_folder] = _total([read], expr, value_folder)
    day = f"{table.target} {rebuilt.hour:%Y-%m-%d}"
    read = f"{rebuilt.input_files} input files of {table.source}"
    outcomes = {}
    for name, reconciliation in table.reconciliations.items():
        values = sorted(set(source[name]) | set(derived[name]))
        outcomes[name] = CheckOutcome.ok(
            f"{day}: {reconciliation.what} equal for {len(values)} values ({read})"
        )
        for value in values:
            mine, theirs = derived[name].get(value, 0), source[name].get(value, 0)
            if mine != theirs:
                outcomes[name] = CheckOutcome(
                    False,
                    f"{day} {value}: {reconciliation.what} is {mine} but the {read} give {theirs}",
                )
                break
    return outcomes
