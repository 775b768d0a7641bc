"""`lake-platform status` on a real Dagster instance: two Bronze hours reported, Silver of
both rebuilt, one hour failing a blocking check."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lake_platform.commands.dagster_runs import DEFAULT_INSTANCE_CONFIG
from lake_platform.commands.status import CATCH_UP_GRACE, lake_status
from lake_platform.defs.bronze.assets import FRESHNESS_LOWER_BOUND
from lake_platform.defs.keys import bronze_key
from lake_platform.schemas import BY_TABLE
from lake_platform_tests.test_check_partitions import FAILING, materialize_silver, two_hours

BRONZE = "bronze/stocks/trades"
SILVER = "silver/stocks/trades"
BARS = "gold/stocks/bars_1m"


def report_bronze(instance: dg.DagsterInstance, partitions: list[str], rows: int) -> None:
    for partition in partitions:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(
                bronze_key(BY_TABLE["stocks/trades"]),
                partition=partition,
                metadata={"rows": rows},
            )
        )


@pytest.fixture
def recorded(tmp_path: Path):
    """A `DAGSTER_HOME` whose instance records the two hours; the partition keys."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DEFAULT_INSTANCE_CONFIG)
    store, bad, good = two_hours(tmp_path)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        report_bronze(instance, [bad, good], rows=41)
        runs = materialize_silver(store, instance, [bad, good], range_run=False)
        written = sum(
            event.materialization.metadata["hour_written_rows"].value
            for run in runs
            for event in run.get_asset_materialization_events()
        )
        yield instance, home, store, bad, good, written


def by_asset(instance: dg.DagsterInstance, now: dt.datetime) -> dict[str, object]:
    return {status.asset: status for status in lake_status(instance, hours=12, now=now)}


def test_status_counts_hours_rows_and_names_the_failing_check(recorded):
    instance, _, _, bad, good, written = recorded
    statuses = by_asset(instance, dt.datetime.now(dt.UTC))
    bronze, silver, bars = statuses[BRONZE], statuses[SILVER], statuses[BARS]
    assert (bronze.hours, bronze.rows, bronze.latest_hour) == (2, 82, good)
    assert (silver.hours, silver.rows, silver.latest_hour) == (2, written, good)
    assert silver.failing_checks == [f"{FAILING}@{bad}"]
    assert not silver.healthy and bronze.healthy
    assert (bars.hours, bars.rows, bars.stale) == (0, 0, [])  # upstream is fresh: not yet due
    assert statuses["bronze/futures/trades"].healthy  # never had data: not stale


def test_status_marks_what_is_stale_as_time_passes(recorded):
    instance, *_ = recorded
    later = dt.datetime.now(dt.UTC) + CATCH_UP_GRACE + dt.timedelta(minutes=1)
    statuses = by_asset(instance, later)
    assert statuses[BARS].stale and "2 hours behind" in statuses[BARS].stale[0]
    assert not statuses[BRONZE].stale
    much_later = dt.datetime.now(dt.UTC) + FRESHNESS_LOWER_BOUND + dt.timedelta(minutes=1)
    assert by_asset(instance, much_later)[BRONZE].stale


@pytest.mark.slow
def test_the_command_exits_1_with_json_naming_the_failure(recorded, tmp_path: Path):
    _, home, store, bad, _, _ = recorded
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATA_ROOT": store.root,
        "NATS_URL": "nats://127.0.0.1:1",  # nothing listens there: lag unknown, not fatal
    }
    command = [Path(sys.executable).with_name("lake-platform"), "status", "--hours", "12"]
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    status = json.loads(done.stdout)
    assert status["healthy"] is False and status["nats_error"]
    silver = next(asset for asset in status["assets"] if asset["asset"] == SILVER)
    assert silver["failing_checks"] == [f"{FAILING}@{bad}"]
    plain = subprocess.run(command, env=env, capture_output=True, text=True)
    assert plain.returncode == 1
    assert f"{FAILING}@{bad}" in plain.stdout and "NOT healthy" in plain.stdout
    empty = tmp_path / "empty-home"
    empty.mkdir()
    fresh = subprocess.run(
        command, env={**env, "DAGSTER_HOME": str(empty)}, capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert fresh.stdout.rstrip().endswith("healthy")


@pytest.mark.parametrize("hours", ["0", "-3", "nan", "1.5"])
def test_the_window_must_be_a_positive_whole_number(hours: str, capsys):
    from lake_platform.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["status", "--hours", hours])
    assert exit_.value.code != 0
    assert "--hours: must be a positive whole number" in capsys.readouterr().err
