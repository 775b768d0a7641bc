"""Bronze materializations from the ledger, for the sensor and the standalone service.

One `AssetMaterialization` per (asset, hour partition) touched by a set of ledger entries,
with rows, files, bytes, quarantined messages and the stream sequence range as metadata.
"""

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
import msgspec

from lake_platform.defs.keys import bronze_key
from lake_platform.defs.partitions import partition_key_for
from lake_platform.ingest.commit import Reporter
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.schemas import BY_TABLE

LATENESS_NS = 5 * 60 * 10**9
"""How long after its commit time a ledger entry may still appear (slow writers, clocks)."""
FIRST_LOOKBACK_NS = 24 * 3_600 * 10**9
"""How far back a sensor without a cursor looks for unreported entries."""


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

    def advanced(self, entries: Iterable[LedgerEntry], now_ns: int) -> "LedgerCursor":
        """The cursor after `entries`; ids older than the lateness window are forgotten."""
        since_ns = max(self.since_ns, now_ns - LATENESS_NS)
        seen = {*self.seen, *(entry.entry_id for entry in entries)}
        return LedgerCursor(
            since_ns=since_ns,
            seen=sorted(entry_id for entry_id in seen if int(entry_id[:19]) >= since_ns),
        )


def instance_reporter(instance: dg.DagsterInstance) -> Reporter:
    """A reporter that records an entry's materializations in `instance` directly."""

    def report(entry: LedgerEntry) -> bool:
        for event in materializations([entry]):
            instance.report_runless_asset_event(event)
        return True

    return report
