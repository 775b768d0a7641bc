"""`/healthz` and Prometheus `/metrics` of an ingest worker, on real servers."""

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import nats
from prometheus_client.parser import text_string_to_metric_families

from lake_platform.ingest.jetstream import ConsumerSizing, ensure_consumers, ensure_streams
from lake_platform.ingest.metrics import IngestMetrics, serving_metrics
from lake_platform.ingest.service import IngestStats
from lake_platform.settings import LakeSettings

HOST = "127.0.0.1"
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


def test_no_port_no_server():
    with serving_metrics(LakeSettings(), IngestMetrics(), is_running=lambda: True) as server:
        assert server is None
