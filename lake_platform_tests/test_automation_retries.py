"""Automation re-requests a failed hour, a bounded number of times, with backoff.

A failed run used to count as the hour's plan: the hour stayed stale until new upstream data
arrived. Two hours are requested; one run fails (a truncated Bronze file), the other succeeds.
Evaluations at chosen times then show the failed hour re-requested after each backoff, and no
more once the retries are spent, while the good hour is never requested again.
"""

import datetime as dt
from pathlib import Path

import dagster as dg
import fsspec
import pytest
import yaml
from dagster._core.storage.tags import WILL_RETRY_TAG
from dagster._core.test_utils import freeze_time

from lake_platform.definitions import defs
from lake_platform.defs.automation import (
    FIRST_RETRY_DELAY,
    MAX_JITTER,
    MAX_RETRIES,
    RETRY_PENDING_GRACE,
)
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze

REPOSITORY = Path(__file__).resolve().parents[1]
BRONZE = dg.AssetKey(["bronze", "stocks", "trades"])
SILVER = next(a for a in SILVER_ASSETS if a.key.path == ["silver", "stocks", "trades"])


class Automation:
    """Successive evaluations of the code location's automation, at chosen times."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self.cursor = None

    def silver_requested_at(self, when: dt.datetime) -> set[str]:
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=self.instance, evaluation_time=when, cursor=self.cursor
        )
        self.cursor = result.cursor
        return result.get_requested_partitions(SILVER.key)


@pytest.fixture
def failing_and_good_hour(tmp_path) -> tuple[LakeResource, str, str]:
    """A lake whose first of two recent hours holds a truncated Bronze file."""
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    first = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).replace(
        minute=0, second=0, microsecond=0
    )
    hours = first, first + dt.timedelta(hours=1)
    for seed, hour in enumerate(hours):
        write_bronze(store, TRADES, bronze_rows(TRADES, trades(30, seed=seed, hour=hour)))
    (bad_file,) = store.list_files(f"bronze/stocks/trades/symbol=SPY/{hour_folder(first)}")
    store.write_bytes(store.read_bytes(bad_file)[:100], bad_file)
    lake = LakeResource(data_root=str(tmp_path / "lake"))
    return lake, *(hour.strftime("%Y-%m-%d-%H:00") for hour in hours)


def run_silver(
    instance: dg.DagsterInstance, lake: LakeResource, partition: str, at: dt.datetime
) -> bool:
    """One run of the hour, as automation launches it, with Dagster's clock at `at` (the run
    ends then: backoff is measured from the end of the failed run)."""
    with freeze_time(at):
        return dg.materialize(
            [SILVER],
            instance=instance,
            partition_key=partition,
            resources={"lake": lake},
            raise_on_error=False,
        ).success


def report_bronze(instance: dg.DagsterInstance, partitions: list[str]) -> None:
    for partition in partitions:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=BRONZE, partition=partition)
        )


@pytest.mark.slow
def test_a_failed_hour_is_requested_again_with_backoff_until_the_bound(failing_and_good_hour):
    lake, failing, good = failing_and_good_hour
    start = dt.datetime.now(dt.UTC)
    with dg.instance_for_test() as instance:
        automation = Automation(instance)
        automation.silver_requested_at(start)
        report_bronze(instance, [failing, good])
        assert automation.silver_requested_at(start) == {failing, good}
        assert run_silver(instance, lake, good, start)
        assert not run_silver(instance, lake, failing, start)
        ended = start

        for retry in range(1, MAX_RETRIES + 1):
            delay = FIRST_RETRY_DELAY * 2 ** (retry - 1)
            early = ended + delay - dt.timedelta(seconds=1)
            assert automation.silver_requested_at(early) == set(), f"retry {retry} too early"
            due = ended + delay * MAX_JITTER
            assert automation.silver_requested_at(due) == {failing}, f"retry {retry}"
            assert not run_silver(instance, lake, failing, due)
            ended = due

        spent = ended + FIRST_RETRY_DELAY * 2**MAX_RETRIES * MAX_JITTER
        assert automation.silver_requested_at(spent) == set(), "retries spent"
        report_bronze(instance, [failing])
        assert automation.silver_requested_at(spent) == {failing}, "new upstream data"
        assert instance.get_materialized_partitions(SILVER.key) == {good}


@pytest.mark.slow
def test_a_failed_run_the_retry_daemon_will_retry_is_left_to_it(failing_and_good_hour):
    """With run retries on, Dagster marks the failed run to be retried by its daemon: the
    automation does not request the hour beside it, unless no retry came within the grace."""
    lake, failing, _ = failing_and_good_hour
    start = dt.datetime.now(dt.UTC)
    retries = {"run_retries": {"enabled": True, "max_retries": 2}}
    with dg.instance_for_test(overrides=retries) as instance:
        automation = Automation(instance)
        automation.silver_requested_at(start)
        report_bronze(instance, [failing])
        assert automation.silver_requested_at(start) == {failing}
        assert not run_silver(instance, lake, failing, start)
        (run,) = instance.get_runs()
        assert run.tags[WILL_RETRY_TAG] == "true"
        backoff_passed = start + FIRST_RETRY_DELAY * MAX_JITTER
        assert backoff_passed < start + RETRY_PENDING_GRACE
        assert automation.silver_requested_at(backoff_passed) == set()
        no_retry_came = start + RETRY_PENDING_GRACE
        assert automation.silver_requested_at(no_retry_came) == {failing}


def test_the_local_instance_retries_failed_runs_as_the_deployment_does(tmp_path):
    """`make run`'s instance had no run retries: one transient failure stayed until
    automation's next request (and before that, until new upstream data)."""
    (tmp_path / "dagster.yaml").write_text((REPOSITORY / "dagster.yaml").read_text())
    local = dg.DagsterInstance.from_config(str(tmp_path)).get_settings("run_retries")
    assert local == {"enabled": True, "max_retries": 2, "retry_on_asset_or_op_failure": True}
    deployment = yaml.safe_load((REPOSITORY / "docker" / "dagster.yaml").read_text())
    assert deployment["run_retries"] == local
