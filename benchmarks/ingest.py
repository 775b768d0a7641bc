"""Ingest throughput end to end: JetStream -> Bronze Parquet, against a bare JetStream drain.

Starts an embedded nats-server (JetStream, loopback, temp dir), then for each of R rounds
publishes N new stock trades to `market.stocks.trades.<SYM>` and measures, one after the other:

* the lean drain: a separate durable pull consumer emptied with `LeanPull` on the ingest's
  client, in batches of the ingest's size, each acked in one write (`publish_all`), nothing
  decoded or written: the ingest's own pull and ack, alone (the floor of any ingest in one
  Python process);
* the ingest: `IngestService.run(until_idle=True)` with the default batch settings, timed from
  the call until its consumer has every message acked (so written, fsynced and in the
  ledger), as the drain is timed until its consumer has them all acked.

Both consumers see the round's N messages; each round's ratio is of a drain and an ingest run
back to back (the load of a shared machine drifts), and the medians over the rounds are
reported. The Bronze rows on disk must be exactly the R x N published (exit 1 otherwise); the
goals (>= 40,000 events/s and >= 0.6x the drain) are only reported.
CPU seconds of this process (all threads) and of nats-server are shown per phase: the machine
may have few cores, and the server competes with the client for them.

With `--workers K`, it then scales out: one ingest worker process, then K of them sharing the
durable consumer, each time on N new messages, timed from the moment the started (imported)
workers are told to go until every message is acked; each phase's Bronze must hold exactly its
N messages. The goal (K=2: >= 1.4x one worker) is only reported.

    uv run python benchmarks/ingest.py [--events N] [--rounds R] [--profile OUT.prof]
        [--workers K]

`--profile` runs the ingest phases under cProfile and writes the stats to OUT.prof (main
thread only: the commit worker thread is not seen; use py-spy `--threads` for that).
"""

import argparse
import asyncio
import cProfile
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nats.js.errors
import polars as pl
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api

from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.connection import LakeNatsClient, connect
from lake_platform.ingest.jetstream import DURABLE, ensure_streams
from lake_platform.ingest.pull import LeanPull
from lake_platform.ingest.pull_loop import FETCH_BATCH
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.ingest.stats import IngestStats
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.timestamps import HOUR_NS

STREAM = "MARKET"
SUBJECT_PREFIX = "market.stocks.trades."
SYMBOLS: dict[str, float] = {
    "SPY": 681.0,
    "QQQ": 612.0,
    "AAPL": 274.0,
    "MSFT": 476.0,
    "NVDA": 176.0,
}
TRADE_SIZES = (1, 5, 10, 100, 100, 200, 500)
FLUSH_EVERY = 5_000
DRAIN_CONSUMER = "bench-drain"
DRAIN_WAIT_S = 1.0
STALL_S = 30.0
WATCH_S = 0.01
GOAL_EVENTS_PER_S = 40_000
GOAL_RATIO = 0.6
GOAL_SCALING = 1.4
WORKER_READY = "ready"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


@dataclass
class Phase:
    """Wall time and CPU time of one phase."""

    server_pid: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    _marks: tuple[float, float, float] = field(default=(0.0, 0.0, 0.0), repr=False)

    @property
    def started_at(self) -> float:
        return self._marks[0]

    def start(self) -> None:
        self._marks = (time.perf_counter(), time.process_time(), server_cpu_s(self.server_pid))

    def stop(self) -> None:
        wall, cpu, server = self._marks
        self.wall_s = time.perf_counter() - wall
        self.cpu_s = time.process_time() - cpu
        self.server_cpu_s = server_cpu_s(self.server_pid) - server

    def rate(self, events: int) -> float:
        return events / max(self.wall_s, 1e-9)

    def cpu_line(self) -> str:
        return (
            f"CPU: bench {self.cpu_s:.1f} s ({self.cpu_s / self.wall_s:.0%}), "
            f"nats-server {self.server_cpu_s:.1f} s ({self.server_cpu_s / self.wall_s:.0%})"
        )


@dataclass
class Round:
    """One round: N new messages drained by a fresh consumer, then ingested."""

    publish: Phase
    drain: Phase
    ingest: Phase
    returned_s: float | None = None
    ingest_stats: IngestStats | None = None


@dataclass
class Results:
    events: int
    rounds: list[Round] = field(default_factory=list)
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
                f'"size":{rng.choice(TRADE_SIZES)},"exchange":{rng.randrange(1, 20)},'
                f'"conditions":{conditions},"seq":{seq}}}'
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


async def publish(nc: Client, events: int, *, stored: int = 0) -> None:
    """Publish `events` trades with core NATS and wait until the stream has stored them all
    (after the `stored` it holds already). Each carries a `Nats-Msg-Id`, as producers' do.

    Event times run from the start of the previous hour to now, so two hours per symbol.
    """
    js = nc.jetstream()
    await ensure_streams(js)
    if await stream_messages(js) != stored:
        raise SystemExit(f"stream {STREAM} does not hold {stored:,} messages")
    previous_hour = time.time_ns() // HOUR_NS * HOUR_NS - HOUR_NS
    message_id = stored
    for batch in trade_payloads(events, previous_hour, FLUSH_EVERY):
        for subject, payload in batch:
            message_id += 1
            await nc.publish(subject, payload, headers={"Nats-Msg-Id": f"bench-{message_id}"})
        await nc.flush()
    await wait_for_stream(js, stored + events)


async def add_drain_consumer(js: JetStreamContext, name: str, first_seq: int) -> None:
    config = js_api.ConsumerConfig(
        durable_name=name,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=first_seq,
        ack_wait=60,
        max_ack_pending=100_000,
        max_deliver=-1,
    )
    await js.add_consumer(STREAM, config)


async def wait_all_acked(js: JetStreamContext, name: str) -> None:
    """Until the drain consumer has nothing pending or unacked (as the ingest waits too)."""
    while True:
        info = await js.consumer_info(STREAM, name)
        if not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(0.02)


async def drain(nc: LakeNatsClient, events: int, first_seq: int, phase: Phase) -> None:
    """Pull and ack the `events` messages from `first_seq` on with `LeanPull`, by a consumer
    of their own; timed until the consumer is empty."""
    js = nc.jetstream()
    name = f"{DRAIN_CONSUMER}-{first_seq}"
    await add_drain_consumer(js, name, first_seq)
    pull = LeanPull(nc, STREAM, name)
    await pull.start()
    received, empty_since = 0, None
    phase.start()
    try:
        while received < events:
            messages, drained = await pull.fetch(FETCH_BATCH, DRAIN_WAIT_S)
            await nc.publish_all(messages.replies)
            received += len(messages)
            if messages or not drained:
                empty_since = None
            elif empty_since is None:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since > STALL_S:
                raise SystemExit(f"drain got {received:,} of {events:,} messages, then nothing")
        await nc.flush()
        await wait_all_acked(js, name)
        phase.stop()
    finally:
        await pull.stop()
    if received != events:
        raise SystemExit(f"drain received {received:,} messages, expected {events:,}")


async def ingest(settings: LakeSettings, events: int, last_seq: int, round_: Round) -> None:
    """Run the ingest until idle, timed until every message up to `last_seq` is acked (so on
    disk and in the ledger); the service then still has to notice it is idle to return."""
    service = IngestService(
        settings, LakeStore.from_settings(settings), writer=writer_name("bench")
    )
    nc = await connect(settings, name="bench-watch")
    try:
        round_.ingest.start()
        running = asyncio.create_task(service.run(until_idle=True))
        watching = asyncio.create_task(wait_ingested(nc.jetstream(), last_seq))
        await asyncio.wait({running, watching}, return_when=asyncio.FIRST_COMPLETED)
        if not watching.done():
            watching.cancel()
            raise SystemExit(f"the ingest returned before acking all: {await running}")
        round_.ingest.stop()
        round_.ingest_stats = await running
        round_.returned_s = time.perf_counter() - round_.ingest.started_at
    finally:
        await nc.close()


def count_bronze(lake: Path) -> tuple[int, int, int]:
    """Files, rows and distinct stream sequences over every Bronze Parquet file."""
    files = [path for path in (lake / "bronze").rglob("*.parquet") if not path.name.startswith(".")]
    if not files:
        return 0, 0, 0
    counts = (
        pl.scan_parquet([str(path) for path in files])
        .select(pl.len().alias("rows"), pl.col("_stream_seq").n_unique().alias("seqs"))
        .collect()
    )
    return len(files), counts.item(0, "rows"), counts.item(0, "seqs")


async def worker(server_url: str, lake: Path) -> None:
    """One worker process of the scaling phase: says `ready` once imported and built, waits
    for a line on stdin, ingests until idle, prints the messages it pulled."""
    settings = LakeSettings(data_root=str(lake), nats_servers=(server_url,))
    service = IngestService(
        settings, LakeStore.from_settings(settings), writer=writer_name("bench-worker")
    )
    print(WORKER_READY, flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    started_cpu = time.process_time()
    stats = await service.run(until_idle=True)
    print(stats.messages, time.process_time() - started_cpu, flush=True)


async def wait_ingested(js: JetStreamContext, last_seq: int) -> None:
    """Until the ingest's consumer has delivered up to `last_seq` and holds nothing unacked."""
    while True:
        try:
            info = await js.consumer_info(STREAM, DURABLE)
        except nats.js.errors.NotFoundError:  # the ingest has not created it yet
            await asyncio.sleep(WATCH_S)
            continue
        delivered = info.delivered.stream_seq if info.delivered else 0
        if (delivered or 0) >= last_seq and not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(WATCH_S)


async def scale_phase(server: NatsServer, lake: Path, events: int, workers: int) -> Phase:
    """`workers` ingest processes on one durable consumer, on `events` new messages: timed
    from the moment all of them are started and imported until every message is acked."""
    nc = await connect(LakeSettings(nats_servers=(server.url,)), name="bench-scale")
    phase = Phase(server.pid)
    command = [sys.executable, __file__, "--worker-of", server.url, str(lake)]
    processes = [
        subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    try:
        js = nc.jetstream()
        stored = await stream_messages(js)
        await publish(nc, events, stored=stored)
        for process in processes:
            assert process.stdout is not None and process.stdin is not None
            if process.stdout.readline().strip() != WORKER_READY:
                raise SystemExit("a worker process failed to start")
        phase.start()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        await wait_ingested(js, stored + events)
        phase.stop()
        outputs = [process.communicate(timeout=STALL_S)[0] for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
        await nc.close()
    if any(process.returncode for process in processes):
        raise SystemExit(f"a worker process failed: exit codes {[p.returncode for p in processes]}")
    reports = [output.split()[-2:] for output in outputs]
    pulled = sum(int(messages) for messages, _ in reports)
    phase.cpu_s = sum(float(cpu_s) for _, cpu_s in reports)
    _, rows, seqs = count_bronze(lake)
    if rows != events or seqs != events:
        raise SystemExit(
            f"{workers} worker(s) wrote {rows:,} rows ({seqs:,} sequences), expected {events:,}"
        )
    per_message_us = 1e6 / events
    print(
        f"  {workers} worker(s): {phase.rate(events):,.0f} events/s ({phase.wall_s:.2f} s; "
        f"pulled {pulled:,}); CPU per message: workers {phase.cpu_s * per_message_us:.1f} µs "
        f"(until they returned), nats-server {phase.server_cpu_s * per_message_us:.1f} µs",
        flush=True,
    )
    return phase


async def publish_and_drain(server_url: str, events: int, round_: Round, stored: int) -> None:
    nc = await connect(LakeSettings(nats_servers=(server_url,)), name="bench-ingest")
    try:
        print(f"publishing {events:,} trades ...", flush=True)
        round_.publish.start()
        await publish(nc, events, stored=stored)
        round_.publish.stop()
        print(f"  {round_.publish.rate(events):,.0f} events/s stored", flush=True)
        print("lean drain ...", flush=True)
        await drain(nc, events, stored + 1, round_.drain)
        print(f"  {round_.drain.rate(events):,.0f} events/s", flush=True)
    finally:
        await nc.close()


async def measure(
    server: NatsServer, lake: Path, events: int, rounds: int, profile: Path | None
) -> Results:
    """`rounds` times: publish N new trades, drain them, ingest them (each ratio is of a
    drain and an ingest run back to back, as the load of a shared machine drifts)."""
    results = Results(events)
    settings = LakeSettings(data_root=str(lake), nats_servers=(server.url,))
    profiler = cProfile.Profile()
    for number in range(rounds):
        round_ = Round(Phase(server.pid), Phase(server.pid), Phase(server.pid))
        results.rounds.append(round_)
        print(f"round {number + 1} of {rounds}", flush=True)
        await publish_and_drain(server.url, events, round_, stored=number * events)
        results.rss_after_drain_mb = peak_rss_mb()
        print("ingest ...", flush=True)
        if profile is not None:
            profiler.enable()
        await ingest(settings, events, (number + 1) * events, round_)
        if profile is not None:
            profiler.disable()
        print(f"  {round_.ingest.rate(events):,.0f} events/s", flush=True)
    if profile is not None:
        profiler.dump_stats(profile)
    results.rss_after_ingest_mb = peak_rss_mb()
    results.files_on_disk, results.rows_on_disk, results.unique_seqs = count_bronze(lake)
    return results


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(results: Results) -> bool:
    """Print the summary; returns whether the rows on disk match the published events."""
    n = results.events
    print()
    print(f"events per round:    {n:>12,}")
    for number, round_ in enumerate(results.rounds, 1):
        stats = round_.ingest_stats
        assert stats is not None
        print(
            f"round {number}: publish {round_.publish.rate(n):,.0f}/s, lean drain "
            f"{round_.drain.rate(n):,.0f}/s ({round_.drain.wall_s:.2f} s), ingest "
            f"{round_.ingest.rate(n):,.0f}/s ({round_.ingest.wall_s:.2f} s): "
            f"ratio {round_.ingest.rate(n) / round_.drain.rate(n):.2f}"
        )
        print(f"  drain  {round_.drain.cpu_line()}")
        print(f"  ingest {round_.ingest.cpu_line()}")
        if round_.returned_s is not None:
            print(f"  run() returned after {round_.returned_s:.2f} s (noticing it is idle)")
        print(
            f"  files: {stats.files:,} written ({n / max(stats.files, 1):,.0f} rows each); "
            f"commits {stats.commits:,}; quarantined {stats.quarantined:,}; "
            f"{stats.bytes / 2**20:,.1f} MiB"
        )
    ingest_rate = statistics.median(r.ingest.rate(n) for r in results.rounds)
    ratio = statistics.median(r.ingest.rate(n) / r.drain.rate(n) for r in results.rounds)
    print(f"ingest (median):     {ingest_rate:>12,.0f} events/s")
    print(f"ratio ingest/drain:  {ratio:>12.2f} (median of the rounds)")
    print(f"goal >= {GOAL_EVENTS_PER_S:,} events/s:   {verdict(ingest_rate >= GOAL_EVENTS_PER_S)}")
    print(f"goal >= {GOAL_RATIO}x drain:         {verdict(ratio >= GOAL_RATIO)}")
    print(
        f"peak RSS:            {results.rss_after_drain_mb:,.0f} MiB after a drain, "
        f"{results.rss_after_ingest_mb:,.0f} MiB after the ingests"
    )
    expected = n * len(results.rounds)
    ok = results.rows_on_disk == expected and results.unique_seqs == expected
    print(
        f"bronze rows on disk: {results.rows_on_disk:,} in {results.files_on_disk:,} files "
        f"({results.unique_seqs:,} distinct _stream_seq), expected {expected:,}: "
        f"{'OK' if ok else 'MISMATCH'}"
    )
    return ok


async def scaling(server: NatsServer, root: Path, events: int, workers: int) -> None:
    """One worker process, then `workers` of them, each on `events` new messages."""
    print(f"scaling: 1 worker process, then {workers} ...", flush=True)
    one = await scale_phase(server, root / "scale-1", events, 1)
    many = await scale_phase(server, root / f"scale-{workers}", events, workers)
    ratio = many.rate(events) / one.rate(events)
    cores = os.cpu_count() or 1
    bound = cores * events / (one.cpu_s + one.server_cpu_s)
    print(
        f"CPU bound of this machine ({cores} cores / the CPU per message of one worker and of "
        f"nats-server): {bound:,.0f} events/s = {bound / one.rate(events):.2f}x one worker"
    )
    print(f"ratio {workers} workers / 1:  {ratio:>8.2f}")
    print(f"goal >= {GOAL_SCALING}x:            {verdict(ratio >= GOAL_SCALING)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--profile", type=Path, help="cProfile the ingest phase into this file")
    parser.add_argument("--rounds", type=int, default=3, help="drain+ingest rounds (medians)")
    parser.add_argument(
        "--workers", type=int, default=1, help="also compare this many worker processes with one"
    )
    parser.add_argument("--worker-of", nargs=2, metavar=("URL", "LAKE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_of:
        asyncio.run(worker(args.worker_of[0], Path(args.worker_of[1])))
        return 0
    if min(args.events, args.rounds, args.workers) <= 0:
        parser.error("--events, --rounds and --workers must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        with NatsServer.start(root / "nats") as server:
            results = asyncio.run(
                measure(server, root / "lake", args.events, args.rounds, args.profile)
            )
            ok = report(results)
            if args.workers > 1:
                asyncio.run(scaling(server, root, args.events, args.workers))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
