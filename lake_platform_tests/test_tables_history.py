"""The history of the Iceberg tables: time travel by tag, snapshot id or time
(`tables.time_travel`), tags and the automatic day tags (`tables.tags`), and maintenance
(`tables.maintenance`): expiry keeps the current and tagged snapshots, every file a kept
snapshot references survives, the unreferenced ones go (orphans only after the grace
period). On a local lake with a SQLite catalog, and (slow) with a PostgreSQL catalog and on
S3 (SeaweedFS). Times are controlled through `now`, never by sleeping."""

import datetime as dt
import os
import threading
from pathlib import Path

import polars as pl
import pytest
from pyiceberg.table import Table

from lake_platform.tables.data_files import lake_path
from lake_platform.tables.hours import replace_hour, snapshot_properties
from lake_platform.tables.identifiers import ICEBERG_FOLDER
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform.tables.maintenance import GRACE_S, maintain, maintain_table
from lake_platform.tables.tags import TagError, day_tag, remove_tag, tag_current, tag_day, tags
from lake_platform.tables.time_travel import AsOfError, parse_as_of, snapshot_as_of
from lake_platform_tests.tables_lake import (
    HOUR,
    LAKE_KINDS,
    TRADES,
    VALUES,
    TablesLake,
    lake_of_kind,
    version_rows,
    write_version,
)
from lake_platform_tests.test_tables_hours import hour_rows

NEXT_HOUR = HOUR + dt.timedelta(hours=1)
METADATA_FOLDER = f"{ICEBERG_FOLDER}/{TRADES.target}/metadata"
DAY = dt.timedelta(days=1)


@pytest.fixture(params=LAKE_KINDS)
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> TablesLake:
    return lake_of_kind(request.param, request, tmp_path)


@pytest.fixture
def local_lake(tmp_path: Path) -> TablesLake:
    return lake_of_kind("sqlite-local", None, tmp_path)


def lake_tables(lake: TablesLake) -> LakeTables:
    return open_lake_tables(lake.settings, lake.store)


def commit(lake: TablesLake, table: Table, version: int, hour: dt.datetime = HOUR) -> int:
    """Write and commit version `version` of the hour; the new current snapshot's id."""
    files = write_version(lake.store, hour, version)
    replace_hour(table, hour, files, snapshot_properties(hour, f"run-{version}", ""))
    return table.current_snapshot().snapshot_id


def versions(table: Table, snapshot_id: int, hour: dt.datetime = HOUR) -> tuple[set[int], int]:
    """The versions an hour holds in a snapshot (`seq // 100`) and its row count, read
    through the catalog (every file of the snapshot read)."""
    rows = hour_rows(table, hour, snapshot_id)
    return set(rows["seq"] // 100), rows.height


def live_files(table: Table, snapshot_id: int) -> set[str]:
    """Lake paths of the data files a snapshot reads."""
    return {
        lake_path(table, task.file) for task in table.scan(snapshot_id=snapshot_id).plan_files()
    }


def metadata_files(lake: TablesLake, table: Table, snapshot_id: int) -> set[str]:
    """Lake paths of a snapshot's manifest list and manifests."""
    root = f"{lake_tables(lake).root_url}/"
    snapshot = table.snapshot_by_id(snapshot_id)
    manifests = {manifest.manifest_path for manifest in snapshot.manifests(table.io)}
    return {uri.removeprefix(root) for uri in {snapshot.manifest_list, *manifests}}


def stored(lake: TablesLake) -> set[str]:
    """Every file of the trades table's data and metadata folders."""
    store = lake.store
    return {*store.list_files(TRADES.target), *store.list_files(METADATA_FOLDER, "")}


def iso(timestamp_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_tag_and_a_time_read_the_older_rows_after_a_rebuild(lake: TablesLake) -> None:
    table = lake.trades()
    first = commit(lake, table, 1)
    assert tag_current(table, "training-v1") == first
    late = commit(lake, table, 2)  # the late-data rebuild of the hour
    first_ms = table.snapshot_by_id(first).timestamp_ms
    late_ms = table.snapshot_by_id(late).timestamp_ms

    table = lake.trades()
    assert snapshot_as_of(table, "training-v1").snapshot_id == first
    assert snapshot_as_of(table, iso(first_ms)).snapshot_id == first
    assert snapshot_as_of(table, iso(late_ms)).snapshot_id == late
    assert snapshot_as_of(table, str(first)).snapshot_id == first
    assert snapshot_as_of(table, "main").snapshot_id == late
    assert snapshot_as_of(table, "2999-01-01").snapshot_id == late
    offset = dt.datetime.fromtimestamp(first_ms / 1000, dt.timezone(dt.timedelta(hours=5)))
    assert snapshot_as_of(table, offset.isoformat()).snapshot_id == first
    assert versions(table, snapshot_as_of(table, "training-v1").snapshot_id) == (
        {1},
        version_rows(1),
    )
    assert versions(table, snapshot_as_of(table, iso(first_ms)).snapshot_id) == (
        {1},
        version_rows(1),
    )
    assert versions(table, late) == ({2}, version_rows(2))

    # expiry keeps the tagged version readable by its tag and by its time
    maintain_table(lake_tables(lake), TRADES, now=dt.datetime.now(dt.UTC) + DAY)
    table = lake.trades()
    assert versions(table, snapshot_as_of(table, "training-v1").snapshot_id) == (
        {1},
        version_rows(1),
    )
    assert snapshot_as_of(table, iso(first_ms)).snapshot_id == first
    frame = pl.from_arrow(table.scan(snapshot_id=first).to_arrow())
    assert frame.height == version_rows(1)


def test_expiry_keeps_the_current_and_tagged_snapshots_and_every_file_they_reference(
    lake: TablesLake,
) -> None:
    table = lake.trades()
    ids = [commit(lake, table, 1), commit(lake, table, 1, NEXT_HOUR), commit(lake, table, 2)]
    tag_current(table, "keep")
    tagged = ids[-1]
    ids += [commit(lake, table, 3), commit(lake, table, 2, NEXT_HOUR), commit(lake, table, 4)]
    current = ids[-1]
    kept = {tagged, current}
    files = {snapshot: live_files(table, snapshot) for snapshot in ids}
    metadata = {snapshot: metadata_files(lake, table, snapshot) for snapshot in ids}
    needed = set().union(*(files[snapshot] | metadata[snapshot] for snapshot in kept))
    expired_only = set().union(*files.values()) - set().union(*(files[s] for s in kept))
    before = stored(lake)

    report = maintain_table(lake_tables(lake), TRADES, now=dt.datetime.now(dt.UTC) + DAY)

    table = lake.trades()
    assert sorted(report.snapshots_expired) == sorted(set(ids) - kept)
    assert {snapshot.snapshot_id for snapshot in table.snapshots()} == kept
    after = stored(lake)
    assert needed <= after, sorted(needed - after)
    assert expired_only and set(report.data_files) == expired_only
    assert not expired_only & after
    # nothing unreferenced is left in the data folder; every deletion was a stored file
    assert {path for path in after if path.startswith(TRADES.target)} == set().union(
        *(files[s] for s in kept)
    )
    assert set(report.deleted) == before - after
    assert len(report.manifest_lists) == len(ids) - len(kept)
    assert report.metadata() == {
        "snapshots_expired": len(ids) - len(kept),
        "data_files_deleted": len(expired_only),
        "manifests_deleted": len(report.manifests),
        "manifest_lists_deleted": len(ids) - len(kept),
        "orphans_deleted": len(report.orphans),
        "snapshots_kept": 2,
        "tags": 1,
    }
    for snapshot, hour_versions in ((tagged, ({2}, {1})), (current, ({4}, {2}))):
        assert versions(table, snapshot)[0] == hour_versions[0]
        assert versions(table, snapshot, NEXT_HOUR)[0] == hour_versions[1]
        assert pl.from_arrow(table.scan(snapshot_id=snapshot).to_arrow()).height > 0
    # the table goes on: a commit after maintenance, and a second run deletes nothing needed
    newest = commit(lake, table, 5)
    again = maintain_table(lake_tables(lake), TRADES, now=dt.datetime.now(dt.UTC) + DAY)
    assert again.snapshots_expired == (current,)
    table = lake.trades()
    assert versions(table, newest) == ({5}, version_rows(5))
    assert versions(table, tagged)[0] == {2}


def test_snapshots_within_the_retention_stay(local_lake: TablesLake) -> None:
    lake = local_lake
    table = lake.trades()
    ids = [commit(lake, table, version) for version in (1, 2, 3)]
    report = maintain_table(lake_tables(lake), TRADES)  # now: all superseded within the hour
    assert report.snapshots_expired == () and report.deleted == ()
    assert [snapshot.snapshot_id for snapshot in lake.trades().snapshots()] == ids


def test_an_orphan_goes_only_once_older_than_the_grace_period(lake: TablesLake) -> None:
    table = lake.trades()
    commit(lake, table, 1)
    committed = stored(lake)
    orphans = {file.path for file in write_version(lake.store, HOUR, 9)}  # never committed
    metadata_orphan = f"{METADATA_FOLDER}/00042-unfinished.metadata.json"
    lake.store.write_bytes(b"{}", metadata_orphan)
    legacy = f"{TRADES.target}/symbol=0700/date=2024-01-02/hour=07/part-00000.parquet"
    lake.store.write_bytes(b"PAR1", legacy)  # not a name this writer makes: never swept
    written = dt.datetime.now(dt.UTC)

    young = maintain_table(lake_tables(lake), TRADES, now=written + dt.timedelta(hours=1))
    assert young.orphans == ()
    assert orphans | {metadata_orphan, legacy} <= stored(lake)

    old = maintain_table(
        lake_tables(lake), TRADES, now=written + dt.timedelta(seconds=GRACE_S + 60)
    )
    assert set(old.orphans) == orphans | {metadata_orphan}
    assert stored(lake) == committed | {legacy}
    table = lake.trades()
    assert versions(table, table.current_snapshot().snapshot_id) == ({1}, version_rows(1))


def test_orphans_by_their_modification_time_and_the_lake_s_temporaries(
    local_lake: TablesLake,
) -> None:
    lake = local_lake
    table = lake.trades()
    commit(lake, table, 1)
    store = lake.store
    fresh = [file.path for file in write_version(store, HOUR, 8, values=VALUES[:1])]
    stale = [file.path for file in write_version(store, HOUR, 9, values=VALUES[1:])]
    temporary = f"{TRADES.target}/symbol=0700/.part-00000.parquet.0123456789ab.tmp"
    store.write_bytes(b"half", temporary)
    # past the grace of what was written so far (the table's creation included: files
    # older than the table are never orphans); `fresh` written "just now" then, the
    # temporary left long ago
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=GRACE_S + 60)
    for path in fresh:
        moment = (now - dt.timedelta(seconds=1)).timestamp()
        os.utime(store.full_path(path), (moment, moment))
    backdated = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=GRACE_S + 60)).timestamp()
    os.utime(store.full_path(temporary), (backdated, backdated))

    run = maintain(lake_tables(lake), [TRADES], now=now)

    (report,) = run.tables.values()
    assert sorted(report.orphans) == sorted(stale)
    assert run.temporaries == (temporary,)
    assert run.metadata()["orphans_deleted"] == len(stale)
    assert run.metadata()["temporaries_deleted"] == 1
    assert set(fresh) <= stored(lake) and not set(stale) & stored(lake)


def test_files_older_than_the_table_are_never_orphans(local_lake: TablesLake) -> None:
    """After a catalog is lost and recovered for some dates, the other dates' files are no
    snapshot's: written before the new table, they are not swept."""
    lake = local_lake
    store = lake.store
    before = [file.path for file in write_version(store, HOUR, 9)]
    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).timestamp()
    for path in before:
        os.utime(store.full_path(path), (long_ago, long_ago))
    commit(lake, lake.trades(), 1, hour=HOUR + dt.timedelta(hours=1))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=GRACE_S + 60)

    (report,) = maintain(lake_tables(lake), [TRADES], now=later).tables.values()

    assert not report.orphans and set(before) <= stored(lake)


def test_an_expired_version_written_again_after_the_cut_off_waits_for_the_grace(
    local_lake: TablesLake,
) -> None:
    lake = local_lake
    table = lake.trades()
    old_files = write_version(lake.store, HOUR, 1)
    replace_hour(table, HOUR, old_files, snapshot_properties(HOUR, "", ""))
    commit(lake, table, 2)
    now = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    long_ago = (now - dt.timedelta(hours=3)).timestamp()
    for file in old_files:
        os.utime(lake.store.full_path(file.path), (long_ago, long_ago))
    # a rebuild producing version 1 again writes its files anew, about to commit them
    rewritten = {file.path for file in write_version(lake.store, HOUR, 1, values=VALUES[:1])}
    for path in rewritten:  # written just now: after the cut-off, 1 s before `now`
        os.utime(lake.store.full_path(path), (now.timestamp(), now.timestamp()))
    untouched = {file.path for file in old_files} - rewritten

    report = maintain_table(lake_tables(lake), TRADES, now=now, retention_s=1.0)

    assert len(report.snapshots_expired) == 1
    assert set(report.data_files) == untouched
    assert rewritten <= stored(lake) and not untouched & stored(lake)
    later = maintain_table(lake_tables(lake), TRADES, now=now + dt.timedelta(seconds=GRACE_S + 1))
    assert set(later.orphans) == rewritten


def test_a_file_committed_while_maintenance_lists_the_folders_is_kept(
    local_lake: TablesLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = local_lake
    table = lake.trades()
    commit(lake, table, 1)
    looking_orphaned = write_version(lake.store, HOUR, 2)  # written by a run that died...
    tables = lake_tables(lake)
    listing = tables.store.list_files_with_mtime

    def list_then_commit(folder: str, suffix: str = ".parquet") -> dict[str, int | None]:
        found = listing(folder, suffix)
        if folder == TRADES.target:  # ...and reused by a rerun committing right now
            replace_hour(lake.trades(), HOUR, looking_orphaned, snapshot_properties(HOUR, "", ""))
        return found

    monkeypatch.setattr(tables.store, "list_files_with_mtime", list_then_commit)
    report = maintain_table(tables, TRADES, now=dt.datetime.now(dt.UTC) + DAY)

    assert not {file.path for file in looking_orphaned} & set(report.deleted)
    table = lake.trades()
    assert versions(table, table.current_snapshot().snapshot_id) == ({2}, version_rows(2))


def test_maintenance_while_hours_are_replaced_keeps_every_version_readable(
    local_lake: TablesLake,
) -> None:
    lake = local_lake
    table = lake.trades()
    commit(lake, table, 1)
    done = threading.Event()
    failures: list[BaseException] = []

    def replace_hours() -> None:
        writer = lake.trades()
        try:
            for version in range(2, 14):
                commit(lake, writer, version)
        except BaseException as error:  # recorded: the assertion below names it
            failures.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=replace_hours)
    thread.start()
    tables = lake_tables(lake)
    runs = 0
    while not done.is_set() or runs == 0:
        maintain_table(tables, TRADES, retention_s=0.001)
        runs += 1
    thread.join()
    assert failures == []
    maintain_table(tables, TRADES, retention_s=0.001)
    table = lake.trades()
    assert [snapshot.snapshot_id for snapshot in table.snapshots()] == [
        table.current_snapshot().snapshot_id
    ]
    assert versions(table, table.current_snapshot().snapshot_id) == ({13}, version_rows(13))


def test_tag_current_refuses_a_clash_and_bad_names(local_lake: TablesLake) -> None:
    lake = local_lake
    table = lake.trades()
    assert tag_current(table, "before-any-data") is None
    first = commit(lake, table, 1)
    assert tag_current(table, "v1") == first
    second = commit(lake, table, 2)
    assert tag_current(table, "v1-again") == second
    with pytest.raises(TagError, match=r"tag 'v1' already names snapshot \d+; replace it"):
        tag_current(table, "v1")
    assert tag_current(table, "v1", replace=True) == second
    assert tag_current(table, "v1") == second  # already there: nothing to do
    for bad in ("main", "two words", "", "7days", "tab\tname", "-x"):
        with pytest.raises(TagError):
            tag_current(table, bad)
    assert remove_tag(table, "v1-again") == second
    with pytest.raises(TagError, match="no tag 'v1-again'"):
        remove_tag(table, "v1-again")
    assert tags(lake.trades()) == {"v1": second}


def test_day_tags_beyond_keep_are_removed(local_lake: TablesLake) -> None:
    lake = local_lake
    table = lake.trades()
    days = [dt.date(2026, 12, day) for day in (1, 2, 3, 4)]
    assert tag_day(table, days[0], keep=2).tag is None  # no snapshot yet
    made = {}
    for version, day in enumerate(days, start=1):
        made[day] = commit(lake, table, version)
        result = tag_day(table, day, keep=2)
        assert (result.tag, result.snapshot_id) == (day_tag(day), made[day])
    assert result.removed == (day_tag(days[1]),)
    tag_current(table, "mine")
    assert tags(lake.trades()) == {
        day_tag(days[2]): made[days[2]],
        day_tag(days[3]): made[days[3]],
        "mine": made[days[3]],
    }

    late = commit(lake, table, 9)  # a late rebuild of the last day moves its tag
    assert tag_day(table, days[3], keep=2).snapshot_id == late
    backfilled = tag_day(table, days[0], keep=2)  # older than the newest two: no tag
    assert (backfilled.tag, backfilled.removed) == (None, ())
    maintain_table(lake_tables(lake), TRADES, now=dt.datetime.now(dt.UTC) + DAY)
    table = lake.trades()
    assert {s.snapshot_id for s in table.snapshots()} == {made[days[2]], made[days[3]], late}
    assert versions(table, tags(table)[day_tag(days[2])]) == ({3}, version_rows(3))

    none = tag_day(table, days[3], keep=0)
    assert none.tag is None and sorted(none.removed) == [day_tag(days[2]), day_tag(days[3])]
    assert tags(lake.trades()) == {"mine": made[days[3]]}


def test_as_of_errors_are_one_clear_line(local_lake: TablesLake) -> None:
    lake = local_lake
    table = lake.trades()
    with pytest.raises(AsOfError, match="has no snapshot yet"):
        snapshot_as_of(table, "2026-12-06T03:00:00Z")
    first = commit(lake, table, 1)
    tag_current(table, "first")
    first_ms = table.snapshot_by_id(first).timestamp_ms
    middle = commit(lake, table, 2)
    middle_ms = table.snapshot_by_id(middle).timestamp_ms
    commit(lake, table, 3)
    before_first = iso(first_ms - 60_000)
    with pytest.raises(AsOfError, match="had no snapshot yet at"):
        snapshot_as_of(table, before_first)

    maintain_table(lake_tables(lake), TRADES, now=dt.datetime.now(dt.UTC) + DAY)
    table = lake.trades()
    expected = {
        "nope": r"silver\.stocks_trades: no tag or branch 'nope' \(there are: first, main\)",
        str(middle): rf"no snapshot {middle}: unknown, or expired \(LAKE_SNAPSHOT_RETENTION\)",
        "123": r"no snapshot 123: unknown",
        iso(middle_ms): (
            r"is older than the retained history \(LAKE_SNAPSHOT_RETENTION\); tag a version "
            r"to keep it"
        ),
        "2026-12-06T03:00:00": "needs a time zone",
        "3x": "is not an ISO-8601 time",
        "-x": "is neither a tag, a snapshot id nor a time",
    }
    for as_of, message in expected.items():
        with pytest.raises(AsOfError, match=message) as raised:
            snapshot_as_of(table, as_of)
        assert "\n" not in str(raised.value)
    assert snapshot_as_of(table, "first").snapshot_id == first


def test_parse_as_of_tells_ids_times_and_names_apart() -> None:
    assert parse_as_of("1234567890123") == 1234567890123
    assert parse_as_of("2026-12-06") == dt.datetime(2026, 12, 6, tzinfo=dt.UTC)
    assert parse_as_of("2026-12-06T03:00:00Z") == dt.datetime(2026, 12, 6, 3, tzinfo=dt.UTC)
    assert parse_as_of("2026-12-06T04:00:00+01:00") == dt.datetime(2026, 12, 6, 3, tzinfo=dt.UTC)
    assert parse_as_of("day-2026-12-06") == "day-2026-12-06"


def test_a_table_without_snapshots_keeps_its_files(local_lake: TablesLake) -> None:
    """A catalog recreated empty (lost, not yet recovered) must not take the table's files
    for orphans."""
    lake = local_lake
    lake.trades()
    files = {file.path for file in write_version(lake.store, HOUR, 1)}
    report = maintain_table(lake_tables(lake), TRADES, now=dt.datetime.now(dt.UTC) + DAY)
    assert report.deleted == () and files <= stored(lake)


def test_files_of_a_table_whose_folder_starts_alike_are_never_candidates(
    lake: TablesLake,
) -> None:
    table = lake.trades()
    commit(lake, table, 1)
    neighbour = f"{TRADES.target}_x/symbol=A/date=2024-01-02/hour=07/part-00000-{'a' * 16}.parquet"
    lake.store.write_bytes(b"PAR1", neighbour)
    report = maintain_table(lake_tables(lake), TRADES, now=dt.datetime.now(dt.UTC) + DAY)
    assert neighbour not in report.deleted
    assert lake.store.list_files(f"{TRADES.target}_x") == [neighbour]
