"""Ingest throughput end to end: JetStream -> Bronze Parquet, against a bare JetStream drain.

Starts an embedded nats-server (JetStream, loopback, temp dir), publishes N stock trades to
`market.stocks.trades.<SYM>`, then measures:

* the lean drain: a separate durable pull consumer emptied with `LeanPull`, every message
  acked, nothing decoded or written (the floor of any ingest in this process);
* the ingest: `IngestService.run(until_idle=True)` with the default batch settings, timed from
  the call until it returns (everything written, fsynced, ledgered and acked).

The Bronze row count on disk must equal N (exit 1 otherwise); the goals (>= 40,000 events/s
and >= 0.6x the drain) are only reported.

    uv run python benchmarks/ingest.py [--events N] [--profile OUT.prof]

`--profile` runs the ingest phase under cProfile (main thread only: the commit worker
thread is not sampled) and writes the stats to OUT.prof.
"""

import argparse
import asyncio
import cProfile
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import polars as pl
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api

from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.ingest.pull import LeanPull
from lake_platform.ingest.service import IngestService, IngestStats, writer_name
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.testing.servers import NatsServer

STREAM = "MARKET"
SUBJECT_PREFIX = "market.stocks.trades."
SYMBOLS: dict[str, float] = {
    "SPY": 681.0,
    "QQQ": 612.0,
    "AAPL": 274.0,
    "MSFT": 476.0,
    "NVDA": 176.0,
}
FLUSH_EVERY = 5_000
DRAIN_CONSUMER = "bench-drain"
DRAIN_FETCH = 1_000
DRAIN_WAIT_S = 1.0
STALL_S = 30.0
HOUR_NS = 3_600 * 10**9
GOAL_EVENTS_PER_S = 40_000
GOAL_RATIO = 0.6


@dataclass
class Results:
    events: int
    publish_s: float = 0.0
    drain_s: float = 0.0
    ingest_s: float = 0.0
    all_pulled_s: float | None = None
    ingest_stats: IngestStats | None = None
    rows_on_disk: int = 0
    unique_seqs: int = 0
    files_on_disk: int = 0
    rss_after_drain_mb: float = 0.0
    rss_after_ingest_mb: float = 0.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trade_payloads(events: int, start: int, chunk: int) -> Iterator[list[tuple[str, bytes]]]:
    """(subject, JSON payload) chunks: trades spread evenly over [`start`, now]."""
    rng = random.Random(7)
    symbols = list(SYMBOLS)
    prices = dict(SYMBOLS)
    step = max((time.time_ns() - start) // max(events, 1), 1)
    for first in range(0, events, chunk):
        batch: list[tuple[str, bytes]] = []
        for seq in range(first, min(first + chunk, events)):
            symbol = symbols[rng.randrange(len(symbols))]
            prices[symbol] = price = round(prices[symbol] * (1 + rng.gauss(0, 1e-4)), 2)
            conditions = "[14,41]" if seq % 4 else "[12,14,37]"
            payload = (
                f'{{"ts_event_ns":{start + seq * step},"symbol":"{symbol}","price":{price},'
                f'"size":{rng.choice((1, 5, 10, 100, 100, 200, 500))},'
                f'"exchange":{rng.randrange(1, 20)},"conditions":{conditions},"seq":{seq}}}'
            )
            batch.append((SUBJECT_PREFIX + symbol, payload.encode()))
        yield batch


async def stream_messages(js: JetStreamContext) -> int:
    info = await js.stream_info(STREAM)
    return info.state.messages


async def wait_for_stream(js: JetStreamContext, events: int) -> None:
    """Wait until the stream holds `events` messages; fail if the count stops moving."""
    last, last_change = -1, time.monotonic()
    while (count := await stream_messages(js)) < events:
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            raise SystemExit(f"stream {STREAM} stuck at {count:,} of {events:,} messages")
        await asyncio.sleep(0.05)
    if count != events:
        raise SystemExit(f"stream {STREAM} holds {count:,} messages, expected {events:,}")


async def publish(nc: Client, events: int) -> float:
    """Publish `events` trades with core NATS; seconds until all are stored in the stream."""
    js = nc.jetstream()
    await ensure_streams(js)
    if await stream_messages(js):
        raise SystemExit(f"stream {STREAM} is not empty")
    now = time.time_ns()
    previous_hour = now // HOUR_NS * HOUR_NS - HOUR_NS
    started = time.perf_counter()
    for batch in trade_payloads(events, previous_hour, FLUSH_EVERY):
        for subject, payload in batch:
            await nc.publish(subject, payload)
        await nc.flush()
    await wait_for_stream(js, events)
    return time.perf_counter() - started


async def add_drain_consumer(js: JetStreamContext) -> None:
    config = js_api.ConsumerConfig(
        durable_name=DRAIN_CONSUMER,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=60,
        max_ack_pending=100_000,
        max_deliver=-1,
    )
    await js.add_consumer(STREAM, config)


async def wait_all_acked(js: JetStreamContext) -> None:
    """Until the drain consumer has nothing pending or unacked (as the ingest waits too)."""
    while True:
        info = await js.consumer_info(STREAM, DRAIN_CONSUMER)
        if not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(0.02)


async def drain(nc: Client, events: int) -> float:
    """Pull and ack every message with `LeanPull`; seconds until the consumer is empty."""
    js = nc.jetstream()
    await add_drain_consumer(js)
    pull = LeanPull(nc, STREAM, DRAIN_CONSUMER)
    await pull.start()
    received, empty_since = 0, None
    started = time.perf_counter()
    try:
        while received < events:
            messages, drained = await pull.fetch(DRAIN_FETCH, DRAIN_WAIT_S)
            for message in messages:
                await nc.publish(message.reply, b"")
            received += len(messages)
            if messages or not drained:
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since > STALL_S:
                raise SystemExit(f"drain got {received:,} of {events:,} messages, then nothing")
        await nc.flush()
        await wait_all_acked(js)
        elapsed = time.perf_counter() - started
    finally:
        await pull.stop()
    if received != events:
        raise SystemExit(f"drain received {received:,} messages, expected {events:,}")
    return elapsed


async def ingest(settings: LakeSettings, events: int, results: Results) -> None:
    """Run the ingest until idle; records the wall time and when the last message was pulled."""
    started = time.perf_counter()

    def on_status(stats: IngestStats) -> None:
        if results.all_pulled_s is None and stats.messages >= events:
            results.all_pulled_s = time.perf_counter() - started

    service = IngestService(
        settings,
        LakeStore.from_settings(settings),
        writer=writer_name("bench"),
        on_status=on_status,
    )
    results.ingest_stats = await service.run(until_idle=True)
    results.ingest_s = time.perf_counter() - started


def count_bronze(lake: Path, results: Results) -> None:
    files = [path for path in (lake / "bronze").rglob("*.parquet") if not path.name.startswith(".")]
    results.files_on_disk = len(files)
    if not files:
        return
    counts = (
        pl.scan_parquet([str(path) for path in files])
        .select(pl.len().alias("rows"), pl.col("_stream_seq").n_unique().alias("seqs"))
        .collect()
    )
    results.rows_on_disk = counts.item(0, "rows")
    results.unique_seqs = counts.item(0, "seqs")


async def measure(server_url: str, lake: Path, events: int, profile: Path | None) -> Results:
    results = Results(events)
    nc = await nats.connect(server_url, name="bench-ingest")
    try:
        print(f"publishing {events:,} trades ...", flush=True)
        results.publish_s = await publish(nc, events)
        print(f"  {events / results.publish_s:,.0f} events/s stored", flush=True)
        print("lean drain ...", flush=True)
        results.drain_s = await drain(nc, events)
        print(f"  {events / results.drain_s:,.0f} events/s", flush=True)
    finally:
        await nc.close()
    results.rss_after_drain_mb = peak_rss_mb()
    settings = LakeSettings(data_root=str(lake), nats_servers=(server_url,))
    print("ingest ...", flush=True)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    await ingest(settings, events, results)
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    print(f"  {events / results.ingest_s:,.0f} events/s", flush=True)
    results.rss_after_ingest_mb = peak_rss_mb()
    count_bronze(lake, results)
    return results


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: Results) -> bool:
    """Print the summary; returns whether the rows on disk match the published events."""
    n = results.events
    stats = results.ingest_stats
    assert stats is not None
    drain_rate, ingest_rate = n / results.drain_s, n / results.ingest_s
    ratio = ingest_rate / drain_rate
    pulled = f"{results.all_pulled_s:.2f} s" if results.all_pulled_s is not None else "n/a"
    print()
    print(f"events:              {n:>12,}")
    print(f"publish (stored):    {n / results.publish_s:>12,.0f} events/s")
    print(f"lean drain:          {drain_rate:>12,.0f} events/s  ({results.drain_s:.2f} s)")
    print(f"ingest:              {ingest_rate:>12,.0f} events/s  ({results.ingest_s:.2f} s)")
    print(f"  all pulled by:     {pulled:>12} (status every 1 s)")
    print(
        f"  files: {stats.files:,} written, {results.files_on_disk:,} on disk; "
        f"commits {stats.commits:,}; quarantined {stats.quarantined:,}; "
        f"{stats.bytes / 2**20:,.1f} MiB"
    )
    print(f"ratio ingest/drain:  {ratio:>12.2f}")
    print(f"goal >= {GOAL_EVENTS_PER_S:,} events/s:   {verdict(ingest_rate >= GOAL_EVENTS_PER_S)}")
    print(f"goal >= {GOAL_RATIO}x drain:         {verdict(ratio >= GOAL_RATIO)}")
    print(
        f"peak RSS:            {results.rss_after_drain_mb:,.0f} MiB after drain, "
        f"{results.rss_after_ingest_mb:,.0f} MiB after ingest"
    )
    ok = results.rows_on_disk == n and results.unique_seqs == n
    print(
        f"bronze rows on disk: {results.rows_on_disk:,} ({results.unique_seqs:,} distinct "
        f"_stream_seq), expected {n:,}: {'OK' if ok else 'MISMATCH'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profile", type=Path, help="cProfile the ingest phase into this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        with NatsServer.start(root / "nats") as server:
            results = asyncio.run(measure(server.url, root / "lake", args.events, args.profile))
        return 0 if report(results) else 1


if __name__ == "__main__":
    sys.exit(main())
