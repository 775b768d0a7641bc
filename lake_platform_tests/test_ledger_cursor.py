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


def test_stray_and_undecodable_files_under_the_ledger_are_skipped_with_a_warning(tmp_path, caplog):
    store = LakeStore(str(tmp_path), fsspec.filesystem("file"))
    good = write_entry(store, NOW_NS - 60 * 10**9, "0000000000aa")
    folder = ledger_file(LedgerEntry(good, NOW_NS, "w", False, (), ()).committed, good)
    folder = folder.rsplit("/", 1)[0]
    store.write_bytes(b'{"note": "copied here by hand"}', f"{folder}/notes.json")
    broken = f"{NOW_NS - 30 * 10**9:019d}-0000000000bb"
    store.write_bytes(b'{"entry_id": "truncated', f"{folder}/{broken}.json")

    entries, cursor = read_unreported(store, LedgerCursor(since_ns=NOW_NS - 3_600 * 10**9), NOW_NS)

    assert [entry.entry_id for entry in entries] == [good]
    assert good in cursor.seen
    assert "notes.json under _ledger/: not a ledger entry's name" in caplog.text
    assert f"skipping {folder}/{broken}.json: not a valid ledger entry" in caplog.text
