"""Bronze materializations from the ledger, for the sensor and the standalone service.

One `AssetMaterialization` per (asset, hour partition) touched by a set of ledger entries,
with rows, files, bytes, quarantined messages and the stream sequence range as metadata.
A sensor tick reads at most `MAX_ENTRIES_PER_TICK` entries, earliest stored first, and its
cursor stops at the first entry it did not read: a backlog is reported over several ticks,
each far inside the sensor timeout, with nothing skipped and nothing reported twice. What is
unread is decided by the store's clock (when it recorded each entry), never by the writers'
clocks: an entry whose writer's clock is behind is reported when it appears.
"""

import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
import msgspec

from lake_platform.defs.keys import bronze_key
from lake_platform.defs.partitions import partition_key_for
from lake_platform.ingest.ledger import (
    LedgerEntry,
    StoredEntry,
    list_stored_entries,
    read_entry_files,
)
from lake_platform.ingest.reports import Reporter
from lake_platform.schemas import BY_TABLE
from lake_platform.storage import LakeStore
from lake_platform.timestamps import DAY_NS, HOUR_NS

LATENESS_NS = 5 * 60 * 10**9
"""How long after the store dated an entry it may still appear in a listing: S3 dates an
object by its upload (a slow one finishes later), a local file by its last write before the
rename; also covers the store's timestamp precision (a second on some S3 servers)."""
WRITER_CLOCK_SPAN_NS = HOUR_NS
"""How far a writer's clock may be off the daemon's for its entries to be found: the commit
hours listed reach this far back and ahead of now (three hour folders a tick)."""
FIRST_LOOKBACK_NS = DAY_NS
"""How far back a sensor without a cursor looks for unreported entries."""
MAX_ENTRIES_PER_TICK = 500
"""Ledger entries one tick reads at most (small GETs, read concurrently on S3)."""

log = logging.getLogger(__name__)


@dataclass
class _Partition:
    rows: int = 0
    files: int = 0
    bytes: int = 0
    quarantined: int = 0
    partition_values: set[str] = field(default_factory=set)
    first_seq: int | None = None
    last_seq: int | None = None
    entries: set[str] = field(default_factory=set)


def _merge_seq(current: int | None, new: int | None, pick: type[min] | type[max]) -> int | None:
    candidates = [seq for seq in (current, new) if seq is not None]
    return pick(candidates) if candidates else None


def materializations(entries: Iterable[LedgerEntry]) -> list[dg.AssetMaterialization]:
    """The materializations that report `entries`, one per (table, hour), in key order.

    Quarantined messages of a table count towards the latest hour that table has in the
    same entry (a bad message has no trustworthy event time).
    """
    partitions: dict[tuple[str, int], _Partition] = {}
    for entry in entries:
        latest_hour: dict[str, int] = {}
        for file in entry.files:
            assert file.table is not None and file.hour_start_ns is not None
            part = partitions.setdefault((file.table, file.hour_start_ns), _Partition())
            part.rows += file.rows
            part.files += 1
            part.bytes += file.bytes
            part.partition_values.add(file.partition_value or "")
            part.first_seq = _merge_seq(part.first_seq, file.first_seq, min)
            part.last_seq = _merge_seq(part.last_seq, file.last_seq, max)
            part.entries.add(entry.entry_id)
            latest_hour[file.table] = max(latest_hour.get(file.table, 0), file.hour_start_ns)
        for bad in entry.quarantine:
            if bad.table in latest_hour:
                partitions[(bad.table, latest_hour[bad.table])].quarantined += bad.rows
    events = []
    for (table, hour_ns), part in sorted(partitions.items()):
        hour = dt.datetime.fromtimestamp(hour_ns / 1e9, tz=dt.UTC)
        events.append(
            dg.AssetMaterialization(
                asset_key=bronze_key(BY_TABLE[table]),
                partition=partition_key_for(hour),
                metadata={
                    "rows": dg.MetadataValue.int(part.rows),
                    "files": dg.MetadataValue.int(part.files),
                    "bytes": dg.MetadataValue.int(part.bytes),
                    "quarantined": dg.MetadataValue.int(part.quarantined),
                    "partition_values": dg.MetadataValue.int(len(part.partition_values)),
                    "stream_seq_first": dg.MetadataValue.int(part.first_seq or 0),
                    "stream_seq_last": dg.MetadataValue.int(part.last_seq or 0),
                    "ledger_entries": dg.MetadataValue.int(len(part.entries)),
                },
            )
        )
    return events


class LedgerCursor(msgspec.Struct):
    """What the sensor has reported, by the store's clock: entries the store recorded before
    `since_ns` are settled; those recorded since are tracked by id in `seen`.

    Ordering by when the store recorded an entry, not by its writer's clock, reports the
    entry of a writer whose clock is behind (it is filed under a past commit time but stored
    now). `seen` holds only the entries stored within `LATENESS_NS` of the newest one listed
    (or since the first a capped tick left), so the cursor stays as small as that window.
    """

    since_ns: int
    seen: list[str] = []

    @classmethod
    def load(cls, raw: str | None, now_ns: int) -> "LedgerCursor":
        if not raw:
            return cls(since_ns=now_ns - FIRST_LOOKBACK_NS)
        return msgspec.json.decode(raw, type=cls)

    def dump(self) -> str:
        return msgspec.json.encode(self).decode()

    def advanced(
        self, listed: list[StoredEntry], read: Iterable[str], first_unread_ns: int | None = None
    ) -> "LedgerCursor":
        """The cursor after reading the ids `read` of `listed` (every entry the tick listed).

        With `first_unread_ns` (the store time of the oldest entry a capped tick left), the
        cursor stays at that entry so the next tick starts there.
        """
        since_ns = self.since_ns
        if listed:
            floor = max(entry.stored_ns for entry in listed) - LATENESS_NS
            if first_unread_ns is not None:
                floor = min(floor, first_unread_ns)
            since_ns = max(since_ns, floor)
        known = {*self.seen, *read}
        return LedgerCursor(
            since_ns=since_ns,
            seen=sorted(
                entry.entry_id
                for entry in listed
                if entry.entry_id in known and entry.stored_ns >= since_ns
            ),
        )


def _warn_of_late_entries(entries: list[LedgerEntry], stored_ns: dict[str, int]) -> None:
    """One warning for the entries stored long after their commit time: their writers'
    clocks are behind the store's (or a backlog was copied in)."""
    late_s = {
        entry.entry_id: (stored_ns[entry.entry_id] - entry.committed_ns) / 1e9 for entry in entries
    }
    late = [entry for entry in entries if late_s[entry.entry_id] > LATENESS_NS / 1e9]
    if late:
        log.warning(
            "%d ledger entries were stored up to %.0fs after their commit time (writers %s): "
            "their clocks are behind the store's; reported all the same",
            len(late),
            max(late_s[entry.entry_id] for entry in late),
            ", ".join(sorted({entry.writer for entry in late})),
        )


def read_unreported(
    store: LakeStore, cursor: LedgerCursor, now_ns: int, limit: int = MAX_ENTRIES_PER_TICK
) -> tuple[list[LedgerEntry], LedgerCursor]:
    """The `limit` earliest stored entries the cursor has not seen, and the cursor after them.

    The commit hours listed reach `WRITER_CLOCK_SPAN_NS` before the cursor (or now, when
    earlier) and after now, so an entry whose writer's clock is that far off is still found.
    """
    first_hour_ns = min(cursor.since_ns, now_ns) - WRITER_CLOCK_SPAN_NS
    listed = list_stored_entries(store, first_hour_ns, now_ns + WRITER_CLOCK_SPAN_NS)
    seen = frozenset(cursor.seen)
    unread = [e for e in listed if e.stored_ns >= cursor.since_ns and e.entry_id not in seen]
    taken = unread[:limit]
    entries = read_entry_files(store, [entry.path for entry in taken])
    _warn_of_late_entries(entries, {entry.entry_id: entry.stored_ns for entry in taken})
    first_unread_ns = unread[limit].stored_ns if len(unread) > limit else None
    read = [entry.entry_id for entry in taken]
    return entries, cursor.advanced(listed, read, first_unread_ns)


def instance_reporter(instance: dg.DagsterInstance) -> Reporter:
    """A reporter that records an entry's materializations in `instance` directly."""

    def report(entry: LedgerEntry) -> bool:
        for event in materializations([entry]):
            instance.report_runless_asset_event(event)
        return True

    return report
