"""Soak: the ingest under a steady live publish for N minutes; memory growth and commit latency.

Starts an embedded nats-server, publishes a simulated session at `--rate` events/s in real
time for `--minutes` (`lake-platform publish --live`, a process of its own) and runs the
ingest (`IngestService`, default settings) in this process until the publisher is done and
everything is committed. Prints this process's RSS after the warm-up and at the end (goal:
growth <= 10%), events/s ingested, and the commit latency (median, p99, max). Exit 1 unless
the Bronze and quarantine rows on disk are exactly the messages ingested.

    uv run python benchmarks/soak.py [--minutes 3] [--rate 1000] [--warmup-s 30]
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore

GOAL_GROWTH = 0.10
SAMPLE_S = 1.0


def rss_mb() -> float:
    """Resident set size of this process now."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Soak:
    """What the run measured."""

    warmup_s: float
    commits_s: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)
    """(seconds since start, MiB)."""

    def rss_at(self, seconds: float) -> float:
        return next((mb for at, mb in self.rss if at >= seconds), self.rss[-1][1])


def publisher(url: str, minutes: float, rate: float, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NATS_URL": url}
    env.pop("DAGSTER_HOME", None)
    command = [sys.executable, "-m", "lake_platform.cli", "publish", "--live"]
    command += ["--minutes", str(minutes), "--rate", str(rate), "--seed", "0"]
    with log.open("wb") as output:
        return subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)


async def soak(settings: LakeSettings, process: subprocess.Popen[bytes], result: Soak) -> int:
    """Ingest until the publisher exits; the messages ingested."""
    service = IngestService(
        settings,
        LakeStore.from_settings(settings),
        writer=writer_name("soak"),
        on_commit=result.commits_s.append,
    )
    stop = asyncio.Event()
    started = time.monotonic()

    async def watch() -> None:
        while process.poll() is None:
            result.rss.append((time.monotonic() - started, rss_mb()))
            await asyncio.sleep(SAMPLE_S)
        stop.set()

    watcher = asyncio.create_task(watch())
    stats = await service.run(stop=stop)
    await watcher
    result.rss.append((time.monotonic() - started, rss_mb()))
    return stats.messages


def rows_under(folder: Path) -> int:
    """Rows of every Parquet file below `folder` (tables differ in columns: footers only)."""
    return sum(pq.ParquetFile(path).metadata.num_rows for path in folder.rglob("*.parquet"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    args = parser.parse_args()
    if args.minutes * 60 <= args.warmup_s:
        parser.error("--minutes must last longer than --warmup-s")
    result = Soak(args.warmup_s)
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        root = Path(tmp)
        with NatsServer.start(root / "nats") as server:
            settings = LakeSettings(data_root=str(root / "lake"), nats_servers=(server.url,))
            process = publisher(server.url, args.minutes, args.rate, root / "publish.log")
            print(f"publishing {args.rate:,.0f} events/s for {args.minutes} min ...", flush=True)
            started = time.monotonic()
            messages = asyncio.run(soak(settings, process, result))
            wall_s = time.monotonic() - started
        if process.returncode:
            log = (root / "publish.log").read_text()[-2000:]
            print(f"the publisher exited {process.returncode}: {log}")
            return 1
        rows = rows_under(root / "lake" / "bronze")
        quarantined = rows_under(root / "lake" / "_quarantine")
    start, end = result.rss_at(args.warmup_s), result.rss[-1][1]
    growth = end / start - 1
    latencies = sorted(result.commits_s)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"events ingested:    {messages:,} in {wall_s:.0f} s ({messages / wall_s:,.0f}/s)")
    landed = "OK" if rows + quarantined == messages else "MISMATCH"
    print(f"on disk:            {rows:,} Bronze + {quarantined:,} quarantined rows: {landed}")
    print(f"RSS after warm-up:  {start:,.0f} MiB (at {args.warmup_s:.0f} s)")
    print(f"RSS at the end:     {end:,.0f} MiB (peak {max(mb for _, mb in result.rss):,.0f} MiB)")
    verdict = "met" if growth <= GOAL_GROWTH else "NOT met"
    print(f"RSS growth:         {growth:+.1%} (goal <= {GOAL_GROWTH:.0%}: {verdict})")
    print(
        f"commits:            {len(latencies):,}; latency median "
        f"{statistics.median(latencies) * 1e3:,.0f} ms, p99 {p99 * 1e3:,.0f} ms, "
        f"max {latencies[-1] * 1e3:,.0f} ms"
    )
    return 0 if landed == "OK" else 1


if __name__ == "__main__":
    sys.exit(main())
