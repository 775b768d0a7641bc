"""Blocking checks per hour: a failed Silver hour blocks its own Gold hour and no other."""

import datetime as dt

import dagster as dg
import fsspec
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.keys import derived_key
from lake_platform.defs.partitions import HOURLY
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze

SILVER_TRADES = next(a for a in SILVER_ASSETS if a.key.path == ["silver", "stocks", "trades"])
CHECKS = SILVER_TABLES["stocks/trades"].check_names
FAILING = "within_partition_hour"


def two_hours(tmp_path) -> tuple[LakeStore, str, str]:
    """A lake whose Bronze hour A holds a stray row of another hour (Silver's
    `within_partition_hour` fails there) and whose next hour B is good; their partition keys."""
    bad = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=4)).replace(
        minute=0, second=0, microsecond=0
    )
    good = bad + dt.timedelta(hours=1)
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    for seed, hour in ((1, bad), (2, good)):
        write_bronze(store, TRADES, bronze_rows(TRADES, trades(40, seed=seed, hour=hour)))
    stray = bronze_rows(TRADES, trades(1, seed=3, hour=bad - dt.timedelta(hours=2)))
    folder = f"bronze/stocks/trades/symbol=SPY/{hour_folder(bad)}"
    store.write_parquet(stray, f"{folder}/part-stray.parquet")
    return (
        store,
        HOURLY.get_partition_key_for_timestamp(bad.timestamp()),
        HOURLY.get_partition_key_for_timestamp(good.timestamp()),
    )


def materialize_silver(store: LakeStore, instance, partitions: list[str], range_run: bool):
    """Silver trades for `partitions`: one run each, or one single-run backfill of the range."""
    runs = (
        [
            {
                "tags": {
                    "dagster/asset_partition_range_start": partitions[0],
                    "dagster/asset_partition_range_end": partitions[-1],
                }
            }
        ]
        if range_run
        else [{"partition_key": partition} for partition in partitions]
    )
    return [
        dg.materialize(
            [SILVER_TRADES],
            instance=instance,
            resources={"lake": LakeResource(data_root=store.root)},
            raise_on_error=False,
            **run,
        )
        for run in runs
    ]


def check_statuses(instance: dg.DagsterInstance, name: str) -> dict[str, set[str]]:
    """The hours of a Silver check by status, as the UI's partition view reads them."""
    key = dg.AssetCheckKey(SILVER_TRADES.key, name)
    state = instance.event_log_storage.get_asset_check_state([(key, HOURLY)])[key]
    return {
        status.value: set(subset.subset_value.get_partition_keys())
        for status, subset in state.subsets.items()
    }


@pytest.mark.parametrize("range_run", [False, True], ids=["hour_by_hour", "range_run"])
def test_gold_runs_for_the_good_hour_only(tmp_path, range_run):
    store, bad, good = two_hours(tmp_path)
    with dg.instance_for_test() as instance:
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
        runs = materialize_silver(store, instance, [bad, good], range_run)
        evaluations = [e for run in runs for e in run.get_asset_check_evaluations()]
        for name in CHECKS:
            of_check = {e.partition: e.passed for e in evaluations if e.check_name == name}
            assert of_check == {bad: name != FAILING, good: True}, name
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert result.get_requested_partitions(derived_key(GOLD_BARS.target)) == {good}
        assert check_statuses(instance, FAILING)["FAILED"] == {bad}
        assert check_statuses(instance, FAILING)["SUCCEEDED"] == {good}
        assert check_statuses(instance, "event_id_unique")["SUCCEEDED"] == {bad, good}
