"""`lake-platform ingest`: the standalone Bronze ingest (the original Lake Service)."""

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from lake_platform.commands.init import sweep_leftovers
from lake_platform.ingest.metrics import IngestMetrics, serving_metrics
from lake_platform.ingest.reports import Reporter
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.ingest.stats import IngestStats
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore

STATUS_EVERY_S_WITHOUT_TTY = 10


def dagster_reporter() -> Reporter | None:
    """Records materializations in the instance of `DAGSTER_HOME`; None when it is unset."""
    if not os.environ.get("DAGSTER_HOME"):
        return None
    import dagster as dg

    from lake_platform.defs.bronze.reporting import instance_reporter

    return instance_reporter(dg.DagsterInstance.get())


def status_printer() -> Callable[[IngestStats], None]:
    """A live status line on a terminal, a line every few seconds otherwise."""
    is_tty = sys.stderr.isatty()
    calls = 0

    def show(stats: IngestStats) -> None:
        nonlocal calls
        calls += 1
        if is_tty:
            print(f"\r{stats.line()}\033[K", end="", file=sys.stderr, flush=True)
        elif calls % STATUS_EVERY_S_WITHOUT_TTY == 1:
            print(stats.line(), file=sys.stderr, flush=True)

    return show


async def _run(service: IngestService, until_idle: bool, max_seconds: float | None) -> IngestStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return await service.run(
        until_idle=until_idle, max_seconds=max_seconds, stop=stop, check_access=False
    )


def run_ingest(until_idle: bool, max_seconds: float | None) -> int:
    """Ingest until idle, a time limit or a signal; flushes and acks everything first."""
    settings = LakeSettings.from_env()
    store = LakeStore.from_settings(settings)
    store.check_access()  # wrong credentials or a missing bucket: one clear line, exit 1
    sweep_leftovers(store, lambda line: print(line, file=sys.stderr))
    reporter = dagster_reporter()
    if reporter is None:
        print(
            "DAGSTER_HOME is not set: batches are recorded in the lake's ledger and reported "
            "by bronze_ingest_sensor when the daemon runs",
            file=sys.stderr,
        )
    metrics, show = IngestMetrics(), status_printer()

    def on_status(stats: IngestStats) -> None:
        show(stats)
        metrics.update(stats)

    service = IngestService(
        settings,
        store,
        writer=writer_name("service"),
        reporter=reporter,
        on_status=on_status,
        on_commit=metrics.observe_commit,
    )
    with serving_metrics(settings, metrics, is_running=lambda: service.running):
        stats = asyncio.run(_run(service, until_idle, max_seconds))
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"ingested {stats.line()} into {store.url}")
    return 0
