"""`/healthz` and Prometheus `/metrics` of an ingest worker, on real servers."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import nats
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lake_platform.ingest.jetstream import ConsumerSizing, ensure_consumers, ensure_streams
from lake_platform.ingest.metrics import IngestMetrics, serving_metrics
from lake_platform.ingest.stats import IngestStats
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import SessionSpec, session
from lake_platform.simulate.publisher import publish
from lake_platform_tests.conftest import settings_env

HOST = "127.0.0.1"
LAKE_PLATFORM = Path(sys.executable).with_name("lake-platform")
WAIT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def scrape(port: int) -> dict[str, float]:
    """Samples of `/metrics` keyed `name` or `name{label=value}`."""
    status, text = get(port, "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` (a real server is catching up), failing after a generous bound."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def publish_to_consumers(url: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    settings = LakeSettings(nats_servers=(url,))
    await ensure_streams(js, settings)
    await ensure_consumers(js, ConsumerSizing.for_settings(settings))
    for index in range(count):
        await js.publish("market.stocks.trades.SPY", b"{}", headers={"Nats-Msg-Id": str(index)})
    await nc.close()


def test_health_follows_the_service_and_metrics_follow_stats_and_consumers(nats_server):
    port = free_port()
    settings = LakeSettings(nats_servers=(nats_server.url,), metrics_port=port, metrics_host=HOST)
    metrics, running = IngestMetrics(), [False]
    with serving_metrics(settings, metrics, is_running=lambda: running[0]):
        assert get(port, "/healthz")[0] == 503  # not started
        running[0] = True
        assert get(port, "/healthz")[0] == 503  # started, no status yet
        metrics.update(IngestStats(messages=7, rows=5, quarantined=2, storage_errors=1))
        metrics.update(IngestStats(messages=9, rows=7, quarantined=2, storage_errors=1))
        metrics.observe_commit(0.3)
        assert get(port, "/healthz") == (200, "ok\n")
        samples = scrape(port)
        assert samples["lake_ingest_events_total"] == 9
        assert samples["lake_ingest_rows_total"] == 7
        assert samples["lake_ingest_quarantined_total"] == 2
        assert samples["lake_ingest_storage_retries_total"] == 1
        assert samples["lake_ingest_commit_seconds_count"] == 1
        assert "lake_ingest_events_per_second" in samples

        asyncio.run(publish_to_consumers(nats_server.url, 25))
        wait_for(
            lambda: scrape(port).get("lake_ingest_consumer_lag{stream=MARKET}") == 25,
            "the consumer lag of MARKET",
        )
        assert scrape(port)["lake_ingest_unacked_in_flight{stream=MARKET}"] == 0
        running[0] = False
        assert get(port, "/healthz")[0] == 503  # stopping
        assert get(port, "/nothing")[0] == 404


def test_a_port_in_use_fails_in_one_clear_line():
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        settings = LakeSettings(metrics_port=taken.getsockname()[1], metrics_host=HOST)
        with (
            pytest.raises(OSError, match=r"cannot serve metrics on .* \(LAKE_METRICS_PORT\)"),
            serving_metrics(settings, IngestMetrics(), is_running=lambda: True),
        ):
            pass


def test_no_port_no_server():
    with serving_metrics(LakeSettings(), IngestMetrics(), is_running=lambda: True) as server:
        assert server is None


def ingest_env(settings: LakeSettings, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return {
        **env,
        **settings_env(settings),
        "LAKE_METRICS_PORT": str(port),
        "LAKE_METRICS_HOST": HOST,
    }


@pytest.mark.slow
def test_the_ingest_command_serves_health_and_metrics_of_what_it_ingested(
    ingest_settings, tmp_path
):
    port = free_port()
    messages = list(session(SessionSpec(minutes=0.2, rate=100, seed=4, end_ns=time.time_ns())))
    malformed = sum(message.schema is None for message in messages)
    with (tmp_path / "ingest.log").open("wb") as log:
        ingest = subprocess.Popen(
            [LAKE_PLATFORM, "ingest"],
            env=ingest_env(ingest_settings, port),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: ingest.poll() is None and health(port) == 200, "a healthy worker")
        asyncio.run(publish(ingest_settings, messages, progress=False))

        def caught_up() -> bool:
            """Everything pulled, acked and counted: the counters advance on the worker's
            status tick, the consumer gauges on their own poll, so wait for both."""
            samples = scrape(port)
            counted = samples.get("lake_ingest_rows_total", 0) + samples.get(
                "lake_ingest_quarantined_total", 0
            )
            return (
                samples.get("lake_ingest_events_total") == len(messages)
                and counted == len(messages)
                and all(
                    samples.get(f"lake_ingest_{name}{{stream={stream}}}") == 0
                    for name in ("consumer_lag", "unacked_in_flight")
                    for stream in ("MARKET", "SIGNALS")
                )
            )

        wait_for(caught_up, "every published message ingested and acked")
        samples = scrape(port)
        assert samples["lake_ingest_quarantined_total"] == malformed
        assert samples["lake_ingest_rows_total"] == len(messages) - malformed
        assert samples["lake_ingest_commit_seconds_count"] >= 1
        assert samples["lake_ingest_storage_retries_total"] == 0
        assert health(port) == 200
    finally:
        ingest.send_signal(signal.SIGTERM)
        returncode = ingest.wait(WAIT_S)
    assert returncode == 0, (tmp_path / "ingest.log").read_text()[-2000:]
    assert health(port) is None  # the server went with the worker


def health(port: int) -> int | None:
    try:
        return get(port, "/healthz")[0]
    except OSError:
        return None
