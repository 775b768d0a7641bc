"""Automation of Silver and Gold: an upstream update is never lost, and no run repeats.

Two ordinary moments of a live ingest made `AutomationCondition.eager()` forget an update
for good (lake_platform/defs/automation.py): Bronze reported while the hour's run is running,
and Bronze reported within the same sensor interval as the hour's materialization.
"""

import datetime as dt
from typing import TYPE_CHECKING

import dagster as dg
import fsspec
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.keys import derived_key
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.tables import GOLD_BARS
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform.tables.lake_tables import LakeTables
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze

if TYPE_CHECKING:
    from dagster._core.definitions.declarative_automation.automation_condition_tester import (
        EvaluateAutomationConditionsResult,
    )

BRONZE = dg.AssetKey(["bronze", "stocks", "trades"])
SILVER = next(a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"])
BARS = next(a for a in GOLD_ASSETS if a.key == derived_key(GOLD_BARS.target))


class LakeReportingBronzeMidRun(LakeResource):
    """The lake, with an ingest reporting a Bronze batch of the run's hours as the run starts
    (after the run was planned, before it lists Bronze)."""

    partitions: list[str]

    def tables(self) -> LakeTables:
        instance = dg.DagsterInstance.get()
        for partition in self.partitions:
            instance.report_runless_asset_event(
                dg.AssetMaterialization(asset_key=BRONZE, partition=partition)
            )
        return super().tables()


@pytest.fixture
def hours(tmp_path) -> tuple[LakeStore, list[str]]:
    """A Bronze lake with two recent hours of trades, reported to the instance."""
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    partitions = []
    for hour in (now - dt.timedelta(hours=3), now - dt.timedelta(hours=2)):
        write_bronze(store, TRADES, bronze_rows(TRADES, trades(20, hour=hour)))
        assert store.list_files(f"bronze/stocks/trades/symbol=SPY/{hour_folder(hour)}")
        partitions.append(hour.strftime("%Y-%m-%d-%H:00"))
    return store, partitions


def evaluate(cursor: object | None = None) -> "EvaluateAutomationConditionsResult":
    return dg.evaluate_automation_conditions(
        defs=defs, instance=dg.DagsterInstance.get(), cursor=cursor
    )


def report_bronze(partitions: list[str]) -> None:
    for partition in partitions:
        dg.DagsterInstance.get().report_runless_asset_event(
            dg.AssetMaterialization(asset_key=BRONZE, partition=partition)
        )


def materialize(assets: list, lake: LakeResource, partition: str) -> None:
    result = dg.materialize(
        assets, instance=dg.DagsterInstance.get(), partition_key=partition, resources={"lake": lake}
    )
    assert result.success


@pytest.mark.parametrize("when", ["during_the_run", "after_the_run_same_interval"])
def test_bronze_reported_around_a_run_requests_that_hour_again(hours, when):
    store, partitions = hours
    with dg.instance_for_test():
        initial = evaluate()
        report_bronze(partitions)
        first = evaluate(initial.cursor)
        assert first.get_requested_partitions(SILVER.key) == set(partitions)
        earlier, late = partitions
        lake = LakeResource(data_root=store.root)
        late_lake = (
            LakeReportingBronzeMidRun(data_root=store.root, partitions=[late])
            if when == "during_the_run"
            else lake
        )
        materialize([SILVER], lake, earlier)
        materialize([SILVER], late_lake, late)
        if when == "after_the_run_same_interval":
            report_bronze([late])
        second = evaluate(first.cursor)
        assert second.get_requested_partitions(SILVER.key) == {late}
        materialize([SILVER], lake, late)
        third = evaluate(second.cursor)
        assert not third.get_requested_partitions(SILVER.key)


def test_nothing_is_requested_twice_and_gold_follows_its_own_run(hours):
    store, partitions = hours
    lake = LakeResource(data_root=store.root)
    with dg.instance_for_test():
        first = evaluate()
        report_bronze(partitions)
        for partition in partitions:
            materialize([SILVER, BARS], lake, partition)
        second = evaluate(first.cursor)
        assert not second.get_requested_partitions(SILVER.key)
        assert not second.get_requested_partitions(BARS.key), "Gold read the Silver of its run"
        materialize([SILVER], lake, partitions[0])
        third = evaluate(second.cursor)
        assert third.get_requested_partitions(BARS.key) == {partitions[0]}
        assert not third.get_requested_partitions(SILVER.key)


def test_a_run_canceled_before_it_read_bronze_does_not_hide_the_update(hours):
    """Both hours get a plan after their Bronze: the canceled one is requested, the one whose
    run succeeded is not."""
    store, partitions = hours
    canceled, done = partitions
    with dg.instance_for_test():
        instance = dg.DagsterInstance.get()
        first = evaluate()
        report_bronze(partitions)
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={SILVER.key})
        run = instance.create_run_for_job(
            job, tags={"dagster/partition": canceled}, asset_selection=frozenset({SILVER.key})
        )
        assert instance.get_latest_planned_materialization_info(SILVER.key, canceled) is not None
        instance.report_run_canceled(run)
        materialize([SILVER], LakeResource(data_root=store.root), done)
        second = evaluate(first.cursor)
        assert second.get_requested_partitions(SILVER.key) == {canceled}
