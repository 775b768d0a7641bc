"""The calendar-grouped manifest rewrite (`lake_platform.tables.manifests`): hourly commits over
two closed months, three closed days of the current month and today, merged into one manifest
per closed month and per closed day; the same rows before and after, time travel, entries kept
as they were, idempotence, replaces after a rewrite and racing one; on a local lake with a
SQLite catalog and (slow) on S3 (SeaweedFS)."""

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation

import lake_platform.tables.hours as hours
import lake_platform.tables.manifests as manifests
from lake_platform.tables.data_files import file_uri
from lake_platform.tables.hours import hour_files, replace_hour, snapshot_properties
from lake_platform.tables.manifests import compact_manifests
from lake_platform_tests.tables_lake import (
    LAKE_KINDS,
    TablesLake,
    lake_of_kind,
    version_rows,
    write_version,
)

TODAY = dt.date(2024, 3, 5)
HISTORY = [
    dt.datetime(2024, month, day, hour, tzinfo=dt.UTC)
    for month in (1, 2, 3)
    for day in (1, 2, 3)
    for hour in (7, 8)
]
"""Two hours on each of three days of January, February (closed months) and March (closed
days of today's month)."""
TODAYS = [dt.datetime(2024, 3, 5, hour, tzinfo=dt.UTC) for hour in (1, 2)]
MERGED = 2 + 3 + len(TODAYS)
"""Live manifests after the rewrite: one per closed month, one per closed day, today's."""
CLOSED_HOUR = dt.datetime(2024, 1, 2, 8, tzinfo=dt.UTC)


@pytest.fixture(params=[LAKE_KINDS[0], LAKE_KINDS[2]])
def lake(request: pytest.FixtureRequest, tmp_path: Path) -> TablesLake:
    return lake_of_kind(request.param, request, tmp_path)


@pytest.fixture
def local_lake(tmp_path: Path) -> TablesLake:
    return lake_of_kind("sqlite-local", None, tmp_path)


def commit(lake: TablesLake, table: Table, hour: dt.datetime, version: int) -> list[str]:
    """Replace `hour` with version `version` (one file per value); its lake paths."""
    files = write_version(lake.store, hour, version, files_per_value=1)
    replace_hour(table, hour, files, snapshot_properties(hour, f"v{version}", ""))
    return [file.path for file in files]


def with_history(lake: TablesLake) -> Table:
    """The trades table after one commit of every hour of `HISTORY` and `TODAYS`."""
    table = lake.trades()
    for hour in HISTORY + TODAYS:
        commit(lake, table, hour, 1)
    return table


def rows(table: Table, snapshot_id: int | None = None) -> pl.DataFrame:
    """Every row of the table (of a snapshot), in one order."""
    frame = pl.from_arrow(table.scan(snapshot_id=snapshot_id).to_arrow())
    return frame.sort("date", "hour", "symbol", "event_id")


def manifest_paths(table: Table, snapshot_id: int | None = None) -> list[str]:
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id else table.current_snapshot()
    return sorted(manifest.manifest_path for manifest in snapshot.manifests(table.io))


def live_entries(table: Table) -> dict[str, tuple]:
    """Each live data file of the current snapshot: what its entry says besides its status."""
    found = {}
    for manifest in table.current_snapshot().manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io):
            data = entry.data_file
            found[data.file_path] = (
                entry.snapshot_id,
                entry.sequence_number,
                entry.file_sequence_number,
                tuple(data.partition),
                data.record_count,
                data.file_size_in_bytes,
                data.lower_bounds,
                data.upper_bounds,
                data.null_value_counts,
            )
    return found


def hour_rows(table: Table, hour: dt.datetime) -> pl.DataFrame:
    scan = table.scan(
        row_filter=hours.hour_predicate(hour), selected_fields=("date", "hour", "seq")
    )
    return pl.from_arrow(scan.to_arrow())


def test_closed_months_and_days_are_merged_and_read_the_same(lake: TablesLake) -> None:
    table = with_history(lake)
    before_id = table.current_snapshot().snapshot_id
    before_rows, before_entries = rows(table), live_entries(table)
    before_manifests = manifest_paths(table)
    todays = {
        manifest.manifest_path
        for manifest in table.current_snapshot().manifests(table.io)
        if manifest.added_snapshot_id in {s.snapshot_id for s in table.snapshots()[-2:]}
    }

    result = compact_manifests(table, TODAY, properties={"lake.dagster_run_id": "maintain-1"})

    assert result.manifests_before == len(HISTORY) + len(TODAYS) == len(before_manifests)
    assert result.manifests_after == MERGED == len(manifest_paths(table))
    snapshot = table.current_snapshot()
    assert snapshot.snapshot_id == result.snapshot_id and snapshot.parent_snapshot_id == before_id
    assert snapshot.summary.operation == Operation.REPLACE
    assert snapshot.summary["lake.dagster_run_id"] == "maintain-1"
    assert snapshot.summary["lake.manifests-closed-before"] == "2024-03-05"
    parent_summary = table.snapshot_by_id(before_id).summary
    for total in ("total-data-files", "total-records", "total-files-size"):
        assert snapshot.summary[total] == parent_summary[total]
    assert todays <= set(manifest_paths(table))  # today's manifests untouched
    # every file still live, with its snapshot, sequence numbers, partition and statistics
    assert live_entries(table) == before_entries
    statuses = {
        entry.status
        for manifest in snapshot.manifests(table.io)
        if manifest.added_snapshot_id == snapshot.snapshot_id
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False)
    }
    assert statuses == {ManifestEntryStatus.EXISTING}
    reloaded = lake.trades()
    assert rows(reloaded).equals(before_rows)
    assert rows(reloaded, before_id).equals(before_rows)  # time travel reads the old manifests
    assert manifest_paths(reloaded, before_id) == before_manifests


def test_a_second_rewrite_commits_nothing_until_a_period_closes(local_lake: TablesLake) -> None:
    lake = local_lake
    table = with_history(lake)
    compact_manifests(table, TODAY)
    snapshots = len(table.snapshots())

    again = compact_manifests(table, TODAY)
    assert again == manifests.ManifestCompaction(MERGED, MERGED, None)
    commit(lake, table, dt.datetime(2024, 3, 5, 3, tzinfo=dt.UTC), 1)  # today: left alone
    assert compact_manifests(table, TODAY).snapshot_id is None
    assert len(table.snapshots()) == snapshots + 1

    # the next day closes today's three hours into one manifest
    assert compact_manifests(table, TODAY + dt.timedelta(days=1)).manifests_after == MERGED - 1
    # April closes March: its four closed days become one manifest
    closing = compact_manifests(table, dt.date(2024, 4, 1))
    assert (closing.manifests_before, closing.manifests_after) == (MERGED - 1, 3)
    assert compact_manifests(table, dt.date(2024, 4, 1)).snapshot_id is None
    hour_count = len(HISTORY) + len(TODAYS) + 1
    assert rows(table).height == hour_count * version_rows(1, files_per_value=1)


def test_a_merged_group_above_the_cap_is_split_by_date(local_lake: TablesLake) -> None:
    lake = local_lake
    table = with_history(lake)
    before = rows(table)
    # January holds 6 hours x 2 values = 12 entries: 5 per manifest makes 3 manifests
    result = compact_manifests(table, dt.date(2024, 2, 1), max_entries=5)
    january = [
        manifest
        for manifest in table.current_snapshot().manifests(table.io)
        if manifest.added_snapshot_id == result.snapshot_id
    ]
    assert [manifest.existing_files_count for manifest in january] == [5, 5, 2]
    assert compact_manifests(table, dt.date(2024, 2, 1), max_entries=5).snapshot_id is None
    assert rows(table).equals(before)


def test_an_hour_in_a_merged_month_is_replaced_and_merged_again(lake: TablesLake) -> None:
    table = with_history(lake)
    compact_manifests(table, TODAY)
    old = {file.file_path for file in hour_files(table, CLOSED_HOUR)}
    others = rows(table).filter(
        (pl.col("date") != CLOSED_HOUR.date()) | (pl.col("hour") != CLOSED_HOUR.hour)
    )

    new = commit(lake, table, CLOSED_HOUR, 2)

    live = {file.file_path for file in hour_files(table, CLOSED_HOUR)}
    assert live == {file_uri(table, path) for path in new} and not live & old
    assert set(hour_rows(table, CLOSED_HOUR)["seq"] // 100) == {2}
    # a rewritten January manifest, the replace's added one and its deleted-files manifest
    assert len(manifest_paths(table)) == MERGED + 2
    result = compact_manifests(table, TODAY)
    assert (result.manifests_before, result.manifests_after) == (MERGED + 2, MERGED)
    assert {file.file_path for file in hour_files(table, CLOSED_HOUR)} == live
    unchanged = rows(table).filter(
        (pl.col("date") != CLOSED_HOUR.date()) | (pl.col("hour") != CLOSED_HOUR.hour)
    )
    assert unchanged.equals(others)


def test_a_replace_landing_while_the_rewrite_commits_is_kept(
    local_lake: TablesLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rewrite's first attempt was planned before the replace: its commit fails on the
    catalog's check, and the retry plans anew on top of the replace."""
    lake = local_lake
    table = with_history(lake)
    old = {file.file_path for file in hour_files(table, CLOSED_HOUR)}
    new_paths: list[str] = []
    stage = manifests._CalendarRewrite.commit

    def replace_after_planning(self: manifests._CalendarRewrite) -> None:
        stage(self)  # planned and written on the head before the replace
        new_paths.extend(commit(lake, lake.trades(), CLOSED_HOUR, 2))

    monkeypatch.setattr(manifests._CalendarRewrite, "commit", replace_after_planning)
    result = compact_manifests(table, TODAY)

    assert new_paths and result.snapshot_id is not None
    table = lake.trades()
    replaced = table.snapshot_by_id(table.current_snapshot().parent_snapshot_id)
    assert replaced.summary["lake.dagster_run_id"] == "v2"
    live = {file.file_path for file in hour_files(table, CLOSED_HOUR)}
    assert live == {file_uri(table, path) for path in new_paths} and not live & old
    assert set(hour_rows(table, CLOSED_HOUR)["seq"] // 100) == {2}
    assert result.manifests_after == MERGED == len(manifest_paths(table))
    assert rows(table).height == rows(table, replaced.snapshot_id).height


def test_a_rewrite_landing_before_a_replace_commits_does_not_lose_it(
    local_lake: TablesLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replace read the hour's files before the rewrite landed: it retries on top of the
    rewrite (no conflict: the rewrite changed no data) and its files are the hour's."""
    lake = local_lake
    table = with_history(lake)
    old = {file.file_path for file in hour_files(table, CLOSED_HOUR)}
    files = write_version(lake.store, CLOSED_HOUR, 2, files_per_value=1)
    read_footers = hours.data_files
    rewrites: list[manifests.ManifestCompaction] = []

    def rewrite_first(*args):  # runs after the replace read the hour, before it commits
        monkeypatch.setattr(hours, "data_files", read_footers)
        rewrites.append(compact_manifests(lake.trades(), TODAY))
        return read_footers(*args)

    monkeypatch.setattr(hours, "data_files", rewrite_first)
    replaced = replace_hour(table, CLOSED_HOUR, files, snapshot_properties(CLOSED_HOUR, "v2", ""))

    assert rewrites[0].snapshot_id is not None and replaced.snapshot_id is not None
    table = lake.trades()
    replace_parent = table.snapshot_by_id(replaced.snapshot_id).parent_snapshot_id
    assert replace_parent == rewrites[0].snapshot_id
    live = {file.file_path for file in hour_files(table, CLOSED_HOUR)}
    assert live == {file_uri(table, file.path) for file in files} and not live & old
    assert set(hour_rows(table, CLOSED_HOUR)["seq"] // 100) == {2}


def test_an_empty_table_and_a_datetime_today(local_lake: TablesLake) -> None:
    table = local_lake.trades()
    assert compact_manifests(table, TODAY) == manifests.ManifestCompaction(0, 0, None)
    with pytest.raises(TypeError, match="today is a date"):
        compact_manifests(table, dt.datetime(2024, 3, 5, tzinfo=dt.UTC))


def test_periods() -> None:
    period = manifests.period
    assert period(dt.date(2023, 12, 9), TODAY) == (dt.date(2023, 12, 1), dt.date(2023, 12, 31))
    assert period(dt.date(2024, 2, 29), TODAY) == (dt.date(2024, 2, 1), dt.date(2024, 2, 29))
    assert period(dt.date(2024, 3, 4), TODAY) == (dt.date(2024, 3, 4), dt.date(2024, 3, 4))
    assert period(TODAY, TODAY) is None and period(dt.date(2024, 4, 1), TODAY) is None
