"""Nothing is lost: the ingest killed at every step of a commit, and nats-server restarted."""

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import nats
import nats.js.errors
import polars as pl
import pytest

from lake_platform.ingest.failpoints import FAILPOINT_ENV
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import settings_env
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.session import build_session, publish, read_table

pytestmark = pytest.mark.slow


def ingest_command(settings, *args: str, failpoint: str | None = None, **options):
    env = {**os.environ, **settings_env(settings)}
    env.pop("DAGSTER_HOME", None)
    if failpoint:
        env[FAILPOINT_ENV] = failpoint
    return subprocess.Popen(
        [sys.executable, "-m", "lake_platform.cli", "ingest", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def assert_everything_landed(settings, session) -> None:
    root = settings.data_root
    for table, event_ids in session.expected_event_ids().items():
        landed = set(read_table(root, f"bronze/{table}").get_column("event_id").to_list())
        assert landed == event_ids, table
    quarantine = read_table(root, "_quarantine")
    assert set(quarantine.get_column("payload").to_list()) == {p for _, p, _ in session.bad}


@pytest.mark.parametrize("failpoint", ["before_write", "after_write", "after_ledger"])
def test_killed_mid_commit_then_restarted_loses_nothing(ingest_settings, failpoint):
    session = build_session(events_per_schema=20)
    asyncio.run(publish(ingest_settings.nats_servers[0], session))

    crashed = ingest_command(ingest_settings, "--until-idle", failpoint=failpoint)
    crashed.communicate(timeout=120)
    assert crashed.returncode == -signal.SIGKILL

    restarted = ingest_command(ingest_settings, "--until-idle", "--max-seconds", "180")
    out, err = restarted.communicate(timeout=240)
    assert restarted.returncode == 0, err
    assert "ingested" in out
    assert_everything_landed(ingest_settings, session)


def test_sigterm_flushes_and_acks_everything(ingest_settings):
    session = build_session(events_per_schema=10)
    asyncio.run(publish(ingest_settings.nats_servers[0], session))
    settings = dataclasses.replace(ingest_settings, bronze_max_age_s=600.0, gold_max_age_s=600.0)
    service = ingest_command(settings)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _consumer_caught_up(settings):
        time.sleep(0.2)
    service.send_signal(signal.SIGTERM)
    out, err = service.communicate(timeout=60)
    assert service.returncode == 0, err
    assert f"{len(session.good) + len(session.bad)} events" in out
    assert_everything_landed(settings, session)
    assert asyncio.run(_pending(settings.nats_servers[0])) == 0


def _consumer_caught_up(settings) -> bool:
    try:
        return asyncio.run(_undelivered(settings.nats_servers[0])) == 0
    except Exception:
        return False


async def _undelivered(url: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        infos = [await js.consumer_info(s, "lake-bronze") for s in ("MARKET", "SIGNALS")]
        return sum(info.num_pending for info in infos)
    finally:
        await nc.close()


async def _pending(url: str) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        infos = [await js.consumer_info(s, "lake-bronze") for s in ("MARKET", "SIGNALS")]
        return sum(info.num_pending + info.num_ack_pending for info in infos)
    finally:
        await nc.close()


def test_nats_server_restart_mid_ingest(ingest_settings, nats_server):
    url = ingest_settings.nats_servers[0]
    before, after = 3_000, 2_000
    trades = SAMPLES["stocks.trades"]

    async def publish_trades(first: int, count: int) -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        for seq in range(first, first + count):
            message = {**trades, "seq": seq, "ts_event_ns": time.time_ns()}
            for _ in range(100):  # streams are recovered a moment after a restart
                try:
                    await js.publish("market.stocks.trades.SPY", json.dumps(message).encode())
                    break
                except nats.js.errors.NoStreamResponseError:
                    await asyncio.sleep(0.1)
        await nc.close()

    async def scenario() -> IngestService:
        stop = asyncio.Event()
        service = IngestService(
            ingest_settings, LakeStore.from_settings(ingest_settings), writer=writer_name("t")
        )
        running = asyncio.create_task(service.run(stop=stop))
        await publish_trades(0, before)
        await asyncio.to_thread(nats_server.restart)
        await publish_trades(before, after)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and _landed_seqs(ingest_settings) < before + after:
            await asyncio.sleep(0.5)
        stop.set()
        await running
        return service

    asyncio.run(scenario())
    assert _landed_seqs(ingest_settings) == before + after


def _landed_seqs(settings) -> int:
    rows = read_table(settings.data_root, "bronze/stocks/trades")
    return rows.select(pl.col("seq").n_unique()).item() if rows.height else 0


def test_storage_outage_acks_nothing_and_retries_until_it_lands(ingest_settings, tmp_path):
    blocker = tmp_path / "unmounted"
    blocker.write_text("a file where the lake's folder should be: every write fails")
    settings = dataclasses.replace(
        ingest_settings,
        data_root=str(blocker / "lake"),
        bronze_max_age_s=0.5,
        gold_max_age_s=0.5,
    )
    session = build_session(events_per_schema=4)
    asyncio.run(publish(settings.nats_servers[0], session))

    async def scenario() -> IngestService:
        stop = asyncio.Event()
        service = IngestService(settings, LakeStore.from_settings(settings), writer="t")
        running = asyncio.create_task(service.run(stop=stop))
        while service.stats.storage_errors < 2:
            await asyncio.sleep(0.1)
        assert service.stats.files == 0
        assert await _pending(settings.nats_servers[0]) == len(session.good) + len(session.bad)
        blocker.unlink()
        while service.stats.rows < len(session.good):
            await asyncio.sleep(0.2)
        stop.set()
        await running
        return service

    service = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert f"cannot write {blocker}/lake/" in (service.stats.last_error or "")
    assert asyncio.run(_pending(settings.nats_servers[0])) == 0
    assert_everything_landed(settings, session)
