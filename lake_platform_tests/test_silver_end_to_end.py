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
from lake_platform_tests.samples import SAMPLES

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


async def publish(url: str, subjects_and_messages: list[tuple[str, dict[str, object]]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for subject, message in subjects_and_messages:
        await js.publish(subject, json.dumps(message).encode())
    await nc.close()


def signals(count: int) -> list[tuple[str, dict[str, object]]]:
    sample = SAMPLES["levels.signals"]
    return [
        ("levels.signals.SPY", {**sample, "ts_event_ns": HOUR_NS + i * 10**9}) for i in range(count)
    ]


def dagster_materialize(selection: str, *partitions: str) -> list[str]:
    module = ["-m", "lake_platform.definitions"]
    return [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        *module,
        "--select",
        selection,
        *partitions,
    ]


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def test_materialize_silver_hour_from_an_ingested_lake_twice(
    ingest_settings, tmp_path, monkeypatch
):
    messages = trades(2_000)
    published = [(f"market.stocks.trades.{m['symbol']}", m) for m in messages + messages[:150]]
    asyncio.run(publish(ingest_settings.nats_servers[0], published + signals(30)))
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, **settings_env(ingest_settings), "DAGSTER_HOME": str(home)}
    run([str(BIN / "lake-platform"), "ingest", "--until-idle"], env)

    materialize = dagster_materialize("silver/stocks/trades", "--partition", "2025-12-16-14:00")
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

    gold = dagster_materialize(
        "gold/levels/signals,gold/stocks/bars_1m", "--partition", "2025-12-16-14:00"
    )
    assert "RUN_SUCCESS" in run(gold, env)
    flattened = pl.read_parquet(
        Path(ingest_settings.data_root, "gold/levels/signals").rglob("*.parquet").__next__()
    )
    assert flattened.height == 30 * len(SAMPLES["levels.signals"]["levels"])
    bars = pl.concat(
        [
            pl.read_parquet(p)
            for p in Path(ingest_settings.data_root, "gold/stocks").rglob("*.parquet")
        ]
    )
    assert bars.get_column("trade_count").sum() == 2_000

    day = dagster_materialize(
        "silver/stocks/trades", "--partition-range", "2025-12-16-13:00...2025-12-16-15:00"
    )
    assert "RUN_SUCCESS" in run(day, env)
    after_range = {path: path.read_bytes() for path in sorted(silver.rglob("*.parquet"))}
    assert after_range == first

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
