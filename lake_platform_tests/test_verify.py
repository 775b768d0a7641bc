"""Re-verifying stored hours without rebuilding them: the `verify_stored_files` checks, their
job (from Dagster's CLI too) and `lake-platform verify`, on a real Dagster instance."""

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lake_platform.cli import main
from lake_platform.definitions import defs
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.defs.verification import VERIFY_CHECK, VERIFY_JOB
from lake_platform.derived.reverify import READABLE, verify_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.tables.tags import tag_current
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import committed_files, tables_of

DAGSTER = Path(sys.executable).with_name("dagster")
SILVER = SILVER_TABLES["stocks/trades"]
TRADES_SILVER = next(a for a in SILVER_ASSETS if a.key.path == ["silver", "stocks", "trades"])
CHECK = dg.AssetCheckKey(TRADES_SILVER.key, VERIFY_CHECK)
GOOD, BAD = "2025-12-16-14:00", "2025-12-16-15:00"
RANGE = {
    "dagster/asset_partition_range_start": GOOD,
    "dagster/asset_partition_range_end": BAD,
}


@pytest.fixture
def lake(tmp_path, monkeypatch) -> LakeStore:
    """Two hours of Silver trades rebuilt and passing their inline checks; the Dagster
    instance of `DAGSTER_HOME` and the lake of `DATA_ROOT` are the test's."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    store = LakeStore.from_settings(LakeResource().settings())
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(400)))
    later = trades(300, seed=9, hour=HOUR + dt.timedelta(hours=1))
    write_bronze(store, TRADES, bronze_rows(TRADES, later, first_seq=5_000))
    with dg.DagsterInstance.get() as instance:
        built = dg.materialize(
            [TRADES_SILVER], instance=instance, resources={"lake": LakeResource()}, tags=RANGE
        )
    assert built.success
    return store


def bad_hour_file(store: LakeStore) -> str:
    """A stored Silver file of the bad hour."""
    return next(path for path in store.list_files(SILVER.target) if "hour=15" in path)


def rewrite_uncompressed(store: LakeStore, path: str) -> None:
    """The same rows, written without compression: every row check passes, the codec fails."""
    rows = pl.read_parquet(store.read_bytes(path))
    local = Path(store.full_path(path))
    rows.write_parquet(local, compression="uncompressed")


def verify_in_dagster(instance: dg.DagsterInstance, tags=RANGE) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def(VERIFY_JOB).get_subset(asset_check_selection={CHECK})
    return job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)


def recorded_by_hour(instance: dg.DagsterInstance) -> dict[str, str]:
    """The latest recorded status of the verification of each hour."""
    history = instance.event_log_storage.get_asset_check_execution_history(CHECK, limit=50)
    latest: dict[str, str] = {}
    for record in history:  # newest first
        latest.setdefault(record.partition, record.status.value)
    return latest


def test_the_job_records_a_pass_and_a_failure_per_hour_of_the_stored_files(lake):
    rewrite_uncompressed(lake, bad_hour_file(lake))
    with dg.DagsterInstance.get() as instance:
        result = verify_in_dagster(instance)
        assert result.success
        by_hour = {e.partition: e for e in result.get_asset_check_evaluations()}
        assert set(by_hour) == {GOOD, BAD}
        assert by_hour[GOOD].passed
        expected = f"silver/stocks/trades {GOOD} ok: 2 files (2 input files)"
        assert by_hour[GOOD].description == expected
        assert not by_hour[BAD].passed
        assert by_hour[BAD].metadata["failed_checks"].value == ["zstd_compressed"]
        assert "is UNCOMPRESSED, not ZSTD" in by_hour[BAD].description
        assert recorded_by_hour(instance) == {GOOD: "SUCCEEDED", BAD: "FAILED"}
        materialized = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=TRADES_SILVER.key), limit=10
        ).records
        latest = {record.partition_key: record.storage_id for record in materialized}
        targets = {hour: e.target_materialization_data.storage_id for hour, e in by_hour.items()}
        assert targets == latest


def test_an_unreadable_stored_file_fails_its_hour_with_its_name(lake):
    bad = bad_hour_file(lake)
    body = lake.read_bytes(bad)
    Path(lake.full_path(bad)).write_bytes(body[: len(body) // 2])
    with dg.DagsterInstance.get() as instance:
        result = verify_in_dagster(instance)
        evaluations = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert evaluations[GOOD].passed
    assert not evaluations[BAD].passed
    assert evaluations[BAD].metadata["failed_checks"].value == [READABLE]
    assert f"{bad}: not readable Parquet" in evaluations[BAD].description


def test_reconciliation_compares_with_the_inputs_as_stored_now(lake):
    """Bronze that arrived after the rebuild makes the hour stale: its re-verification says
    so (the rebuild's own input totals are not stored)."""
    late = trades(5, seed=3)
    write_bronze(lake, TRADES, bronze_rows(TRADES, late, first_seq=9_000))
    verification = verify_hour(tables_of(lake), SILVER, HOUR)
    assert list(verification.failures) == ["reconciles_with_bronze"]
    assert "is 400 but" in verification.failures["reconciles_with_bronze"].message
    assert verify_hour(tables_of(lake), SILVER, HOUR + dt.timedelta(hours=1)).passed


def test_a_rebuild_run_does_not_verify_again_what_it_just_checked(lake):
    """Dagster adds the verification to every run of its asset: there, it records nothing."""
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.get() as instance:
        result = job.execute_in_process(
            instance=instance, asset_selection=[TRADES_SILVER.key], partition_key=GOOD
        )
    names = {e.check_name for e in result.get_asset_check_evaluations()}
    assert names == set(SILVER.check_names)


def test_a_run_without_hours_is_refused_in_one_line(lake):
    with dg.DagsterInstance.get() as instance:
        result = verify_in_dagster(instance, tags={})
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "needs hours" in failure.step_failure_data.error.message
    assert not result.get_asset_check_evaluations()


def test_the_cli_prints_a_line_per_hour_and_exits_1_on_a_failure(lake, capsys):
    assert main(["verify", "--date", "2025-12-16", "--table", "stocks/trades"]) == 0
    out = capsys.readouterr().out.splitlines()
    hours = [line for line in out if line.startswith("silver/stocks/trades 2025-12-16-")]
    assert len(hours) == 24 and all(" ok: " in line for line in hours)
    assert out[-1].startswith("verified 2025-12-16 (2025-12-16-00:00 … 2025-12-16-23:00): 24 ")

    rewrite_uncompressed(lake, bad_hour_file(lake))
    assert main(["verify", "--date", "2025-12-16", "--table", "silver/stocks/trades"]) == 1
    out = capsys.readouterr().out.splitlines()
    (failed,) = [line for line in out if "FAILED" in line]
    assert failed.startswith(f"silver/stocks/trades {BAD} FAILED zstd_compressed: ")
    assert "24 table-hours, 1 failed" in out[-1]
    with dg.DagsterInstance.get() as instance:
        assert recorded_by_hour(instance)[BAD] == "FAILED"


def test_the_cli_refuses_an_unknown_table_in_one_line(lake, capsys):
    assert main(["verify", "--date", "2025-12-16", "--table", "silver/nope"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("lake-platform: error: no derived table 'silver/nope'; known: ")


@pytest.mark.slow
def test_dagsters_cli_runs_the_verification_for_a_range_of_hours(lake, tmp_path):
    rewrite_uncompressed(lake, bad_hour_file(lake))
    command = [DAGSTER, "job", "execute", "-m", "lake_platform.definitions", "-j", VERIFY_JOB]
    result = subprocess.run(
        [*command, "--tags", json.dumps(RANGE)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    with dg.DagsterInstance.get() as instance:
        recorded = recorded_by_hour(instance)
    assert recorded == {GOOD: "SUCCEEDED", BAD: "FAILED"}


def test_the_cli_verifies_a_tagged_version_after_a_late_rebuild(lake, capsys):
    """`--as-of` checks the files of the snapshot current at a tag: after late Bronze and a
    rebuild of the hour, a damaged new file fails the current version only, while the tagged
    one's own files still pass (only its reconciliation, against Bronze as it is now, fails);
    an unknown tag is one line."""
    tag_current(tables_of(lake).table(SILVER), "before-late-data")
    late = trades(50, seed=11)
    write_bronze(lake, TRADES, bronze_rows(TRADES, late, first_seq=90_000))
    with dg.DagsterInstance.get() as instance:
        rebuilt = dg.materialize(
            [TRADES_SILVER],
            instance=instance,
            resources={"lake": LakeResource()},
            partition_key=GOOD,
        )
    assert rebuilt.success
    good_hour = dt.datetime.strptime(GOOD, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.UTC)
    (new_file,) = committed_files(lake, SILVER, good_hour)["symbol=SPY"]
    rewrite_uncompressed(lake, new_file)
    day = ["verify", "--date", "2025-12-16", "--table", "stocks/trades"]

    assert main(day) == 1
    (failed,) = [line for line in capsys.readouterr().out.splitlines() if "FAILED" in line]
    assert failed.startswith(f"silver/stocks/trades {GOOD} FAILED zstd_compressed: ")

    assert main([*day, "--as-of", "before-late-data"]) == 1
    (failed,) = [line for line in capsys.readouterr().out.splitlines() if "FAILED" in line]
    assert failed.startswith(f"silver/stocks/trades {GOOD} FAILED reconciles_with_bronze: ")

    assert main([*day, "--as-of", "no-such-tag"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("lake-platform: error: ") and "no-such-tag" in line
