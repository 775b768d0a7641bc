"""The `lake_maintenance` job, its hourly schedule, and `lake-platform maintain`, on a real
Dagster instance and a local lake: expired snapshots and the files only they referenced
counted in the run's metadata, closed days' manifests merged, a day tag only for a day whose
hours are all materialized, a tick skipped while a run is in progress."""

import datetime as dt
import time
from pathlib import Path

import dagster as dg
import pytest

from lake_platform.cli import main
from lake_platform.definitions import defs
from lake_platform.defs.keys import bronze_key, derived_key
from lake_platform.defs.maintenance import (
    MAINTENANCE_JOB,
    MAINTENANCE_SCHEDULE,
    complete_days,
    lake_maintenance_hourly,
    untagged_days,
)
from lake_platform.defs.partitions import partition_key_for
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform.tables.tags import day_tag, tags
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze

SILVER = SILVER_TABLES["stocks/trades"]
TRADES_SILVER = next(a for a in SILVER_ASSETS if a.key == derived_key(SILVER.target))
TODAY = dt.datetime.now(dt.UTC).date()
COMPLETE, PARTIAL = TODAY - dt.timedelta(days=1), TODAY - dt.timedelta(days=2)
RETENTION_S = 1


def at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), dt.UTC)


@pytest.fixture
def lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeStore:
    """`DATA_ROOT` and `DAGSTER_HOME` of the test, snapshots retained `RETENTION_S`."""
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("LAKE_SNAPSHOT_RETENTION", f"{RETENTION_S}s")
    return LakeStore.from_settings(LakeResource().settings())


def ingest(instance: dg.DagsterInstance, store: LakeStore, hour: dt.datetime, seed: int) -> None:
    """Bronze trades in `hour`, reported as the sensor does (a runless materialization)."""
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(100, seed=seed, hour=hour), seed * 1000))
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=bronze_key(TRADES),
            partition=partition_key_for(hour),
        )
    )


def materialize_silver(instance: dg.DagsterInstance, hour: dt.datetime) -> None:
    result = dg.materialize(
        [TRADES_SILVER],
        instance=instance,
        partition_key=partition_key_for(hour),
        resources={"lake": LakeResource()},
    )
    assert result.success


def committed_paths(tables: LakeTables, hour: dt.datetime) -> set[str]:
    """The lake paths of Silver trades' hour in its current snapshot."""
    return {path for paths in hour_paths(tables.table(SILVER), hour).values() for path in paths}


def output_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (output,) = [event for event in result.all_events if event.is_successful_output]
    return {name: value.value for name, value in output.step_output_data.metadata.items()}


def until_retention_passed() -> None:
    """Snapshots superseded now are expirable once the retention has passed."""
    time.sleep(RETENTION_S + 0.1)


def test_the_job_expires_deletes_merges_and_tags_complete_days(lake: LakeStore) -> None:
    """Both hours of the complete day materialized in Silver (the first one twice: late data);
    of the partial day, Bronze has two hours and Silver one; Gold never ran."""
    tables = open_lake_tables(LakeResource().settings(), lake)
    with dg.instance_for_test() as instance:
        for hour, seed in ((at(PARTIAL, 14), 1), (at(PARTIAL, 15), 2)):
            ingest(instance, lake, hour, seed)
        materialize_silver(instance, at(PARTIAL, 14))
        for hour, seed in ((at(COMPLETE, 14), 3), (at(COMPLETE, 15), 4)):
            ingest(instance, lake, hour, seed)
            materialize_silver(instance, hour)
        first_version = committed_paths(tables, at(COMPLETE, 14))
        ingest(instance, lake, at(COMPLETE, 14), 5)
        materialize_silver(instance, at(COMPLETE, 14))
        replaced = first_version - committed_paths(tables, at(COMPLETE, 14))
        assert replaced
        snapshots = len(tables.table(SILVER).snapshots())
        until_retention_passed()

        result = defs.resolve_job_def(MAINTENANCE_JOB).execute_in_process(instance=instance)

    assert result.success
    metadata = output_metadata(result)
    assert metadata["tables"] == len(CATALOG_TABLES)
    assert metadata["snapshots_expired"] == snapshots - 1
    assert metadata["data_files_deleted"] == len(replaced)
    assert metadata["day_tags_made"] == 1
    by_table = metadata["by_table"]
    assert by_table["silver.stocks_trades"]["snapshots_expired"] == snapshots - 1
    assert (
        by_table["silver.stocks_trades"]["manifests_after"]
        < (by_table["silver.stocks_trades"]["manifests_before"])
    )
    assert all(not Path(lake.full_path(path)).exists() for path in replaced)
    silver = tables.table(SILVER)
    assert tags(silver) == {day_tag(COMPLETE): silver.current_snapshot().snapshot_id}
    assert tags(tables.table(GOLD_BARS)) == {}


def test_a_day_is_complete_when_every_hour_with_upstream_data_is_materialized_after_it(
    lake: LakeStore,
) -> None:
    with dg.instance_for_test() as instance:
        ingest(instance, lake, at(COMPLETE, 9), 1)
        assert complete_days(instance, SILVER, [COMPLETE]) == []
        materialize_silver(instance, at(COMPLETE, 9))
        assert complete_days(instance, SILVER, [COMPLETE, PARTIAL]) == [COMPLETE]
        ingest(instance, lake, at(COMPLETE, 9), 2)  # late data: the hour is stale again
        assert complete_days(instance, SILVER, [COMPLETE]) == []
        assert complete_days(instance, GOLD_BARS, [COMPLETE]) == []


def test_the_days_considered_are_the_last_closed_ones_without_a_tag() -> None:
    today = dt.date(2026, 3, 10)
    assert untagged_days({}, today, 3) == [dt.date(2026, 3, d) for d in (7, 8, 9)]
    tagged = {day_tag(dt.date(2026, 3, 8)): 1, "training": 2}
    assert untagged_days(tagged, today, 3) == [dt.date(2026, 3, 7), dt.date(2026, 3, 9)]


def test_the_schedule_runs_hourly_and_skips_while_a_run_is_in_progress() -> None:
    schedule = defs.resolve_schedule_def(MAINTENANCE_SCHEDULE)
    assert schedule.job_name == MAINTENANCE_JOB
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedule.cron_schedule == "10 * * * *"
    with dg.instance_for_test() as instance:
        request = lake_maintenance_hourly(dg.build_schedule_context(instance=instance))
        assert isinstance(request, dg.RunRequest)
        job = defs.resolve_job_def(MAINTENANCE_JOB)
        run = instance.create_run_for_job(job_def=job)
        skipped = lake_maintenance_hourly(dg.build_schedule_context(instance=instance))
        assert isinstance(skipped, dg.SkipReason)
        assert run.run_id in skipped.skip_message


def test_maintain_prints_a_line_per_table(
    lake: LakeStore, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.delenv("DAGSTER_HOME")
    tables = open_lake_tables(LakeResource().settings(), lake)
    hour = at(COMPLETE, 14)
    write_bronze(lake, TRADES, bronze_rows(TRADES, trades(100, hour=hour), 500))
    rebuild_hour(tables, SILVER, hour, "run-1")
    first = committed_paths(tables, hour)
    write_bronze(lake, TRADES, bronze_rows(TRADES, trades(10, seed=8, hour=hour), 900))
    rebuild_hour(tables, SILVER, hour, "run-2")
    replaced = first - committed_paths(tables, hour)
    until_retention_passed()

    assert main(["maintain", "--table", "silver/stocks/trades"]) == 0
    captured = capsys.readouterr()
    out = captured.out.splitlines()
    assert out[0].startswith("silver.stocks_trades: 1 snapshots expired (1 kept, 0 tags); ")
    assert f"deleted {len(replaced)} data files" in out[0]
    assert out[-1].startswith("maintained 1 tables: 1 snapshots expired")
    assert "DAGSTER_HOME is not set: no day tags" in captured.err
    assert tags(tables.table(SILVER)) == {}


def test_maintain_refuses_an_unknown_table_in_one_line(lake: LakeStore, capsys) -> None:
    assert main(["maintain", "--table", "gold/nope"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lake-platform: error: no derived table 'gold/nope'")
