"""Which data files of a Silver/Gold snapshot a read needs: cheap scan planning.

The lake's tables have one fixed shape (identity partitions on the value column, `date` and
`hour`; data files only, never delete files), so planning is three steps on the snapshot's
manifests: skip a manifest whose `date` bounds miss the wanted time range (its partition
summary, in the manifest list), read the entries of the others, keep a file whose partition
is wanted and whose `ts_event_ns` bounds (footer statistics) meet the range.

pyiceberg's own `plan_files` does the same generically but costs ~1 ms of schema conversion
and reader construction per manifest and a residual expression per file: 80–120 ms for a
3-day table of 72 hourly manifests, as much as reading a day of it. Here the manifest's Avro
reader is built once per schema and reused, and a manifest's entries (immutable: manifests
are written once under unique names) are kept in a bounded process-wide cache, so a table
read again, or a new snapshot sharing most manifests with the last one, reads only the new
manifests.
"""

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyiceberg.avro.decoder import new_decoder
from pyiceberg.avro.file import AvroFile
from pyiceberg.avro.reader import Reader
from pyiceberg.avro.resolver import resolve_reader
from pyiceberg.manifest import (
    DEFAULT_READ_VERSION,
    MANIFEST_ENTRY_SCHEMAS,
    DataFile,
    DataFileContent,
    FileFormat,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
)
from pyiceberg.table import Table

from lake_platform.tables.data_files import EPOCH
from lake_platform.tables.hours import TIME_COLUMN
from lake_platform.tables.schema import DATE_COLUMN
from lake_platform.timestamps import DAY_NS, HOUR_NS

CACHED_MANIFESTS = 4096
"""Manifests whose entries stay cached (a compacted year is ~60; an entry is ~100 bytes)."""
READ_THREADS = 8
"""Manifests of a remote table read at once (their round trips overlap; decoding holds the
GIL, so a local table's are read one after the other: threads only cost there)."""
_READ_TYPES = {-1: ManifestEntry, 2: DataFile}
_READ_ENUMS = {0: ManifestEntryStatus, 101: FileFormat, 134: DataFileContent}


@dataclass(frozen=True)
class PlannedFile:
    """A live data file: its location (as the table's FileIO and DuckDB/Polars read it), its
    partition (value, date, hour), its row count and `ts_event_ns` bounds when known."""

    path: str
    value: str
    day: dt.date
    hour: int
    rows: int
    ts_low: int | None
    ts_high: int | None

    @property
    def hour_start_ns(self) -> int:
        return (self.day - EPOCH).days * DAY_NS + self.hour * HOUR_NS


def planned_files(
    table: Table,
    snapshot_id: int | None,
    *,
    values: Collection[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> list[PlannedFile]:
    """The live files of the snapshot (none without one) that may hold rows of partition
    values `values` (all when None) with `ts_event_ns` in [start_ns, end_ns), by path."""
    snapshot = None if snapshot_id is None else table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        return []
    manifests = [
        manifest
        for manifest in snapshot.manifests(table.io)
        if _may_overlap(manifest, _date_position(table), start_ns, end_ns)
    ]
    wanted = None if values is None else frozenset(values)
    ts_field = table.schema().find_field(TIME_COLUMN).field_id
    found = [
        file
        for entries in _read_all(table, manifests, ts_field)
        for file in entries
        if (wanted is None or file.value in wanted) and _meets(file, start_ns, end_ns)
    ]
    return sorted(found, key=lambda file: file.path)


def clear_cache() -> None:
    """Forget every cached manifest and reader (a process that wants the memory back, or a
    benchmark timing a cold start)."""
    _CACHE.clear()
    with _READERS_LOCK:
        _READERS.clear()


def _date_position(table: Table) -> int:
    names = [field.name for field in table.spec().fields]
    return names.index(DATE_COLUMN)


def _may_overlap(
    manifest: ManifestFile, position: int, start_ns: int | None, end_ns: int | None
) -> bool:
    """Whether the manifest's `date` bounds (days since the epoch, 4 bytes little-endian)
    meet [start, end) (True when unknown)."""
    if manifest.content != ManifestContent.DATA:
        raise ValueError(f"{manifest.manifest_path}: delete files are not supported here")
    summaries = manifest.partitions or []
    if position >= len(summaries) or (start_ns is None and end_ns is None):
        return True
    summary = summaries[position]
    if summary.lower_bound is None or summary.upper_bound is None:
        return True
    first = int.from_bytes(summary.lower_bound, "little", signed=True)
    last = int.from_bytes(summary.upper_bound, "little", signed=True)
    return (end_ns is None or first * DAY_NS < end_ns) and (
        start_ns is None or (last + 1) * DAY_NS > start_ns
    )


def _meets(file: PlannedFile, start_ns: int | None, end_ns: int | None) -> bool:
    """Whether the file's hour and `ts_event_ns` bounds meet [start, end)."""
    low = max(file.hour_start_ns, file.ts_low if file.ts_low is not None else 0)
    high = file.hour_start_ns + HOUR_NS - 1
    if file.ts_high is not None:
        high = min(high, file.ts_high)
    return (start_ns is None or high >= start_ns) and (end_ns is None or low < end_ns)


class _EntryCache:
    """Entries of manifests by manifest path, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, tuple[PlannedFile, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> tuple[PlannedFile, ...] | None:
        with self._lock:
            found = self._entries.get(path)
            if found is not None:
                self._entries.move_to_end(path)
            return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def put(self, path: str, files: tuple[PlannedFile, ...]) -> None:
        with self._lock:
            self._entries[path] = files
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


_CACHE = _EntryCache(CACHED_MANIFESTS)
_READERS: dict[str, Reader] = {}
"""Resolved Avro readers by the manifest's writer schema (one per table schema and spec)."""
_READERS_LOCK = threading.Lock()


def _read_all(
    table: Table, manifests: Sequence[ManifestFile], ts_field: int
) -> Iterable[tuple[PlannedFile, ...]]:
    missing = [manifest for manifest in manifests if _CACHE.get(manifest.manifest_path) is None]
    if len(missing) > 1 and not _is_local(missing[0].manifest_path):
        with ThreadPoolExecutor(min(READ_THREADS, len(missing))) as pool:
            list(pool.map(lambda manifest: _read(table, manifest, ts_field), missing))
    elif missing:
        _read(table, missing[0], ts_field)
    for manifest in manifests:
        cached = _CACHE.get(manifest.manifest_path)
        yield cached if cached is not None else _read(table, manifest, ts_field)


def _is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _read(table: Table, manifest: ManifestFile, ts_field: int) -> tuple[PlannedFile, ...]:
    """The live data files of one manifest (cached)."""
    input_file = table.io.new_input(manifest.manifest_path)
    with input_file.open() as stream:
        body = stream.read()
    avro = AvroFile[ManifestEntry](
        input_file, MANIFEST_ENTRY_SCHEMAS[DEFAULT_READ_VERSION], _READ_TYPES, _READ_ENUMS
    )
    avro.decoder = new_decoder(body)
    avro.header = avro._read_header()
    avro.reader = _reader(avro)
    files = tuple(
        _planned(entry.data_file, ts_field)
        for entry in avro
        if entry.status != ManifestEntryStatus.DELETED
    )
    _CACHE.put(manifest.manifest_path, files)
    return files


def _reader(avro: AvroFile[ManifestEntry]) -> Reader:
    """The reader of the file's writer schema, resolved once per schema (pyiceberg resolves
    it again for every file: most of the cost of a small manifest)."""
    key = avro.header.meta["avro.schema"]
    with _READERS_LOCK:
        found = _READERS.get(key)
    if found is None:
        found = resolve_reader(avro.header.get_schema(), avro.read_schema, _READ_TYPES, _READ_ENUMS)
        with _READERS_LOCK:
            _READERS[key] = found
    return found


def _planned(data_file: DataFile, ts_field: int) -> PlannedFile:
    if data_file.content != DataFileContent.DATA:
        raise ValueError(f"{data_file.file_path}: delete files are not supported here")
    value, days, hour = data_file.partition[0], data_file.partition[1], data_file.partition[2]
    return PlannedFile(
        path=data_file.file_path,
        value=value,
        day=EPOCH + dt.timedelta(days=days),
        hour=hour,
        rows=data_file.record_count,
        ts_low=_bound(data_file.lower_bounds, ts_field),
        ts_high=_bound(data_file.upper_bounds, ts_field),
    )


def _bound(bounds: dict[int, bytes] | None, field_id: int) -> int | None:
    """A `long` bound: 8 bytes, little-endian (Iceberg's single-value serialization)."""
    raw = (bounds or {}).get(field_id)
    return None if raw is None else int.from_bytes(raw, "little", signed=True)
