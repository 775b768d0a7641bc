"""Checking one hour of a derived table: each file's rows, order and uniqueness across a
value-hour's files, the footers' schema and codec, and the reconciliations with the input.

`check_rows` is shared with the rebuild, which runs it on the rows it writes (`rebuild.py`);
`check_hour` runs every check on the files as stored, reusing those results for the files
that are exactly the ones written.
"""

import datetime as dt
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.derived.declaration import DerivedTable, with_partition_value
from lake_platform.derived.hour_files import value_hour_folder
from lake_platform.derived.partition_files import sha256
from lake_platform.derived.results import CheckedRows, HourResult
from lake_platform.derived.sources import lookup_frames
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.parquet import read_parquet_file
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables


def merge_totals(totals: dict[str, int | float], more: Mapping[str, int | float]) -> None:
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
        merge_totals(totals, {name: value or 0})
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


def check_rows(
    table: DerivedTable,
    hour: dt.datetime,
    folder: str,
    files: Iterable[tuple[str, pl.DataFrame]],
    lookups: Mapping[str, pl.DataFrame] | None = None,
) -> CheckedRows:
    """The row checks of one value-hour's files (path and rows as the checks see them, in name
    order): each file's own, against the value-hour's `lookups` (the frames it was built
    from), order and uniqueness across them, the reconciliations' totals."""
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
        for name, lookup_check in table.lookup_checks.items():
            if name not in checked.failures:
                outcome = lookup_check(frame, path, lookups or {})
                if not outcome.passed:
                    checked.failures[name] = outcome
        boundary = across.add(frame, path)
        if boundary is not None:
            checked.failures.setdefault(table.sorted_check, boundary)
    repeated = across.unique()
    if repeated is not None:
        checked.failures.setdefault(table.unique_check, repeated)
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
    tables: LakeTables, table: DerivedTable, rebuilt: HourResult
) -> dict[str, CheckOutcome]:
    """Every check of the rebuilt hour, on the files of the hour in the snapshot the rebuild
    left (`rebuilt.snapshot_id`: the files a reader of that snapshot reads, never a folder
    listing, which would also see the files of older versions), as they are in storage.

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
    hour, store = rebuilt.hour, tables.store
    failures: dict[str, CheckOutcome] = {}
    rows = files = 0
    derived_totals: dict[str, int | float] = {}
    committed = (
        {}
        if rebuilt.snapshot_id is None
        else hour_paths(tables.table(table), hour, rebuilt.snapshot_id)
    )
    for value_folder, paths in committed.items():
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
            folder = value_hour_folder(table.target, value_folder, hour)
            stored = _stored_rows(store, table, value_folder, paths)
            lookups = lookup_frames(store, table, value_folder, rebuilt.lookups)
            checked = check_rows(table, hour, folder, stored, lookups)
        for name, outcome in checked.failures.items():
            failures.setdefault(name, outcome)
        merge_totals(derived_totals, checked.totals)
    for name, outcome in _reconcile(table, rebuilt, derived_totals).items():
        if not outcome.passed:
            failures[name] = outcome
    passed = CheckOutcome.ok(f"{files} files, {rows} rows in {hour:%Y-%m-%d %H}:00")
    return {name: failures.get(name, passed) for name in table.check_names}
