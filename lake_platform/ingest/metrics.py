"""`/healthz` and Prometheus `/metrics` of one `lake-platform ingest` worker.

Served on `LAKE_METRICS_HOST:LAKE_METRICS_PORT` by a small HTTP server thread with its own
`CollectorRegistry` (nothing global, so several exporters can live in one test process).
The counters follow the service's `IngestStats`, which the service hands to its status
callback every second; commit durations come from its commit callback. Consumer lag and
unacked messages are the durable consumers' (shared by every worker), read by a thread of
the exporter with its own NATS connection, so the ingest loop never waits on them.

`/healthz` answers 200 while the service runs (its pull tasks alive) and its status was
updated recently; 503 before it starts, once it stops (a signal, the end, a failed task),
when its loop stalls for `STALE_AFTER_S`, and while the service says it cannot work
(`IngestStats.unhealthy`: JetStream refusing its pulls for long), with the reason.
"""

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nats.errors
from nats.js import JetStreamContext
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from lake_platform.ingest.connection import connect
from lake_platform.ingest.jetstream import DURABLE
from lake_platform.ingest.stats import IngestStats
from lake_platform.schemas import STREAMS
from lake_platform.settings import LakeSettings

log = logging.getLogger(__name__)

PREFIX = "lake_ingest"
STALE_AFTER_S = 60.0
"""A status older than this means the loop is stuck (a slow commit holds it seconds, not this)."""
CONSUMER_POLL_S = 2.0
COMMIT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
JOIN_TIMEOUT_S = 5.0


class IngestMetrics:
    """The worker's metrics and health, fed by the service's callbacks."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.is_running: Callable[[], bool] = lambda: False
        self._last_status: float | None = None
        self._last_messages = 0
        self._unhealthy: str | None = None
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}
        registry = self.registry
        self.events = Counter(f"{PREFIX}_events", "Messages pulled and routed", registry=registry)
        self.rows = Counter(f"{PREFIX}_rows", "Rows written to Bronze and acked", registry=registry)
        self.files = Counter(f"{PREFIX}_files", "Bronze files committed", registry=registry)
        self.quarantined = Counter(
            f"{PREFIX}_quarantined", "Messages written to the quarantine", registry=registry
        )
        self.storage_retries = Counter(
            f"{PREFIX}_storage_retries",
            "Commits that failed on storage and are retried with backoff",
            registry=registry,
        )
        self.events_per_second = Gauge(
            f"{PREFIX}_events_per_second",
            "Messages routed per second over the last status interval",
            registry=registry,
        )
        self.consumer_lag = Gauge(
            f"{PREFIX}_consumer_lag",
            "Messages not yet delivered by the durable consumer (all workers)",
            ["stream"],
            registry=registry,
        )
        self.unacked = Gauge(
            f"{PREFIX}_unacked_in_flight",
            "Messages delivered by the durable consumer and not yet acked (all workers)",
            ["stream"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            f"{PREFIX}_commit_seconds",
            "Duration of one commit (write files, ledger entry)",
            buckets=COMMIT_BUCKETS_S,
            registry=registry,
        )

    def update(self, stats: IngestStats) -> None:
        """Status callback: advance the counters to the service's totals."""
        now = time.monotonic()
        with self._lock:
            for name, counter, total in (
                ("events", self.events, stats.messages),
                ("rows", self.rows, stats.rows),
                ("files", self.files, stats.files),
                ("quarantined", self.quarantined, stats.quarantined),
                ("storage_retries", self.storage_retries, stats.storage_errors),
            ):
                counter.inc(max(total - self._seen.get(name, 0), 0))
                self._seen[name] = total
            if self._last_status is not None and now > self._last_status:
                rate = (stats.messages - self._last_messages) / (now - self._last_status)
                self.events_per_second.set(rate)
            self._last_status, self._last_messages = now, stats.messages
            self._unhealthy = stats.unhealthy

    def observe_commit(self, seconds: float) -> None:
        """Commit callback: one commit's duration."""
        self.commit_seconds.observe(seconds)

    def set_consumer(self, stream: str, pending: int, ack_pending: int) -> None:
        self.consumer_lag.labels(stream=stream).set(pending)
        self.unacked.labels(stream=stream).set(ack_pending)

    def health(self) -> tuple[int, str]:
        """HTTP status and body of `/healthz`."""
        if not self.is_running():
            return 503, "not running\n"
        if self._last_status is None:
            return 503, "starting\n"
        if time.monotonic() - self._last_status > STALE_AFTER_S:
            return 503, f"no status for more than {STALE_AFTER_S:.0f}s\n"
        if self._unhealthy is not None:
            return 503, f"{self._unhealthy}\n"
        return 200, "ok\n"


def _handler(metrics: IngestMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                status, body = metrics.health()
                self._send(status, body.encode(), "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Scrapes every few seconds would flood the worker's log."""

    return Handler


class ConsumerWatcher:
    """A thread reading the durable consumers' pending and unacked counts every few seconds."""

    def __init__(self, settings: LakeSettings, metrics: IngestMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="consumer-metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(JOIN_TIMEOUT_S)

    def _main(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                nc = await connect(self.settings, name="lake-platform ingest metrics")
            except ConnectionError as error:  # the service reports NATS problems itself
                log.debug("metrics cannot read the consumers yet: %s", error)
                await asyncio.sleep(CONSUMER_POLL_S)
                continue
            try:
                await self._poll(nc.jetstream())
            finally:
                await nc.close()

    async def _poll(self, js: JetStreamContext) -> None:
        while not self._stop.is_set():
            for stream in STREAMS:
                try:
                    info = await js.consumer_info(stream, DURABLE)
                except nats.errors.Error as error:  # not created yet, or reconnecting
                    log.debug("consumer %s/%s: %s", stream, DURABLE, error)
                    continue
                self.metrics.set_consumer(stream, info.num_pending or 0, info.num_ack_pending or 0)
            await asyncio.sleep(CONSUMER_POLL_S)


@contextlib.contextmanager
def serving_metrics(
    settings: LakeSettings, metrics: IngestMetrics, is_running: Callable[[], bool]
) -> Iterator[ThreadingHTTPServer | None]:
    """Serve `metrics` on the settings' metrics address while the block runs; nothing when
    `LAKE_METRICS_PORT` is unset. Yields the server (None when off)."""
    if settings.metrics_port is None:
        yield None
        return
    metrics.is_running = is_running
    address = (settings.metrics_host, settings.metrics_port)
    try:
        server = ThreadingHTTPServer(address, _handler(metrics))
    except OSError as error:
        raise OSError(
            f"cannot serve metrics on {address[0]}:{address[1]} (LAKE_METRICS_PORT): "
            f"{error.strerror or error}"
        ) from None
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    watcher = ConsumerWatcher(settings, metrics)
    serving.start()
    watcher.start()
    try:
        yield server
    finally:
        watcher.stop()
        server.shutdown()
        server.server_close()
        serving.join(JOIN_TIMEOUT_S)
