"""The ingest on the real S3 server (SeaweedFS): an outage mid-ingest, wrong credentials or a
missing bucket, and an endpoint where nothing listens or that answers 500."""

import asyncio
import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from lake_platform.embedded_nats import HOST
from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.ingest.ledger import read_entries
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import s3_settings, settings_env
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.servers import S3Server
from lake_platform_tests.status_server import answering

pytestmark = pytest.mark.slow
HOUR_NS = 3_600 * 10**9


@pytest.fixture
def own_s3_server(tmp_path: Path) -> Iterator[S3Server]:
    """An S3 server of this test alone: it is killed and restarted."""
    with S3Server.start(tmp_path / "s3") as server:
        yield server


async def publish_trades(url: str, seqs: range) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for seq in seqs:
        message = {**SAMPLES["stocks.trades"], "seq": seq, "ts_event_ns": time.time_ns()}
        symbol = ("SPY", "QQQ", "IWM")[seq % 3]
        message["symbol"] = symbol
        await js.publish(f"market.stocks.trades.{symbol}", json.dumps(message).encode())
    await nc.close()


def landed_seqs(store: LakeStore) -> list[int]:
    """`seq` of every Bronze row named by a ledger entry (duplicates kept)."""
    now = time.time_ns()
    files = [f.path for e in read_entries(store, now - 2 * HOUR_NS, now) for f in e.files]
    assert sorted(files) == store.list_files("bronze")
    return store.read_parquet(files, ["seq"]).get_column("seq").to_list() if files else []


def test_s3_outage_mid_ingest_loses_nothing_and_never_stops(own_s3_server, ingest_settings):
    own_s3_server.create_bucket("outage")
    settings = dataclasses.replace(
        s3_settings(own_s3_server, "outage"),
        nats_servers=ingest_settings.nats_servers,
        bronze_max_age_s=0.5,
    )
    url = settings.nats_servers[0]
    store = LakeStore.from_settings(settings)

    async def scenario() -> IngestService:
        stop = asyncio.Event()
        service = IngestService(
            settings, LakeStore.from_settings(settings), writer=writer_name("t")
        )
        running = asyncio.create_task(service.run(stop=stop))
        await publish_trades(url, range(0, 300))
        while service.stats.rows < 300:
            await asyncio.sleep(0.1)
        await asyncio.to_thread(own_s3_server.kill)
        await publish_trades(url, range(300, 600))
        while service.stats.storage_errors < 2:
            assert not running.done()
            await asyncio.sleep(0.1)
        await publish_trades(url, range(600, 700))
        await asyncio.to_thread(own_s3_server.restart)
        await publish_trades(url, range(700, 800))
        while service.stats.rows < 800:
            assert not running.done()
            await asyncio.sleep(0.2)
        stop.set()
        await running
        return service

    service = asyncio.run(asyncio.wait_for(scenario(), 240))
    assert service.stats.storage_errors >= 2
    assert set(landed_seqs(store)) == set(range(800))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def cli_ingest(settings: LakeSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATA_ROOT": settings.data_root,
        "USE_S3": "true",
        "S3_ENDPOINT": settings.s3_endpoint or "",
        "S3_ACCESS_KEY": settings.s3_access_key or "",
        "S3_SECRET_KEY": settings.s3_secret_key or "",
        "S3_REGION": "us-east-1",
        "NATS_URL": settings.nats_servers[0],
        "BRONZE_MAX_AGE_S": "0.5",
    }
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "lake_platform.cli", "ingest", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("problem", ["wrong access key", "wrong secret key", "missing bucket"])
def test_wrong_credentials_or_bucket_fail_at_start_in_one_line_naming_endpoint_and_bucket(
    s3_server, ingest_settings, problem
):
    bucket = "missing" if problem == "missing bucket" else "guarded"
    if problem != "missing bucket":
        s3_server.create_bucket(bucket)
    wrong = "not-the-secret-" + "x" * 12
    key = {"wrong access key": "s3_access_key", "wrong secret key": "s3_secret_key"}.get(problem)
    settings = dataclasses.replace(
        s3_settings(s3_server, bucket),
        nats_servers=ingest_settings.nats_servers,
        **({key: wrong} if key else {}),
    )
    result = cli_ingest(settings, "--until-idle")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("lake-platform: error: ")
    assert bucket in result.stderr and s3_server.endpoint in result.stderr
    shown = result.stderr + result.stdout
    assert wrong not in shown and s3_server.secret_key not in shown


@pytest.mark.parametrize("failure", ["closed port", "answers 500"])
def test_unreachable_or_failing_s3_endpoint_is_retried_until_stopped(
    s3_server, ingest_settings, failure
):
    with contextlib.ExitStack() as stack:
        if failure == "closed port":
            endpoint = f"http://{HOST}:{closed_port()}"
        else:
            failing = stack.enter_context(answering(500))
            endpoint = failing.endpoint
        settings = dataclasses.replace(
            s3_settings(s3_server, "nowhere"),
            s3_endpoint=endpoint,
            nats_servers=ingest_settings.nats_servers,
        )
        asyncio.run(publish_trades(settings.nats_servers[0], range(5)))
        result = cli_ingest(settings, "--max-seconds", "6")
    assert result.returncode == 0, result.stderr
    assert "retrying" in result.stderr
    assert result.stderr.count("not acked, stopping") == 1  # a failing store: one try at the end
    assert "ingested 5 events" in result.stdout
    assert s3_server.secret_key not in result.stdout + result.stderr
    if failure != "closed port":
        assert failing.requests > 0


def test_sensor_tick_with_s3_down_skips_in_one_line_and_keeps_its_cursor(
    own_s3_server, nats_server, monkeypatch
):
    import dagster as dg

    from lake_platform.defs.bronze.reporting import LedgerCursor
    from lake_platform.defs.bronze.sensor import bronze_ingest_sensor
    from lake_platform_tests.test_bronze_sensor import sensor_context

    own_s3_server.create_bucket("down")
    settings = s3_settings(own_s3_server, "down")
    env = settings_env(dataclasses.replace(settings, nats_servers=(nats_server.url,)))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cursor = LedgerCursor(since_ns=time.time_ns() - HOUR_NS).dump()
    own_s3_server.kill()
    with dg.instance_for_test() as instance:
        context = sensor_context(instance, cursor)
        result = bronze_ingest_sensor(context)
    assert isinstance(result, dg.SkipReason), result
    assert result.skip_message.startswith("cannot read the ledger: ")
    assert "\n" not in result.skip_message
    assert context.cursor == cursor
