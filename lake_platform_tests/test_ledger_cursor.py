"""The sensor's bounded ledger reads on local disk: every entry reported exactly once over
capped ticks, entries sharing a commit time across the cap, and a late entry."""

import os
import time

import fsspec
import msgspec

from lake_platform.defs.bronze.reporting import LATENESS_NS, LedgerCursor, read_unreported
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import ledger_file

NOW_NS = time.time_ns() // 10**9 * 10**9
"""The daemon's clock of these tests: the store's (file times are set from it)."""


def write_entry(
    store: LakeStore, committed_ns: int, suffix: str, stored_ns: int | None = None
) -> str:
    """An entry committed at `committed_ns` and stored by the store at `stored_ns` (its
    file's mtime; the commit time by default: the writer's clock agrees with the store's)."""
    entry = LedgerEntry(f"{committed_ns:019d}-{suffix}", committed_ns, "w", False, (), ())
    path = ledger_file(entry.committed, entry.entry_id)
    store.write_bytes(msgspec.json.encode(entry), path)
    stored_ns = committed_ns if stored_ns is None else stored_ns
    os.utime(store.full_path(path), ns=(stored_ns, stored_ns))
    return entry.entry_id


def drain(
    store: LakeStore, cursor: LedgerCursor, limit: int
) -> tuple[list[list[str]], LedgerCursor]:
    return drain_at(store, cursor, NOW_NS, limit)


def drain_at(
    store: LakeStore, cursor: LedgerCursor, now_ns: int, limit: int
) -> tuple[list[list[str]], LedgerCursor]:
    """The entry ids each tick reads until one reads nothing, and the cursor then."""
    ticks = []
    while True:
        entries, cursor = read_unreported(store, cursor, now_ns, limit=limit)
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
    for stray in ("notes.json", f"{broken}.json"):  # stored on this test's clock, like `good`
        stored_ns = NOW_NS - 30 * 10**9
        os.utime(store.full_path(f"{folder}/{stray}"), ns=(stored_ns, stored_ns))

    entries, cursor = read_unreported(store, LedgerCursor(since_ns=NOW_NS - 3_600 * 10**9), NOW_NS)

    assert [entry.entry_id for entry in entries] == [good]
    assert good in cursor.seen
    assert "notes.json under _ledger/: not a ledger entry's name" in caplog.text
    assert f"skipping {folder}/{broken}.json: not a valid ledger entry" in caplog.text


def test_an_entry_stored_long_after_its_commit_time_is_reported_exactly_once(tmp_path, caplog):
    """A writer whose clock is 10 minutes behind the daemon's: its entry appears after the
    cursor has moved past its commit time, and is still reported, once."""
    store = LakeStore(str(tmp_path), fsspec.filesystem("file"))
    now_ns = time.time_ns()
    on_time = [write_entry(store, now_ns - index * 10**9, f"{index:06x}") for index in range(3)]
    entries, cursor = read_unreported(store, LedgerCursor.load(None, now_ns), now_ns)
    assert sorted(entry.entry_id for entry in entries) == sorted(on_time)
    assert read_unreported(store, cursor, now_ns)[0] == []

    behind = write_entry(store, now_ns - 10 * 60 * 10**9, "behind", stored_ns=now_ns)
    later_ns = now_ns + 10**9
    entries, cursor = read_unreported(store, cursor, later_ns)
    assert [entry.entry_id for entry in entries] == [behind]
    assert "1 ledger entries were stored up to 600s after their commit time" in caplog.text
    assert read_unreported(store, cursor, later_ns + 10**9)[0] == []


def test_the_cursor_keeps_only_the_entries_stored_within_the_lateness_window(tmp_path):
    """Entries stored over two hours (the store's clock, set here on the files): the cursor
    remembers only those stored in the last `LATENESS_NS`, and nothing is reported twice."""
    store = LakeStore(str(tmp_path), fsspec.filesystem("file"))
    now_ns = time.time_ns()
    span_ns, count = 2 * 3_600 * 10**9, 240
    stored_ns = {}
    for index in range(count):
        committed_ns = now_ns - span_ns + index * 30 * 10**9
        entry_id = write_entry(store, committed_ns, f"{index:06x}", committed_ns + 10**9)
        stored_ns[entry_id] = committed_ns + 10**9
    ticks, cursor = drain_at(store, LedgerCursor.load(None, now_ns), now_ns, limit=50)
    assert sorted(entry_id for tick in ticks for entry_id in tick) == sorted(stored_ns)
    newest = max(stored_ns.values())
    within_window = {i for i, ns in stored_ns.items() if ns >= newest - LATENESS_NS}
    assert set(cursor.seen) == within_window
    assert len(cursor.seen) < count // 10
