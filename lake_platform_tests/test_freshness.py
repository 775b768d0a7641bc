"""Bronze freshness: an asset the ingest reported recently passes its freshness check, one
it stopped reporting fails, and the sensor asks to re-check it once it is reported again."""

import time

import dagster as dg
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.bronze.assets import (
    BRONZE_FRESHNESS_CHECKS,
    FRESHNESS_LOWER_BOUND,
    bronze_freshness_sensor,
)

FRESH = dg.AssetKey(["bronze", "stocks", "trades"])
NEVER = dg.AssetKey(["bronze", "stocks", "quotes"])
STOPPED = dg.AssetKey(["bronze", "futures", "trades"])
HOURS = ("2025-12-16-14:00", "2025-12-16-15:00")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def checks_job() -> dg.JobDefinition:
    selection = dg.AssetSelection.checks(*BRONZE_FRESHNESS_CHECKS)
    job = dg.define_asset_job("bronze_freshness", selection=selection)
    return dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def(job.name)


def run_checks(instance: dg.DagsterInstance) -> dict[dg.AssetKey, bool]:
    result = checks_job().execute_in_process(instance=instance)
    return {e.asset_key: e.passed for e in result.get_asset_check_evaluations()}


def report(instance: dg.DagsterInstance, key: dg.AssetKey) -> None:
    for hour in HOURS:
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=hour))


def test_every_bronze_asset_has_a_freshness_check_and_the_sensor_runs_by_default():
    checked = {key.asset_key for key in BRONZE_FRESHNESS_CHECKS[0].check_keys}
    bronze = {
        key for key in defs.resolve_asset_graph().get_all_asset_keys() if key.path[0] == "bronze"
    }
    assert checked == bronze and len(bronze) == 7
    assert bronze_freshness_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.resolve_sensor_def(bronze_freshness_sensor.name) is not None


def test_a_reported_asset_is_fresh_and_a_silent_one_is_overdue(instance):
    report(instance, FRESH)
    long_ago = time.time() - FRESHNESS_LOWER_BOUND.total_seconds() - 3_600
    instance.report_runless_asset_event(
        dg.AssetObservation(
            STOPPED,
            partition=HOURS[0],
            metadata={"dagster/last_updated_timestamp": dg.TimestampMetadataValue(long_ago)},
        )
    )
    passed = run_checks(instance)
    assert len(passed) == 7
    assert passed[FRESH] is True
    assert passed[NEVER] is False and passed[STOPPED] is False
    assert sum(passed.values()) == 1


def test_the_sensor_rechecks_an_overdue_asset_once_it_is_reported_again(instance):
    context = dg.build_sensor_context(instance=instance, definitions=defs)
    first = bronze_freshness_sensor(context)
    assert isinstance(first, dg.RunRequest) and len(first.asset_check_keys) == 7  # never run
    run_checks(instance)
    assert isinstance(bronze_freshness_sensor(context), dg.SkipReason)  # all failed, no news
    report(instance, NEVER)
    again = bronze_freshness_sensor(context)
    assert isinstance(again, dg.RunRequest)
    assert [key.asset_key for key in again.asset_check_keys] == [NEVER]
    assert run_checks(instance)[NEVER] is True
