"""Runs of the derived assets execute their steps in the run process (DERIVED_EXECUTOR).

The run is executed the way a queued run's worker executes it: the code location's
`__ASSET_JOB`, reconstructed from `lake_platform.definitions`, with the executor it declares
(`dg.materialize` would always run in process and prove nothing).
"""

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import fsspec
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from lake_platform.commands.dagster_runs import RANGE_END_TAG, RANGE_START_TAG
from lake_platform.definitions import defs
from lake_platform.defs.executor import DERIVED_EXECUTOR
from lake_platform.defs.keys import derived_key, silver_key
from lake_platform.defs.partitions import partition_key_for
from lake_platform.defs.verification import VERIFY_CHECK
from lake_platform.derived.tables import GOLD_BARS
from lake_platform.storage import LakeStore
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze

HOURS = [HOUR, HOUR + dt.timedelta(hours=1)]
ASSETS = [silver_key(TRADES), derived_key(GOLD_BARS.target)]
ASSET_JOB = "__ASSET_JOB"


def test_the_code_location_declares_the_derived_executor():
    assert defs.resolve_implicit_global_asset_job_def().executor_def is DERIVED_EXECUTOR


@pytest.fixture
def lake_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Bronze trades for two hours, in the lake the code location's resource reads."""
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    for index, hour in enumerate(HOURS):
        write_bronze(store, TRADES, bronze_rows(TRADES, trades(200, seed=index, hour=hour)))
    monkeypatch.setenv("DATA_ROOT", store.root)
    monkeypatch.setenv("USE_S3", "false")
    return store.root


def test_a_run_of_two_hours_of_silver_and_gold_executes_every_step_in_the_run_process(
    lake_root: str,
):
    repository = ReconstructableRepository.for_module("lake_platform.definitions", "defs")
    job = repository.get_reconstructable_job(ASSET_JOB)
    first, last = (partition_key_for(hour) for hour in HOURS)
    with dg.instance_for_test() as instance:
        result = dg.execute_job(
            job,
            instance,
            tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
            asset_selection=ASSETS,
        )
        assert result.success
        events = [e for e in instance.all_logs(result.run_id) if e.dagster_event]
    materialized = {
        (e.get_dagster_event().asset_key, e.get_dagster_event().partition)
        for e in events
        if e.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    }
    assert materialized == {(key, hour) for key in ASSETS for hour in (first, last)}
    step_starts = [e for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_START]
    asset_steps = {"__".join(key.path) for key in ASSETS}
    verify_steps = {f"{step}_{VERIFY_CHECK}" for step in asset_steps}  # record nothing here
    assert {e.step_key for e in step_starts} == asset_steps | verify_steps
    assert {e.get_dagster_event().pid for e in step_starts} == {os.getpid()}
    assert not [e for e in events if e.dagster_event_type.value.startswith("STEP_WORKER")]
    assert any((e.message or "").startswith("Executing steps in process") for e in events)
