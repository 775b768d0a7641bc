"""Silver assets in Dagster: materializations, checks, range runs, automation."""

import datetime as dt

import dagster as dg
import fsspec
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.reporting import materialization_targets
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.hour_files import files_digest
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze

SILVER = SILVER_TABLES["stocks/trades"]

TRADES_SILVER = next(a for a in SILVER_ASSETS if a.key.path == ["silver", "stocks", "trades"])
KEY = "2025-12-16-14:00"


@pytest.fixture
def lake(tmp_path) -> LakeStore:
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    rows = bronze_rows(TRADES, trades(1_000))
    write_bronze(store, TRADES, rows, files=4)
    write_bronze(store, TRADES, rows.head(100))  # redelivered
    return store


def materialize(store: LakeStore, instance, **options) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [TRADES_SILVER],
        instance=instance,
        resources={"lake": LakeResource(data_root=store.root)},
        **options,
    )


def test_materializing_an_hour_writes_silver_with_metadata_and_passing_checks(lake):
    with dg.instance_for_test() as instance:
        result = materialize(lake, instance, partition_key=KEY)
        assert result.success
        (event,) = result.asset_materializations_for_node(TRADES_SILVER.node_def.name)
        assert event.partition == KEY
        metadata = event.metadata
        assert metadata["rows_read"].value == 1_100
        assert metadata["rows_written"].value == 1_000
        assert metadata["duplicates_removed"].value == 100
        assert metadata["files"].value == 2
        assert metadata["bytes"].value > 0
        assert "| ts_event_ns |" in metadata["preview"].value
        bronze = lake.list_files("bronze")
        assert metadata["input_files"].value == len(bronze)
        assert metadata["inputs"].value == {
            KEY: {"files": len(bronze), "sha256": files_digest({"": bronze})}
        }
        assert metadata["hour_written_rows"].value == 1_000
        checks = result.get_asset_check_evaluations()
        assert {c.check_name for c in checks} == set(SILVER.check_names)
        assert all(c.passed for c in checks)
        assert {c.partition for c in checks} == {KEY}
        reconciled = next(c for c in checks if c.check_name == "reconciles_with_bronze")
        assert reconciled.metadata["input_files_sha256"].value == files_digest({"": bronze})
    assert len(lake.list_files("silver/stocks/trades")) == 2


def test_a_range_run_rebuilds_every_hour_in_one_run(lake):
    two_hours_later = HOUR + dt.timedelta(hours=2)
    later = bronze_rows(TRADES, trades(300, seed=9, hour=two_hours_later), first_seq=5_000)
    write_bronze(lake, TRADES, later)
    with dg.instance_for_test() as instance:
        result = materialize(
            lake,
            instance,
            tags={
                "dagster/asset_partition_range_start": "2025-12-16-14:00",
                "dagster/asset_partition_range_end": "2025-12-16-16:00",
            },
        )
        assert result.success
        events = result.asset_materializations_for_node(TRADES_SILVER.node_def.name)
        partitions = {event.partition for event in events}
        assert partitions == {"2025-12-16-14:00", "2025-12-16-15:00", "2025-12-16-16:00"}
        written = {event.partition: event.metadata["hour_written_rows"].value for event in events}
        assert written == {
            "2025-12-16-14:00": 1_000,
            "2025-12-16-15:00": 0,
            "2025-12-16-16:00": 300,
        }
        for event in events:
            assert list(event.metadata["inputs"].value) == [event.partition]
            assert (
                event.metadata["rows_written"].value == 1_300 and event.metadata["hours"].value == 3
            )
        evaluations = result.get_asset_check_evaluations()
        assert all(c.passed for c in evaluations)
        assert sorted(c.partition for c in evaluations) == sorted(
            list(partitions) * len(SILVER.check_names)
        )
    hours = {path.split("/")[5] for path in lake.list_files("silver")}
    assert hours == {"hour=14", "hour=16"}


def test_each_hours_materialization_gives_its_rows_and_bytes_in_dagsters_names(lake):
    """The UI's "Row count" and size of the latest materialization are that hour's, in a
    range run too (where run-level metadata would repeat the run's totals on every hour)."""
    later = trades(300, seed=9, hour=HOUR + dt.timedelta(hours=1))
    write_bronze(lake, TRADES, bronze_rows(TRADES, later, first_seq=5_000))
    with dg.instance_for_test() as instance:
        result = materialize(
            lake,
            instance,
            tags={
                "dagster/asset_partition_range_start": KEY,
                "dagster/asset_partition_range_end": "2025-12-16-15:00",
            },
        )
        events = result.asset_materializations_for_node(TRADES_SILVER.node_def.name)
    by_hour = {event.partition: event.metadata for event in events}
    assert {h: m["dagster/row_count"].value for h, m in by_hour.items()} == {
        KEY: 1_000,
        "2025-12-16-15:00": 300,
    }
    for hour, metadata in by_hour.items():
        assert metadata["dagster/partition_row_count"].value == metadata["dagster/row_count"].value
        files = [p for p in lake.list_files("silver") if f"hour={hour[-5:-3]}" in p]
        stored = sum(len(lake.read_bytes(path)) for path in files)
        assert metadata["dagster/size_bytes"].value == stored > 0


def test_each_hours_checks_target_this_runs_materialization_of_it(lake):
    """Another run materialized an hour after this run did: its checks still target this run's."""
    with dg.instance_for_test() as instance:
        later = bronze_rows(TRADES, trades(50, seed=9, hour=HOUR + dt.timedelta(hours=1)))
        write_bronze(lake, TRADES, later, files=1)
        run = materialize(
            lake,
            instance,
            tags={
                "dagster/asset_partition_range_start": KEY,
                "dagster/asset_partition_range_end": "2025-12-16-15:00",
            },
        )
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=TRADES_SILVER.key, partition=KEY)
        )
        hours = [KEY, "2025-12-16-15:00"]
        targets = materialization_targets(instance, run.run_id, TRADES_SILVER.key, hours)
        mine = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=TRADES_SILVER.key), limit=10
        ).records
        expected = {r.partition_key: r.storage_id for r in mine if r.run_id == run.run_id}
        assert len(mine) == 3 and len(expected) == 2
        assert {p: t.storage_id for p, t in targets.items()} == expected
        assert {t.run_id for t in targets.values()} == {run.run_id}


def test_late_bronze_for_an_older_hour_triggers_silver_within_the_lookback():
    now = dt.datetime.now(dt.UTC)
    recent = (now - dt.timedelta(hours=30)).strftime("%Y-%m-%d-%H:00")
    too_old = (now - dt.timedelta(hours=60)).strftime("%Y-%m-%d-%H:00")
    bronze = dg.AssetKey(["bronze", "stocks", "trades"])
    silver = dg.AssetKey(["silver", "stocks", "trades"])
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        for partition in (recent, too_old):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=bronze, partition=partition)
            )
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
        requested = second.get_requested_partitions(silver)
        assert recent in requested
        assert too_old not in requested
        assert not second.get_requested_partitions(bronze)
