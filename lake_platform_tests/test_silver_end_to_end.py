"""NATS → ingest → `dagster asset materialize` for a Silver hour, twice: same bytes."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import nats
import polars as pl
import pytest

from lake_platform.ingest.jetstream import ensure_streams
from lake_platform_tests.bronze_files import HOUR_NS, trades
from lake_platform_tests.conftest import settings_env

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


async def publish_trades(url: str, messages: list[dict[str, object]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for message in messages:
        await js.publish(f"market.stocks.trades.{message['symbol']}", json.dumps(message).encode())
    await nc.close()


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_materialize_silver_hour_from_an_ingested_lake_twice(
    ingest_settings, tmp_path, monkeypatch
):
    messages = trades(2_000)
    asyncio.run(publish_trades(ingest_settings.nats_servers[0], messages + messages[:150]))
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, **settings_env(ingest_settings), "DAGSTER_HOME": str(home)}
    run([str(BIN / "lake-platform"), "ingest", "--until-idle"], env)

    materialize = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "lake_platform.definitions",
        "--select",
        "silver/stocks/trades",
        "--partition",
        "2025-12-16-14:00",
    ]
    output = run(materialize, env)
    assert "RUN_SUCCESS" in output
    silver = Path(ingest_settings.data_root, "silver")
    first = {path: path.read_bytes() for path in sorted(silver.rglob("*.parquet"))}
    assert len(first) == 2
    rows = pl.concat([pl.read_parquet(path) for path in first])
    assert rows.height == 2_000
    assert rows.get_column("event_id").n_unique() == 2_000
    assert (rows.get_column("ts_event_ns") // (3_600 * 10**9)).unique().to_list() == [
        HOUR_NS // (3_600 * 10**9)
    ]

    run(materialize, env)
    second = {path: path.read_bytes() for path in sorted(silver.rglob("*.parquet"))}
    assert second == first

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        evaluations = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [
                dg.AssetCheckKey(dg.AssetKey(["silver", "stocks", "trades"]), name)
                for name in ("sorted_by_ts_event_ns", "reconciles_with_bronze")
            ]
        )
    assert len(evaluations) == 2
    assert all(record.status.value == "SUCCEEDED" for record in evaluations.values())
