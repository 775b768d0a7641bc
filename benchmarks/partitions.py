"""Partition explosion: ingest throughput and peak memory with thousands of partition values
inside one hour (an options feed with thousands of underlyings), against a few values.

One file per value-hour is the lake's layout, so the many-values case is bound by the files
it creates: `files/s` shows that rate. Each case runs in a child process of its own (peak RSS
is per process): an embedded nats-server, N option trades published with core NATS to
`market.options.trades.<U>` over V distinct underlyings, all inside the current hour, then
`IngestService.run(until_idle=True)` with the default settings (`BRONZE_MAX_OPEN_BUFFERS`
included), timed until every row is written, in the ledger and acked. Every case checks that
the Bronze rows on disk are exactly the N published (distinct stream sequences); the goal
(many values within 2x of few values) is only reported.

    uv run python benchmarks/partitions.py [--events 100000] [--values 20000] [--few 5]
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
import polars as pl

from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.timestamps import HOUR_NS

FLUSH_EVERY = 5_000
STALL_S = 60.0
SAMPLE_S = 0.05
GOAL_RATIO = 2.0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """Resident set size of this process now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def option_trade(seq: int, underlying: str, ts: int) -> bytes:
    return (
        f'{{"ts_event_ns":{ts},"underlying":"{underlying}","option_symbol":"O:{underlying}C1",'
        f'"exp_date":"2026-01-16","strike":100.0,"right":"C","price":1.25,"size":{1 + seq % 50},'
        f'"opt_bid":1.2,"opt_ask":1.3,"aggressor":1,"seq":{seq}}}'
    ).encode()


async def publish(url: str, events: int, values: int) -> None:
    """`events` option trades over `values` underlyings, event times inside the current hour."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        now = time.time_ns()
        hour = now // HOUR_NS * HOUR_NS
        for seq in range(events):
            underlying = f"U{seq % values:05d}"
            ts = hour + (now - hour) * seq // events
            await nc.publish(
                f"market.options.trades.{underlying}", option_trade(seq, underlying, ts)
            )
            if seq % FLUSH_EVERY == 0:
                await nc.flush()
        await nc.flush()
        last, since = -1, time.monotonic()
        while (stored := (await js.stream_info("MARKET")).state.messages) < events:
            if stored != last:
                last, since = stored, time.monotonic()
            elif time.monotonic() - since > STALL_S:
                raise SystemExit(f"stream stuck at {stored:,} of {events:,} messages")
            await asyncio.sleep(0.05)
    finally:
        await nc.close()


async def ingest(settings: LakeSettings) -> dict[str, float]:
    """Run the ingest until idle; its wall time, files and the most buffers seen open."""
    service = IngestService(settings, LakeStore.from_settings(settings), writer=writer_name("b"))
    most_open = 0

    async def sample() -> None:
        nonlocal most_open
        while True:
            most_open = max(most_open, len(service.buffers))
            await asyncio.sleep(SAMPLE_S)

    sampler = asyncio.create_task(sample())
    started = time.perf_counter()
    stats = await service.run(until_idle=True)
    wall_s = time.perf_counter() - started
    sampler.cancel()
    return {"wall_s": wall_s, "files": stats.files, "most_open": most_open}


def bronze_counts(lake: Path) -> tuple[int, int]:
    """Rows and distinct stream sequences of every Bronze file."""
    files = [str(p) for p in (lake / "bronze").rglob("*.parquet")]
    if not files:
        return 0, 0
    counts = pl.scan_parquet(files).select(pl.len(), pl.col("_stream_seq").n_unique()).collect()
    return counts.item(0, 0), counts.item(0, 1)


def run_case(events: int, values: int) -> dict[str, float]:
    """One case in this process: publish, ingest, check, measure."""
    with tempfile.TemporaryDirectory(prefix="bench-partitions-") as tmp:
        root = Path(tmp)
        with NatsServer.start(root / "nats") as server:
            asyncio.run(publish(server.url, events, values))
            settings = LakeSettings(data_root=str(root / "lake"), nats_servers=(server.url,))
            rss_before = rss_mb()
            result = asyncio.run(ingest(settings))
        rows, seqs = bronze_counts(root / "lake")
    return {
        **result,
        "values": values,
        "events": events,
        "events_per_s": events / result["wall_s"],
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "rows": rows,
        "distinct_seqs": seqs,
        "max_open_buffers": settings.bronze_max_open_buffers,
    }


def child(events: int, values: int) -> dict[str, float]:
    """Run one case in a fresh interpreter; its result."""
    command = [sys.executable, __file__, "--case", str(values), "--events", str(events)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"case with {values:,} values failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(few: dict[str, float], many: dict[str, float]) -> bool:
    ok = True
    print(
        f"{'values':>8} {'events/s':>10} {'files':>8} {'files/s':>8} {'most open':>10} "
        f"{'peak RSS':>10}  rows"
    )
    for case in (few, many):
        landed = case["rows"] == case["events"] == case["distinct_seqs"]
        ok &= landed
        print(
            f"{case['values']:>8,} {case['events_per_s']:>10,.0f} {case['files']:>8,.0f} "
            f"{case['files'] / case['wall_s']:>8,.0f} "
            f"{case['most_open']:>10,.0f} {case['peak_rss_mb']:>7,.0f} MiB  "
            f"{case['rows']:,}/{case['events']:,} {'OK' if landed else 'MISMATCH'}"
        )
    slowdown = few["events_per_s"] / many["events_per_s"]
    print(f"BRONZE_MAX_OPEN_BUFFERS: {many['max_open_buffers']:,.0f}")
    print(
        f"slowdown with {many['values']:,.0f} values: {slowdown:.2f}x "
        f"(goal <= {GOAL_RATIO}x: {'met' if slowdown <= GOAL_RATIO else 'NOT met'})"
    )
    print(f"peak RSS ratio many/few: {many['peak_rss_mb'] / few['peak_rss_mb']:.2f}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--values", type=int, default=20_000)
    parser.add_argument("--few", type=int, default=5)
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.events, args.case)))
        return 0
    print(f"{args.events:,} option trades in one hour, {args.few} vs {args.values:,} underlyings")
    few = child(args.events, args.few)
    many = child(args.events, args.values)
    return 0 if report(few, many) else 1


if __name__ == "__main__":
    sys.exit(main())
