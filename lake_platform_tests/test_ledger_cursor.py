"""The sensor's bounded ledger reads on local disk: every entry reported exactly once over
capped ticks, entries sharing a commit time across the cap, and a late entry."""

import fsspec
import msgspec

from lake_platform.defs.bronze.reporting import LATENESS_NS, LedgerCursor, read_unreported
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import ledger_file

NOW_NS = 1_765_900_000 * 10**9


def write_entry(store: LakeStore, committed_ns: int, suffix: str) -> str:
    entry = LedgerEntry(f"{committed_ns:019d}-{suffix}", committed_ns, "w", False, (), ())
    store.write_bytes(msgspec.json.encode(entry), ledger_file(entry.committed, entry.entry_id))
    return entry.entry_id


def drain(
    store: LakeStore, cursor: LedgerCursor, limit: int
) -> tuple[list[list[str]], LedgerCursor]:
    ticks = []
    while True:
        entries, cursor = read_unreported(store, cursor, NOW_NS, limit=limit)
        if not entries:
            return ticks, cursor
        ticks.append([entry.entry_id for entry in entries])


def test_capped_ticks_report_every_entry_once_even_when_commit_times_tie(tmp_path):
    store = LakeStore(str(tmp_path), fsspec.filesystem("file"))
    ids = [
        write_entry(store, NOW_NS - 2 * 3_600 * 10**9 + (index // 3) * 60 * 10**9, f"{index:06x}")
        for index in range(50)
    ]  # three entries per commit time, across two ledger hours' folders
    ticks, cursor = drain(store, LedgerCursor.load(None, NOW_NS), limit=7)
    assert all(len(tick) <= 7 for tick in ticks)
    assert len(ticks) == 8
    assert [entry_id for tick in ticks for entry_id in tick] == sorted(ids)
    late = write_entry(store, NOW_NS - LATENESS_NS // 2, "late")  # a slow writer's entry
    assert drain(store, cursor, limit=7)[0] == [[late]]
