"""Bronze materializations from the ledger, for the sensor and the standalone service.

One `AssetMaterialization` per (asset, hour partition) touched by a set of ledger entries,
with rows, files, bytes, quarantined messages and the stream sequence range as metadata.
A sensor tick reads at most `MAX_ENTRIES_PER_TICK` entries, oldest first, and its cursor
stops at the first entry it did not read: a backlog is reported over several ticks, each far
inside the sensor timeout, with nothing skipped and nothing reported twice.
"""

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
import msgspec

from lake_platform.defs.keys import bronze_key
from lake_platform.defs.partitions import partition_key_for
from lake_platform.ingest.commit import Reporter
from lake_platform.ingest.ledger import (
    LedgerEntry,
    committed_ns_of,
    list_entries,
    read_entry_files,
)
from lake_platform.schemas import BY_TABLE
from lake_platform.storage import LakeStore

LATENESS_NS = 5 * 60 * 10**9
"""How long after its commit time a ledger entry may still appear (slow writers, clocks)."""
FIRST_LOOKBACK_NS = 24 * 3_600 * 10**9
"""How far back a sensor without a cursor looks for unreported entries."""
MAX_ENTRIES_PER_TICK = 500
"""Ledger entries one tick reads at most (small GETs, read concurrently on S3)."""


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
    """What the sensor has reported: entries committed since `since_ns` are tracked by id."""

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
        self, entries: Iterable[LedgerEntry], now_ns: int, first_unread_ns: int | None = None
    ) -> "LedgerCursor":
        """The cursor after `entries`; ids older than the lateness window are forgotten.

        With `first_unread_ns` (the commit time of the oldest entry a capped tick left), the
        cursor stays at that entry so the next tick starts there.
        """
        floor = now_ns - LATENESS_NS
        if first_unread_ns is not None:
            floor = min(floor, first_unread_ns)
        since_ns = max(self.since_ns, floor)
        seen = {*self.seen, *(entry.entry_id for entry in entries)}
        return LedgerCursor(
            since_ns=since_ns,
            seen=sorted(entry_id for entry_id in seen if committed_ns_of(entry_id) >= since_ns),
        )


def read_unreported(
    store: LakeStore, cursor: LedgerCursor, now_ns: int, limit: int = MAX_ENTRIES_PER_TICK
) -> tuple[list[LedgerEntry], LedgerCursor]:
    """The oldest `limit` entries the cursor has not seen, and the cursor after them."""
    unread = list_entries(store, cursor.since_ns, now_ns, frozenset(cursor.seen))
    entries = read_entry_files(store, [path for _, path in unread[:limit]])
    first_unread_ns = committed_ns_of(unread[limit][0]) if len(unread) > limit else None
    return entries, cursor.advanced(entries, now_ns, first_unread_ns)


def instance_reporter(instance: dg.DagsterInstance) -> Reporter:
    """A reporter that records an entry's materializations in `instance` directly."""

    def report(entry: LedgerEntry) -> bool:
        for event in materializations([entry]):
            instance.report_runless_asset_event(event)
        return True

    return report
