"""Keeping commits flat as history grows: a calendar-grouped rewrite of a table's manifests.

Every hour's commit leaves one live manifest (the one listing the files it added), and a
commit's cost grows with the live manifests of the table: pyiceberg reads the manifest list,
evaluates every manifest against the hour's partition and writes them all into the new
manifest list, ≈ 0.47 ms per manifest. A year of hourly partitions is 8,760 manifests: a new
hour then costs 1.16 s and a replace 1.60 s, against 0.045 s on a fresh table (15 manifests;
`NOTES-iceberg.md`, measured with 24 retained snapshots). pyiceberg 0.12 has no manifest
rewrite, and its public knobs do not help: `commit.manifest-merge.enabled` has no effect on
the overwrite commits of `hours.replace_hour`, and merging by size ends in one big manifest
(a replace 0.89–2.2 s: every replace rewrites it) or ~46 byte-sized ones (1.5–2.3× fresh).

`compact_manifests` merges by calendar instead: **one manifest per closed month** (months
before today's), **one per closed day of the current month** (days before today), today's
manifests untouched. After a year that is ~57 live manifests and a replace of a recent hour
costs 0.052 s (one manifest per closed day would leave ~380: 0.090 s). A replace of an hour in
a closed month rewrites that month's manifest without the hour's files (0.26–0.35 s), so a
merged manifest is capped at `MAX_ENTRIES` entries: a bigger group is split (by date, so each
part covers a few days and a replace reads and rewrites only that part). Manifests that hold
no live entry (each re-run of an hour leaves one, listing only the deleted files) are dropped.
`benchmarks/iceberg.py` (4 files an hour, daily rewrite, 24 snapshots kept): after 8,760
hourly commits 50 live manifests; a replace of an hour of today costs 1.1x its cost on a
fresh table (8,760 manifests: 38x), of a closed day 1.5x, of a closed month 0.67 s (9.7x;
with 500-entry parts: 96 manifests, today 1.4x, a closed month 0.27 s). Run it from
maintenance, hourly at best: it commits nothing when every closed period is merged already,
and dropping the deleted-files manifests keeps repeated replaces of an hour from growing
dearer.

The rewrite is one `replace` snapshot that changes no data: entries are copied as EXISTING
with their paths, partitions, statistics, snapshot ids and sequence numbers, so readers, time
travel and the conflict checks of later commits see the same files. It needs a subclass of
pyiceberg's private `_SnapshotProducer`, with three traps:
- the inherited concurrency validation fails whenever an hour lands concurrently (it sees
  added files in the window); a rewrite changing no data has nothing to validate,
- `update_snapshot_summaries` refuses `replace`: the totals are carried over here,
- a commit that lost the race for the catalog row is retried by pyiceberg on the new head
  (`_existing_manifests` runs again); the manifests are planned and written anew from that
  head on every attempt, never reused (pyiceberg deletes an earlier attempt's manifests, and
  they would miss the concurrent commit's files). So a concurrent replace of an hour is never
  lost: the rewrite either lands first (the replace retries on top of it; its checks ignore
  `replace` snapshots and EXISTING entries) or is re-planned on top of the replace.
"""

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyiceberg.conversions import from_bytes
from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestContent, ManifestEntry, ManifestFile, write_manifest
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import EMPTY_DICT
from pyiceberg.types import DateType

from lake_platform.tables.data_files import EPOCH
from lake_platform.tables.schema import DATE_COLUMN

MAX_ENTRIES = 2_000
"""Entries of a merged manifest at most (see the module docstring)."""
READ_THREADS = 8
"""Manifests read concurrently while merging."""
CLOSED_BEFORE_PROPERTY = "lake.manifests-closed-before"
"""Summary property of a rewrite: the `today` it merged the periods before."""

Period = tuple[dt.date, dt.date]
"""A closed period: first and last day of a closed month, or a closed day twice."""


@dataclass(frozen=True)
class ManifestCompaction:
    """What `compact_manifests` did: the manifests of the table's current snapshot before and
    after, and the snapshot it committed (None: nothing to merge, nothing committed)."""

    manifests_before: int
    manifests_after: int
    snapshot_id: int | None


def compact_manifests(
    table: Table,
    today: dt.date,
    max_entries: int = MAX_ENTRIES,
    properties: Mapping[str, str] = EMPTY_DICT,
) -> ManifestCompaction:
    """Merge the manifests of each closed month and of each closed day of `today`'s month
    (`today`: the UTC date) in one `replace` snapshot with `properties` in its summary;
    nothing is committed when every closed period is merged already.

    `table` is refreshed first and holds the new snapshot afterwards.
    """
    if isinstance(today, dt.datetime) or not isinstance(today, dt.date):
        raise TypeError(f"today is a date (UTC), got {today!r}")
    if max_entries < 1:
        raise ValueError(f"max_entries is at least 1, got {max_entries}")
    table.refresh()
    snapshot = table.current_snapshot()
    if snapshot is None:
        return ManifestCompaction(0, 0, None)
    manifests = snapshot.manifests(table.io)
    if not plan_rewrite(manifests, table.spec(), today, max_entries).changes:
        return ManifestCompaction(len(manifests), len(manifests), None)
    transaction = table.transaction()
    rewrite = _CalendarRewrite(transaction, today, max_entries, properties)
    rewrite.commit()
    transaction.commit_transaction()
    return ManifestCompaction(
        rewrite.manifests_before, rewrite.manifests_after, rewrite.snapshot_id
    )


def period(day: dt.date, today: dt.date) -> Period | None:
    """The closed period of `day`: its month when before `today`'s month, else the day
    itself when before `today`; None for today and later (left as they are)."""
    if day >= today:
        return None
    if (day.year, day.month) < (today.year, today.month):
        following = dt.date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return day.replace(day=1), following - dt.timedelta(days=1)
    return day, day


@dataclass
class RewritePlan:
    """The live data manifests of a snapshot, sorted by what the rewrite does with them."""

    kept: list[ManifestFile]
    """Left as they are: today's and later, already merged periods, other content or specs."""
    merged: dict[Period, list[ManifestFile]]
    """Manifests inside one closed period, merged with the others of that period."""
    spanning: list[ManifestFile]
    """Manifests over several periods: their entries go to the period of their own date."""
    dropped: list[ManifestFile]
    """Manifests without a live entry (only deleted files)."""

    @property
    def rewritten(self) -> list[ManifestFile]:
        return [manifest for group in self.merged.values() for manifest in group] + self.spanning

    @property
    def changes(self) -> bool:
        return bool(self.merged or self.spanning or self.dropped)


def plan_rewrite(
    manifests: Iterable[ManifestFile], spec: PartitionSpec, today: dt.date, max_entries: int
) -> RewritePlan:
    """What to merge, from the manifest list alone (partition summaries and counts).

    A period already held by as few manifests as its entries need (`max_entries` each) with no
    deleted entry is final: kept, unless a spanning manifest brings it more entries.
    """
    position = date_position(spec)
    plan = RewritePlan([], {}, [], [])
    spans: list[tuple[dt.date, dt.date]] = []
    for manifest in manifests:
        bounds = _date_bounds(manifest, position)
        first = None if bounds is None else period(bounds[0], today)
        if manifest.content != ManifestContent.DATA or manifest.partition_spec_id != spec.spec_id:
            plan.kept.append(manifest)
        elif _live_files(manifest) == 0:
            plan.dropped.append(manifest)
        elif bounds is None or first is None:
            plan.kept.append(manifest)
        elif first == period(bounds[1], today):
            plan.merged.setdefault(first, []).append(manifest)
        else:
            plan.spanning.append(manifest)
            spans.append(bounds)
    for key in list(plan.merged):
        reached = any(low <= key[1] and key[0] <= high for low, high in spans)
        if not reached and _final(plan.merged[key], max_entries):
            plan.kept.extend(plan.merged.pop(key))
    return plan


def date_position(spec: PartitionSpec) -> int:
    """The position of the `date` field in the table's partition records."""
    for position, partition_field in enumerate(spec.fields):
        if partition_field.name == DATE_COLUMN:
            return position
    raise ValueError(f"the partition spec has no {DATE_COLUMN!r} field: {spec}")


def _live_files(manifest: ManifestFile) -> int | None:
    """Added and existing files of a manifest; None when its list does not say."""
    if manifest.added_files_count is None or manifest.existing_files_count is None:
        return None
    return manifest.added_files_count + manifest.existing_files_count


def _date_bounds(manifest: ManifestFile, position: int) -> tuple[dt.date, dt.date] | None:
    """First and last `date` of a manifest's entries; None when unknown or some are null."""
    summaries = manifest.partitions or []
    summary = summaries[position] if position < len(summaries) else None
    if summary is None or summary.contains_null:
        return None
    low, high = summary.lower_bound, summary.upper_bound
    if low is None or high is None:
        return None
    return _day(low), _day(high)


def _day(bound: bytes) -> dt.date:
    """A `date` bound of a partition summary (days since the epoch) as a date."""
    return EPOCH + dt.timedelta(days=int(from_bytes(DateType(), bound)))


def _final(group: Sequence[ManifestFile], max_entries: int) -> bool:
    """Whether a period's manifests are merged already (see `plan_rewrite`)."""
    counts = [_live_files(manifest) for manifest in group]
    if any(count is None for count in counts) or any(m.deleted_files_count for m in group):
        return False
    return len(group) == math.ceil(sum(count or 0 for count in counts) / max_entries)


class _CalendarRewrite(_SnapshotProducer["_CalendarRewrite"]):
    """The `replace` snapshot of `compact_manifests` (see the module docstring)."""

    def __init__(
        self,
        transaction: Transaction,
        today: dt.date,
        max_entries: int,
        properties: Mapping[str, str],
    ) -> None:
        super().__init__(
            Operation.REPLACE,
            transaction,
            transaction._table.io,
            snapshot_properties={**properties, CLOSED_BEFORE_PROPERTY: today.isoformat()},
        )
        self._today = today
        self._max_entries = max_entries
        self._summary_properties: dict[str, str] = {}
        self.manifests_before = 0
        self.manifests_after = 0

    def _validate_concurrency(self) -> None:
        """Nothing to validate: the rewrite changes no data, and each attempt plans from the
        head it commits on (the inherited check fails on any hour landed meanwhile)."""

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _existing_manifests(self) -> list[ManifestFile]:
        """The new snapshot's manifests: planned on the current parent and written anew on
        every attempt (never reused across retries)."""
        metadata = self._transaction.table_metadata  # a deep copy per access: read it once
        parent = (
            None
            if self._parent_snapshot_id is None
            else metadata.snapshot_by_id(self._parent_snapshot_id)
        )
        manifests = [] if parent is None else parent.manifests(self._io)
        spec = metadata.spec()
        plan = plan_rewrite(manifests, spec, self._today, self._max_entries)
        entries = _live_entries(plan.rewritten, self._io)
        written = [
            self._write(metadata, part)
            for part in _parts(entries, date_position(spec), self._today, self._max_entries)
        ]
        self.manifests_before = len(manifests)
        self.manifests_after = len(written) + len(plan.kept)
        summary = None if parent is None else parent.summary
        totals = {} if summary is None else summary.additional_properties
        self._summary_properties = {
            **{name: value for name, value in totals.items() if name.startswith("total-")},
            "manifests-created": str(len(written)),
            "manifests-kept": str(len(plan.kept)),
            "manifests-replaced": str(len(plan.rewritten) + len(plan.dropped)),
            "entries-processed": str(len(entries)),
        }
        return written + plan.kept

    def _write(self, metadata: TableMetadata, entries: Sequence[ManifestEntry]) -> ManifestFile:
        """A manifest of `entries` as EXISTING: snapshot ids, sequence numbers, files kept."""
        with write_manifest(
            format_version=metadata.format_version,
            spec=metadata.spec(),
            schema=metadata.schema(),
            output_file=self.new_manifest_output(),  # recorded: cleaned up if not committed
            snapshot_id=self._snapshot_id,
            avro_compression=self._compression,
        ) as writer:
            for entry in entries:
                writer.existing(entry)
        return writer.to_manifest_file()

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        """The parent's totals (no data changed), the rewrite's counts and properties."""
        return Summary(
            operation=Operation.REPLACE, **self._summary_properties, **snapshot_properties
        )


def _live_entries(manifests: Sequence[ManifestFile], io: FileIO) -> list[ManifestEntry]:
    """The live entries of `manifests`, read concurrently."""
    if not manifests:
        return []
    with ThreadPoolExecutor(min(READ_THREADS, len(manifests))) as pool:
        read = pool.map(lambda manifest: manifest.fetch_manifest_entry(io), manifests)
        return [entry for entries in read for entry in entries]


def _parts(
    entries: Iterable[ManifestEntry], position: int, today: dt.date, max_entries: int
) -> Iterator[list[ManifestEntry]]:
    """The entries by closed period of their own date (today's and later, or without a
    date, together), each period in date order, cut every `max_entries`."""
    by_period: dict[Period | None, list[tuple[int, str, ManifestEntry]]] = defaultdict(list)
    for entry in entries:
        days = entry.data_file.partition[position]
        key = None if days is None else period(EPOCH + dt.timedelta(days=days), today)
        by_period[key].append((-1 if days is None else days, entry.data_file.file_path, entry))
    for key in sorted(by_period, key=lambda key: (key is None, key)):
        ordered = [entry for _, _, entry in sorted(by_period[key], key=lambda item: item[:2])]
        for start in range(0, len(ordered), max_entries):
            yield ordered[start : start + max_entries]
