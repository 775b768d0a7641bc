"""Replacing an hour of an Iceberg table in one commit (`lake_platform.tables.hours`), read
back through the catalog: snapshots and their properties, no empty snapshot, atomicity for a
reader in another process, concurrent writers, exact partition values; on a local lake with
a SQLite catalog, and (slow) with a PostgreSQL catalog and on S3 (SeaweedFS)."""

import datetime as dt
import multiprocessing
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from pyiceberg.expressions import EqualTo

import lake_platform.tables.hours as hours
from lake_platform.settings import LakeSettings
from lake_platform.tables.catalog import file_io_properties
from lake_platform.tables.data_files import lake_path
from lake_platform.tables.hours import (
    HourCommit,
    HourConflict,
    hour_files,
    replace_hour,
    snapshot_properties,
)
from lake_platform_tests.tables_lake import (
    HOUR,
    LAKE_KINDS,
    VALUES,
    TablesLake,
    lake_of_kind,
    version_rows,
    write_version,
)

DEADLINE_S = 60.0
REPLACES = 20


@pytest.fixture(params=LAKE_KINDS)
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> TablesLake:
    return lake_of_kind(request.param, request, tmp_path)


@pytest.fixture
def local_lake(tmp_path: Path) -> TablesLake:
    return lake_of_kind("sqlite-local", None, tmp_path)


def hour_rows(table, hour: dt.datetime = HOUR, snapshot_id: int | None = None) -> pl.DataFrame:
    """The hour's rows through the catalog (filter columns projected: pyiceberg returns no
    rows for a filter on a folder column it does not select)."""
    scan = table.scan(
        row_filter=hours.hour_predicate(hour),
        selected_fields=("symbol", "date", "hour", "seq", "event_id"),
        snapshot_id=snapshot_id,
    )
    return pl.from_arrow(scan.to_arrow())


def test_replacing_an_hour_is_one_snapshot_with_its_properties(lake: TablesLake) -> None:
    table = lake.trades()
    first = write_version(lake.store, HOUR, 1)
    properties = snapshot_properties(HOUR, "run-1", "ab" * 32)
    first_id = replace_hour(table, HOUR, first, properties).snapshot_id
    second = write_version(lake.store, HOUR, 2, values=VALUES[:1])
    second_id = replace_hour(
        table, HOUR, second, snapshot_properties(HOUR, "run-2", "cd" * 32)
    ).snapshot_id

    table = lake.catalog().load_table("silver.stocks_trades")
    assert [snapshot.snapshot_id for snapshot in table.snapshots()] == [first_id, second_id]
    summary = table.snapshot_by_id(second_id).summary
    assert summary["lake.hour"] == "2024-01-02T07:00:00Z"
    assert summary["lake.dagster_run_id"] == "run-2"
    assert summary["lake.inputs_sha256"] == "cd" * 32
    assert summary["deleted-data-files"] == str(len(first))
    assert summary["added-data-files"] == str(len(second))
    assert sorted(lake_path(table, file) for file in hour_files(table, HOUR)) == sorted(
        file.path for file in second
    )
    assert sorted(lake_path(table, file) for file in hour_files(table, HOUR, first_id)) == sorted(
        file.path for file in first
    )
    # the value without input lost its files in the same snapshot; the first version stays
    # readable by its snapshot
    now, before = hour_rows(table), hour_rows(table, snapshot_id=first_id)
    assert now["symbol"].unique().to_list() == [VALUES[0]]
    assert now.height == version_rows(2, VALUES[:1]) and set(now["seq"] // 100) == {2}
    assert before.height == version_rows(1) and set(before["seq"] // 100) == {1}


def test_an_unchanged_hour_commits_nothing(lake: TablesLake) -> None:
    table = lake.trades()
    files = write_version(lake.store, HOUR, 1)
    committed = replace_hour(
        table, HOUR, files, snapshot_properties(HOUR, "run-1", "0" * 64)
    ).snapshot_id
    again = write_version(lake.store, HOUR, 1)  # a rebuild of the same input: same names

    assert [file.path for file in again] == [file.path for file in files]
    unchanged = replace_hour(table, HOUR, again, snapshot_properties(HOUR, "run-2", "0" * 64))
    assert unchanged == HourCommit(None, 0, 0)
    assert [snapshot.snapshot_id for snapshot in lake.trades().snapshots()] == [committed]


def test_readers_through_the_catalog_see_exact_partition_values(lake: TablesLake) -> None:
    table = lake.trades()
    replace_hour(
        table, HOUR, write_version(lake.store, HOUR, 1), snapshot_properties(HOUR, "r", "")
    )
    expected = {value: version_rows(1) // len(VALUES) for value in VALUES}

    arrow = pl.from_arrow(table.scan(selected_fields=("symbol", "hour", "date")).to_arrow())
    assert dict(arrow.group_by("symbol").len().iter_rows()) == expected
    assert set(arrow["hour"]) == {7} and set(arrow["date"]) == {HOUR.date()}
    only = table.scan(row_filter=EqualTo("symbol", "A/B"), selected_fields=("symbol", "seq"))
    assert only.to_arrow().num_rows == expected["A/B"]

    storage = {}
    if lake.settings.use_s3:  # Polars' own reader ignores the table's FileIO (trap 8)
        io = file_io_properties(lake.settings)
        storage = {
            "aws_endpoint_url": io["s3.endpoint"],
            "aws_access_key_id": io["s3.access-key-id"],
            "aws_secret_access_key": io["s3.secret-access-key"],
            "aws_region": io["s3.region"],
        }
    scanned = pl.scan_iceberg(table, storage_options=storage or None)
    counts = scanned.group_by("symbol").len().collect()
    assert dict(counts.iter_rows()) == expected
    filtered = scanned.filter(pl.col("symbol") == "0700").select(pl.len()).collect().item()
    assert filtered == expected["0700"]


def test_writers_of_different_hours_all_commit(lake: TablesLake) -> None:
    lake.trades()
    writer_hours = [HOUR + dt.timedelta(hours=offset) for offset in range(4)]
    files = {hour: write_version(lake.store, hour, 1) for hour in writer_hours}
    start = threading.Barrier(len(writer_hours))
    outcomes: dict[dt.datetime, object] = {}

    def write(hour: dt.datetime) -> None:
        table = lake.trades()  # a catalog and a table of its own, as another process has
        start.wait()
        try:
            outcomes[hour] = replace_hour(
                table, hour, files[hour], snapshot_properties(hour, "", "")
            )
        except Exception as error:  # recorded: the assertion below names it
            outcomes[hour] = error

    threads = [threading.Thread(target=write, args=(hour,)) for hour in writer_hours]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert all(
        isinstance(outcome, HourCommit) and outcome.snapshot_id for outcome in outcomes.values()
    ), outcomes
    table = lake.trades()
    assert len(table.snapshots()) == len(writer_hours)
    for hour in writer_hours:
        assert hour_rows(table, hour).height == version_rows(1)


def test_a_commit_of_the_same_hour_in_between_makes_the_later_one_a_conflict(
    local_lake: TablesLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = local_lake
    table = lake.trades()
    replace_hour(table, HOUR, write_version(lake.store, HOUR, 1), snapshot_properties(HOUR, "", ""))
    winner = write_version(lake.store, HOUR, 2)
    loser = write_version(lake.store, HOUR, 3)
    read_footers = hours.data_files

    def commit_winner_first(*args):  # runs after the loser read the hour, before it commits
        monkeypatch.setattr(hours, "data_files", read_footers)
        replace_hour(lake.trades(), HOUR, winner, snapshot_properties(HOUR, "winner", ""))
        return read_footers(*args)

    monkeypatch.setattr(hours, "data_files", commit_winner_first)
    with pytest.raises(HourConflict, match=r"silver\.stocks_trades hour 2024-01-02T07:00:00Z"):
        replace_hour(table, HOUR, loser, snapshot_properties(HOUR, "loser", ""))

    table = lake.trades()
    assert table.current_snapshot().summary["lake.dagster_run_id"] == "winner"
    rows = hour_rows(table)
    assert rows.height == version_rows(2) and set(rows["seq"] // 100) == {2}


def test_a_commit_in_between_with_the_same_files_is_no_conflict(
    local_lake: TablesLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = local_lake
    table = lake.trades()
    replace_hour(table, HOUR, write_version(lake.store, HOUR, 1), snapshot_properties(HOUR, "", ""))
    same = write_version(lake.store, HOUR, 2)
    read_footers = hours.data_files

    def commit_the_same_first(*args):
        monkeypatch.setattr(hours, "data_files", read_footers)
        replace_hour(lake.trades(), HOUR, same, snapshot_properties(HOUR, "first", ""))
        return read_footers(*args)

    monkeypatch.setattr(hours, "data_files", commit_the_same_first)
    assert (
        replace_hour(table, HOUR, same, snapshot_properties(HOUR, "second", "")).snapshot_id is None
    )
    assert len(lake.trades().snapshots()) == 2


@pytest.mark.slow
def test_racing_writers_of_one_hour_leave_exactly_one_version(local_lake: TablesLake) -> None:
    lake = local_lake
    lake.trades()
    versions = range(1, 5)
    files = {version: write_version(lake.store, HOUR, version) for version in versions}
    start = threading.Barrier(len(versions))
    outcomes: dict[int, object] = {}

    def write(version: int) -> None:
        table = lake.trades()
        start.wait()
        try:
            outcomes[version] = replace_hour(
                table, HOUR, files[version], snapshot_properties(HOUR, str(version), "")
            )
        except HourConflict as conflict:
            outcomes[version] = conflict

    threads = [threading.Thread(target=write, args=(version,)) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert len(outcomes) == len(versions)
    committed = [
        version for version, outcome in outcomes.items() if isinstance(outcome, HourCommit)
    ]
    table = lake.trades()
    live = table.current_snapshot().summary["lake.dagster_run_id"]
    assert committed and int(live) in committed
    rows = hour_rows(table)
    assert set(rows["seq"] // 100) == {int(live)} and rows.height == version_rows(int(live))


def _read_hour_in_a_loop(settings: LakeSettings, reads, stop, bad) -> None:
    """Reader process: read the hour through the catalog until `stop`; every read must be
    one whole version (one `seq // 100`, that version's row count), else it goes to `bad`."""
    table = TablesLake(settings).trades()
    while not stop.is_set():
        table.refresh()
        rows = hour_rows(table)
        seen = set(rows["seq"] // 100)
        if rows.height:
            (version,) = seen if len(seen) == 1 else (None,)
            if version is None or rows.height != version_rows(version):
                bad.put(f"versions {sorted(seen)} in {rows.height} rows")
        reads.value += 1


@pytest.mark.slow
def test_a_reader_never_sees_a_mix_while_the_hour_is_replaced(local_lake: TablesLake) -> None:
    lake = local_lake
    table = lake.trades()
    replace_hour(table, HOUR, write_version(lake.store, HOUR, 1), snapshot_properties(HOUR, "", ""))
    context = multiprocessing.get_context("spawn")
    reads, stop, bad = context.Value("i", 0), context.Event(), context.Queue()
    reader = context.Process(target=_read_hour_in_a_loop, args=(lake.settings, reads, stop, bad))
    reader.start()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while reads.value == 0 and reader.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reads.value > 0, "the reader process never read the hour"
        reads_before = reads.value
        for version in range(2, 2 + REPLACES):
            files = write_version(lake.store, HOUR, version)
            assert replace_hour(table, HOUR, files, snapshot_properties(HOUR, "", "")).snapshot_id
        reads_during = reads.value - reads_before
    finally:
        stop.set()
        reader.join(DEADLINE_S)
    assert reader.exitcode == 0
    mixes = []
    while not bad.empty():
        mixes.append(bad.get())
    assert mixes == []
    assert reads_during > 0
    assert len(lake.trades().snapshots()) == 1 + REPLACES


def test_files_outside_the_hours_folders_and_hours_not_in_utc_are_refused(
    local_lake: TablesLake,
) -> None:
    lake = local_lake
    table = lake.trades()
    files = write_version(lake.store, HOUR, 1)
    other_hour = HOUR + dt.timedelta(hours=1)
    with pytest.raises(ValueError, match="date=2024-01-02/hour=08"):
        replace_hour(table, other_hour, files, snapshot_properties(other_hour, "", ""))
    local_hour = HOUR.astimezone(dt.timezone(dt.timedelta(hours=2)))
    with pytest.raises(ValueError, match="whole UTC datetime"):
        replace_hour(table, local_hour, files, snapshot_properties(HOUR, "", ""))
    assert lake.trades().snapshots() == []
