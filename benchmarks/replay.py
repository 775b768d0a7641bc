"""Replay throughput and memory: the lake's events read back in event-time order, by the
library (`lake_platform.replay.events`) and onto JetStream (`lake-platform replay --speed max`).

Builds a lake whose Iceberg catalog holds Silver hours as the Silver rebuild leaves them
(`catalog_lake.commit_silver_hour`; the rows of `asof.py`'s generators): for each of H hours
(default 3), N stock trades and 3N quotes over S symbols (default 1M and ~3.06M over 50),
N/10 option trades and 2N/5 greeks snapshots of 2,000 contracts of 5 underlyings: ~4.5M
events an hour at `--scale 1`. Then, each in a fresh child process (imports untimed, peak RSS
reset once they are done; every child runs with the allocator setting of a lake_platform
process):

* library: `events(start, end, settings=...)` over the whole range, every run iterated and
  its `frame.height` counted (the events must be those of the lake): events/s, and peak RSS
  over imports divided by the largest hour's Arrow size (`estimated_size` of that hour's
  rows of every table, as the replay holds them); goals >= 1M events/s, <= 3x;
* hours: the same stream taken an hour at a time (`replay_hours`), no run handed out: the
  library less its run loop;
* floor (the baseline of the same run): the same Silver files of each table-hour read with
  `pl.read_parquet`, no catalog, sort or merge;
* parts: one more library run with timers around its steps (opening the catalog and pinning
  the snapshots, reading each table-hour through the catalog, sorting it, merging the
  hour's tables; the rest is the run loop handing out the slices), so the bound is explained.

Then the publish path, over the first `--publish-events` events of the first hour (the
range rounded up to a whole second; default 500k), on a nats-server started here on
127.0.0.1 (stopped by its process id), each run into a fresh stream on `replay.>`:

* replay: `replay_to_nats` of that range at `--speed max` (read, encode, publish pipelined),
  timed whole, from reading the lake to the last PubAck (the moment it connects noted);
* lean: a plain nats-py publisher sending the same subjects and payloads, precomputed by the
  library (untimed, its CPU time noted), with the same `Nats-Msg-Id` headers and in-flight
  window (`IN_FLIGHT` PubAcks awaited oldest first), timed from connecting to the last
  PubAck.

The stream must hold every event after each run, and both streams the same bytes (exit 1
otherwise). Variants take turns (`--repeat` rounds), medians shown with CPU time and the load
average (on a shared machine wall time moves most); the ratios divide figures of the same
run. The goals (library >= 1M events/s, peak RSS <= 3x the largest hour, replay >= 0.8x
lean) are only reported. `--measure library|publish` times one half only. `--lake DIR` keeps
the lake in DIR and reuses it when built with the same `--scale`, `--symbols` and `--hours`.

    uv run python benchmarks/replay.py [--scale 1.0] [--symbols 50] [--hours 3] [--repeat 3]
        [--publish-events 500000] [--measure library publish] [--lake DIR]
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nats
import polars as pl
from asof import (
    CONTRACTS,
    CONTRACTS_WITHOUT_GREEKS,
    contracts,
    greeks,
    option_trades,
    stock_quotes,
    stock_trades,
    symbols,
)
from catalog_lake import commit_silver_hour, store_at
from nats.js.errors import NotFoundError
from silver import HOUR, HOUR_NS, HOUR_START_NS, child_env, peak_rss_mb, reset_peak_rss_mb

from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.replay import events, publish, replay_hours, stream
from lake_platform.replay.encoding import encoded_chunks
from lake_platform.replay.request import ReplayRequest, replay_to_nats
from lake_platform.replay.stats import ReplayStats
from lake_platform.replay.target import replay_stream_name
from lake_platform.schemas import BY_NAME, TableSchema
from lake_platform.settings import LakeSettings
from lake_platform.simulate.publisher import IN_FLIGHT, MSG_ID_HEADER

TRADES, QUOTES = BY_NAME["stocks.trades"], BY_NAME["stocks.quotes"]
OPTION_TRADES, GREEKS = BY_NAME["options.trades"], BY_NAME["options.greeks"]
TABLES: tuple[TableSchema, ...] = (TRADES, QUOTES, OPTION_TRADES, GREEKS)
TRADES_PER_SCALE = 1_000_000
QUOTES_PER_TRADE = 3
OPTION_TRADES_PER_TRADE = 0.1
GREEKS_PER_TRADE = 0.4
UNDERLYINGS = 5
PREFIX = "replay"
STREAM = replay_stream_name(PREFIX)
MARKER = "bench-replay.json"
GOAL_EVENTS_PER_S = 1_000_000
GOAL_MEMORY_VS_ARROW = 3.0
GOAL_PUBLISH_VS_LEAN = 0.8
MEASURES = ("library", "publish")
CHILDREN = ("library", "hours", "parts", "floor", "replay", "lean")
NESTED = "  "
"""Parts that start with it are within the part above them."""


@dataclass
class Lake:
    """What setup built (and what the marker file stores): rows of each table by hour, and
    each hour's events and Arrow size as the replay holds them."""

    scale: float
    symbols: int
    hours: int
    rows: dict[str, dict[str, int]]
    hour_events: list[int]
    hour_arrow_bytes: list[int]

    @property
    def events(self) -> int:
        return sum(self.hour_events)


@dataclass
class Run:
    """One child run: wall and CPU seconds of the work alone, events and runs handed out,
    RSS after imports and peak RSS (MiB), the parts' seconds (the `parts` child)."""

    child: str
    seconds: float
    cpu_seconds: float
    events: int
    runs: int = 0
    rss_after_imports_mb: float = 0.0
    peak_rss_mb: float = 0.0
    parts: dict[str, float] = field(default_factory=dict)
    ready_s: float = 0.0
    """replay: seconds before it connected (the first hour read, its first chunk encoded)."""
    prepared_cpu_s: float = 0.0
    """lean: CPU seconds reading and encoding its messages, untimed (the replay does it too)."""

    @property
    def rate(self) -> float:
        return self.events / max(self.seconds, 1e-9)

    @property
    def peak_over_imports_mb(self) -> float:
        return self.peak_rss_mb - self.rss_after_imports_mb


def hour_start(index: int) -> dt.datetime:
    return HOUR + dt.timedelta(hours=index)


def range_ns(hours: int) -> tuple[int, int]:
    return HOUR_START_NS, HOUR_START_NS + hours * HOUR_NS


def settings_of(lake: Path, nats_url: str | None = None) -> LakeSettings:
    servers = {} if nats_url is None else {"nats_servers": (nats_url,)}
    return LakeSettings(data_root=str(lake), **servers)  # type: ignore[arg-type]


def shifted(frame: pl.DataFrame, offset_ns: int) -> pl.DataFrame:
    """`frame`'s event and receive times moved `offset_ns` later."""
    return frame.with_columns(pl.col("ts_event_ns", "ts_recv_ns") + offset_ns)


def hour_rows(index: int, scale: float, names: list[str]) -> dict[TableSchema, pl.DataFrame]:
    """Hour `index`'s rows of each table (seeds of their own per hour)."""
    start = HOUR_START_NS + index * HOUR_NS
    seed = 1_000 * index
    trades = round(TRADES_PER_SCALE * scale)
    book = contracts(names, CONTRACTS + CONTRACTS_WITHOUT_GREEKS)
    stock = stock_trades(trades, start, HOUR_NS, names, seed + 100)
    return {
        TRADES: stock,
        QUOTES: stock_quotes(trades * QUOTES_PER_TRADE, start, HOUR_NS, names, stock, seed + 300),
        OPTION_TRADES: shifted(
            option_trades(max(1, round(trades * OPTION_TRADES_PER_TRADE)), book, seed + 500),
            index * HOUR_NS,
        ),
        GREEKS: greeks(max(1, round(trades * GREEKS_PER_TRADE)), start, HOUR_NS, book, seed + 600),
    }


def build_lake(lake: Path, scale: float, count: int, hours: int) -> Lake:
    """Every table's hours committed as Silver hours, then each hour's events and Arrow size
    measured through the replay itself."""
    store, names = store_at(lake), symbols(count)
    rows: dict[str, dict[str, int]] = {schema.table: {} for schema in TABLES}
    for index in range(hours):
        hour = hour_start(index)
        for schema, frame in hour_rows(index, scale, names).items():
            rows[schema.table][hour.isoformat()] = commit_silver_hour(store, schema, frame, hour)
    hour_events, hour_arrow = [], []
    for replayed in replay_hours(*range_ns(hours), settings=settings_of(lake)):
        hour_events.append(replayed.events)
        hour_arrow.append(sum(int(frame.estimated_size()) for frame in replayed.frames))
    return Lake(scale, count, hours, rows, hour_events, hour_arrow)


def prepare_lake(lake: Path, scale: float, count: int, hours: int) -> tuple[Lake, float | None]:
    """The lake in `lake`: reused when its marker matches, else built (seconds)."""
    marker = lake / MARKER
    if marker.exists():
        built = Lake(**json.loads(marker.read_text()))
        if (built.scale, built.symbols, built.hours) == (scale, count, hours):
            return built, None
        raise SystemExit(f"{lake} holds another lake ({built}); use another --lake")
    if (lake / "silver").exists():
        raise SystemExit(f"{lake} holds a lake without {MARKER}; use an empty --lake")
    start = time.perf_counter()
    built = build_lake(lake, scale, count, hours)
    marker.write_text(json.dumps(asdict(built)))
    return built, time.perf_counter() - start


class Parts:
    """Seconds spent in wrapped functions, by label (summed over calls)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def add(self, label: str, seconds: float) -> None:
        self.seconds[label] = self.seconds.get(label, 0.0) + seconds

    def wrap(self, name: str, label: str, collect: bool = False) -> None:
        """Time every call of `stream.<name>` from now on; with `collect`, the LazyFrame it
        returns is collected inside the timer (and handed on as a LazyFrame of the rows)."""
        original = getattr(stream, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = original(*args, **kwargs)
                return result.collect().lazy() if collect else result
            finally:
                self.add(label, time.perf_counter() - start)

        setattr(stream, name, timed)


TABLE_HOUR_PART = "read + sort each table-hour"
READ_PART = f"{NESTED}of which read through the catalog"
SORT_PART = f"{NESTED}of which sort (the rest)"
MERGE_PART = "merge the hour's tables"
PARTS = (
    ("open the catalog, pin the snapshots", ("open_lake_tables", "_pinned_snapshots")),
    (TABLE_HOUR_PART, ("_table_hour",)),
    (READ_PART, ("read",)),
    (MERGE_PART, ("merged_hour",)),
)
RUN_LOOP_PART = "run loop (slices handed out, the rest)"


def consume(start_ns: int, end_ns: int, lake: Path) -> tuple[int, int]:
    """Every run of the library's stream iterated: (events, runs)."""
    count = runs = 0
    for _, frame in events(start_ns, end_ns, settings=settings_of(lake)):
        count += frame.height
        runs += 1
    return count, runs


def consume_hours(start_ns: int, end_ns: int, lake: Path) -> tuple[int, int]:
    """Every hour of the stream (`replay_hours`) taken whole, no run handed out: (events, 0)."""
    count = 0
    for hour in replay_hours(start_ns, end_ns, settings=settings_of(lake)):
        count += hour.events
    return count, 0


def read_floor(start_ns: int, end_ns: int, lake: Path) -> tuple[int, int]:
    """The same Silver files of every table-hour read by Polars, an hour at a time (the
    files listed before the timer): (rows, 0)."""
    hours = []
    for hour_ns in range(start_ns, end_ns, HOUR_NS):
        hour = dt.datetime.fromtimestamp(hour_ns / 1e9, dt.UTC)
        pattern = f"*/date={hour:%Y-%m-%d}/hour={hour:%H}/*.parquet"
        hours.append([sorted((lake / "silver" / s.table).glob(pattern)) for s in TABLES])

    def run() -> tuple[int, int]:
        rows = 0
        for files in hours:
            rows += sum(pl.read_parquet(paths).height for paths in files if paths)
        return rows, 0

    return timed_child("floor", run)


def timed_child(child: str, run: Callable[[], tuple[int, int]], parts: Parts | None = None) -> Run:
    """`run` timed from here (imports done, RSS peak reset): its `Run`."""
    rss = reset_peak_rss_mb()
    cpu, start = time.process_time(), time.perf_counter()
    count, runs = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    done = Run(child, seconds, cpu, count, runs, rss, peak_rss_mb())
    if parts is not None:
        done.parts = explained(parts.seconds, seconds)
    return done


def explained(seconds: dict[str, float], total: float) -> dict[str, float]:
    """The parts' seconds in `PARTS` order, with the sort (a table-hour less its read) after
    the read and the run loop (the whole less every part) last."""
    parts = {label: seconds.get(label, 0.0) for label, _ in PARTS}
    read = parts.pop(READ_PART)
    merge = parts.pop(MERGE_PART)
    counted = sum(parts.values()) + merge
    sort = parts[TABLE_HOUR_PART] - read
    return {
        **parts,
        READ_PART: read,
        SORT_PART: sort,
        MERGE_PART: merge,
        RUN_LOOP_PART: total - counted,
    }


def library_child(child: str, lake: Path, start_ns: int, end_ns: int) -> Run:
    if child == "floor":
        return read_floor(start_ns, end_ns, lake)
    if child == "hours":
        return timed_child(child, lambda: consume_hours(start_ns, end_ns, lake))
    parts = None
    if child == "parts":
        parts = Parts()
        for label, names in PARTS:
            for name in names:
                parts.wrap(name, label, collect=name == "read")
    return timed_child(child, lambda: consume(start_ns, end_ns, lake), parts)


def iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns // 10**9, dt.UTC).isoformat()


def replay_child(lake: Path, start_ns: int, end_ns: int, url: str) -> Run:
    """`replay_to_nats` of the range at --speed max, timed whole."""
    request = ReplayRequest(start=iso(start_ns), end=iso(end_ns), subject_prefix=PREFIX)
    settings = settings_of(lake, url)
    moments: list[float] = []
    connect = publish.connect

    async def noted(*args: Any, **kwargs: Any) -> Any:
        moments.append(time.perf_counter())
        return await connect(*args, **kwargs)

    publish.connect = noted

    def run() -> tuple[int, int]:
        moments.append(time.perf_counter())
        stats = replay_to_nats(request, settings, ReplayStats())
        if stats.published.duplicates or stats.published.retries:
            raise SystemExit(f"replay: {stats.line()}")
        return stats.events, 0

    done = timed_child("replay", run)
    done.ready_s = moments[1] - moments[0]
    return done


def lake_messages(lake: Path, start_ns: int, end_ns: int) -> list[tuple[str, bytes, str]]:
    """(subject, payload, `Nats-Msg-Id`) of every event of the range in stream order, as the
    replay encodes them."""
    hours = replay_hours(start_ns, end_ns, settings=settings_of(lake))
    return [
        (subject, payload, msg_id)
        for chunk in encoded_chunks(hours, PREFIX, as_recorded=False)
        for _, subject, payload, msg_id, _ in chunk.events()
    ]


async def lean_publish(url: str, messages: list[tuple[str, bytes, str]]) -> int:
    """Publish `messages` with their ids, `IN_FLIGHT` PubAcks awaited oldest first; the
    PubAcks that were not duplicates."""
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=2 * IN_FLIGHT)
    pending: deque[asyncio.Future[Any]] = deque()
    stored = 0
    try:
        for subject, payload, msg_id in messages:
            if len(pending) >= IN_FLIGHT:
                stored += not (await pending.popleft()).duplicate
            future = await js.publish_async(subject, payload, headers={MSG_ID_HEADER: msg_id})
            pending.append(future)
        for future in pending:
            stored += not (await future).duplicate
    finally:
        await nc.close()
    return stored


def lean_child(lake: Path, start_ns: int, end_ns: int, url: str) -> Run:
    cpu = time.process_time()
    messages = lake_messages(lake, start_ns, end_ns)
    prepared_cpu_s = time.process_time() - cpu
    done = timed_child("lean", lambda: (asyncio.run(lean_publish(url, messages)), 0))
    done.prepared_cpu_s = prepared_cpu_s
    return done


def child_main(args: argparse.Namespace) -> None:
    """Run one child in this process; print its `Run` as JSON."""
    if args.child in ("replay", "lean"):
        run_child = replay_child if args.child == "replay" else lean_child
        done = run_child(args.lake, args.start_ns, args.end_ns, args.nats)
    else:
        done = library_child(args.child, args.lake, args.start_ns, args.end_ns)
    print(json.dumps(asdict(done)))


def spawn(child: str, lake: Path, start_ns: int, end_ns: int, url: str | None = None) -> Run:
    command = [sys.executable, __file__, "--child", child, "--lake", str(lake)]
    command += ["--start-ns", str(start_ns), "--end-ns", str(end_ns)]
    command += ["--nats", url] if url else []
    done = subprocess.run(command, capture_output=True, text=True, env=child_env())
    if done.returncode:
        raise SystemExit(f"{child} failed ({done.returncode}):\n{done.stderr}")
    return Run(**json.loads(done.stdout.strip().splitlines()[-1]))


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def median(runs: list[Run]) -> Run:
    """Each figure's median over the runs (the events must not differ between runs)."""
    if len({run.events for run in runs}) > 1:
        raise SystemExit(f"{runs[0].child} handed out different events: {runs}")
    return Run(
        runs[0].child,
        statistics.median(run.seconds for run in runs),
        statistics.median(run.cpu_seconds for run in runs),
        runs[0].events,
        runs[0].runs,
        statistics.median(run.rss_after_imports_mb for run in runs),
        statistics.median(run.peak_rss_mb for run in runs),
        ready_s=statistics.median(run.ready_s for run in runs),
        prepared_cpu_s=statistics.median(run.prepared_cpu_s for run in runs),
    )


def show(attempt: int, run: Run) -> None:
    print(
        f"  run {attempt} {run.child:<8} {run.seconds:7.2f} s, CPU {run.cpu_seconds:7.2f} s, "
        f"{run.events:,} events ({run.rate:,.0f}/s), peak RSS {run.peak_rss_mb:,.0f} MiB "
        f"({run.peak_over_imports_mb:,.0f} over imports)  ({load()})",
        flush=True,
    )


def measure_library(lake: Path, built: Lake, repeat: int) -> bool:
    """The library and floor runs in turns, then the parts run; prints the figures; whether
    every run handed out the lake's events."""
    start_ns, end_ns = range_ns(built.hours)
    runs: dict[str, list[Run]] = {"floor": [], "hours": [], "library": []}
    for attempt in range(1, repeat + 1):
        for child in runs:
            runs[child].append(spawn(child, lake, start_ns, end_ns))
            show(attempt, runs[child][-1])
    parts = spawn("parts", lake, start_ns, end_ns)
    show(1, parts)
    library, hours, floor = (median(runs[child]) for child in ("library", "hours", "floor"))
    arrow_mb = max(built.hour_arrow_bytes) / 2**20
    memory = library.peak_over_imports_mb / arrow_mb
    print(f"library over {built.hours} hours, {built.events:,} events (medians of {repeat}):")
    print(
        f"  library events/s: {library.rate:,.0f}  goal >= {GOAL_EVENTS_PER_S:,}: "
        f"{'met' if library.rate >= GOAL_EVENTS_PER_S else 'NOT met'}  "
        f"({library.seconds:.2f} s, CPU {library.cpu_seconds:.2f} s: "
        f"{library.events / max(library.cpu_seconds, 1e-9):,.0f} events a CPU second; "
        f"{library.runs:,} runs, {library.events / max(library.runs, 1):.2f} events a run)"
    )
    print(
        f"  hours (replay_hours taken whole, no run handed out) events/s: {hours.rate:,.0f}; "
        f"library / hours: {library.rate / max(hours.rate, 1e-9):.2f}x"
    )
    print(
        f"  floor (pl.read_parquet of the same files) rows/s: {floor.rate:,.0f}; "
        f"library / floor: {library.rate / max(floor.rate, 1e-9):.2f}x, "
        f"hours / floor: {hours.rate / max(floor.rate, 1e-9):.2f}x"
    )
    print(
        f"  peak RSS / largest hour Arrow size: {memory:.2f}x  goal <= {GOAL_MEMORY_VS_ARROW}x: "
        f"{'met' if memory <= GOAL_MEMORY_VS_ARROW else 'NOT met'}  (peak RSS over imports "
        f"{library.peak_over_imports_mb:,.0f} MiB, {library.peak_rss_mb:,.0f} MiB with the "
        f"{library.rss_after_imports_mb:,.0f} MiB of imports; largest hour {arrow_mb:,.0f} MiB)"
    )
    print(f"  parts (one run with timers, {parts.seconds:.2f} s, {parts.rate:,.0f} events/s):")
    for label, seconds in parts.parts.items():
        print(f"    {label:<42} {seconds:7.2f} s  {seconds / parts.seconds:6.1%}")
    loop = parts.parts[RUN_LOOP_PART]
    print(
        f"    run loop: {loop / max(parts.runs, 1) * 1e6:.2f} µs a run, "
        f"{parts.events / max(loop, 1e-9):,.0f} events/s alone"
    )
    right = {run.events for done in runs.values() for run in [*done, parts]} == {built.events}
    print(f"  every run handed out the lake's {built.events:,} events: {'yes' if right else 'NO'}")
    return right


async def fresh_stream(url: str) -> None:
    """The replay's stream deleted if present, then created as the replay creates it."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(STREAM)
        await ensure_streams(js, LakeSettings(), {STREAM: f"{PREFIX}.>"})
    finally:
        await nc.close()


async def stream_state(url: str) -> tuple[int, int]:
    """(messages, bytes) the replay's stream holds."""
    nc = await nats.connect(url)
    try:
        state = (await nc.jetstream().stream_info(STREAM)).state
        return state.messages, state.bytes
    finally:
        await nc.close()


def publish_range(lake: Path, built: Lake, events_wanted: int) -> tuple[int, int, int]:
    """(start, end, events) of the first hour's first `events_wanted` events or so (the end
    rounded up to a whole second)."""
    seconds = math.ceil(3600 * min(1.0, events_wanted / built.hour_events[0]))
    start_ns = HOUR_START_NS
    end_ns = start_ns + seconds * 10**9
    count = sum(h.events for h in replay_hours(start_ns, end_ns, settings=settings_of(lake)))
    return start_ns, end_ns, count


def measure_publish(lake: Path, built: Lake, root: Path, repeat: int, wanted: int) -> bool:
    """The replay and the lean publisher in turns, each into a fresh stream; prints the
    figures; whether every stream held every event, the same bytes for both."""
    start_ns, end_ns, count = publish_range(lake, built, wanted)
    print(f"publish: {count:,} events of [{iso(start_ns)}, {iso(end_ns)}) ...", flush=True)
    runs: dict[str, list[Run]] = {"lean": [], "replay": []}
    states: set[tuple[int, int]] = set()
    with NatsServer.start(root / "nats") as server:
        for attempt in range(1, repeat + 1):
            for child in runs:
                asyncio.run(fresh_stream(server.url))
                runs[child].append(spawn(child, lake, start_ns, end_ns, server.url))
                states.add(asyncio.run(stream_state(server.url)))
                show(attempt, runs[child][-1])
    lean, replay = median(runs["lean"]), median(runs["replay"])
    ratio = replay.rate / max(lean.rate, 1e-9)
    cpu_ratio = lean.cpu_seconds / max(replay.cpu_seconds, 1e-9)
    rounds = [
        one.rate / max(other.rate, 1e-9)
        for one, other in zip(runs["replay"], runs["lean"], strict=True)
    ]
    print(f"publish --speed max into JetStream (medians of {repeat}):")
    print(
        f"  replay {replay.rate:,.0f} events/s ({replay.seconds:.2f} s, CPU "
        f"{replay.cpu_seconds:.2f} s, reading and encoding included), lean {lean.rate:,.0f} "
        f"events/s ({lean.seconds:.2f} s, CPU {lean.cpu_seconds:.2f} s)"
    )
    print(
        f"  replay publish vs lean publisher: {ratio:.2f}x  goal >= {GOAL_PUBLISH_VS_LEAN}x: "
        f"{'met' if ratio >= GOAL_PUBLISH_VS_LEAN else 'NOT met'}  (CPU s: {cpu_ratio:.2f}x; "
        f"each round's: {', '.join(f'{value:.2f}x' for value in rounds)})"
    )
    sending = replay.events / max(replay.seconds - replay.ready_s, 1e-9)
    print(
        f"  of the replay's {replay.seconds:.2f} s, {replay.ready_s:.2f} s before it connected "
        f"(the first hour read, its first chunk encoded); from connecting {sending:,.0f} "
        f"events/s: {sending / max(lean.rate, 1e-9):.2f}x lean"
    )
    extra, prepared = replay.cpu_seconds - lean.cpu_seconds, lean.prepared_cpu_s
    print(
        f"  the replay's CPU beyond lean's: {extra:.2f} s ({extra / replay.events * 1e6:.1f} µs "
        f"an event), of which reading and encoding the range (lean's untimed preparation) "
        f"{prepared:.2f} s; the rest, {extra - prepared:.2f} s "
        f"({(extra - prepared) / replay.events * 1e6:.1f} µs an event), the replay's own loop "
        f"over the messages"
    )
    (stored, _), *_ = states
    right = len(states) == 1 and stored == count
    verdict = "yes" if right else f"NO: (messages, bytes) {sorted(states)}"
    print(f"  every stream held the {count:,} events, the same bytes: {verdict}")
    return right


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every row count")
    parser.add_argument("--symbols", type=int, default=50, help="stock symbols (>= 6)")
    parser.add_argument("--hours", type=int, default=3, help="hours in the lake and replayed")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median shown)")
    parser.add_argument("--publish-events", type=int, default=500_000)
    parser.add_argument(
        "--measure", nargs="+", choices=MEASURES, default=list(MEASURES), help="what to time"
    )
    parser.add_argument("--lake", type=Path, help="lake root to keep and reuse")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("--start-ns", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--end-ns", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--nats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return 0
    if min(args.scale, args.repeat, args.hours, args.publish_events) <= 0:
        parser.error("--scale, --repeat, --hours, --publish-events must be positive")
    if args.symbols <= UNDERLYINGS:
        parser.error(f"--symbols must be above {UNDERLYINGS}")
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        lake = (args.lake or Path(tmp) / "lake").absolute()
        lake.mkdir(parents=True, exist_ok=True)
        print(f"lake in {lake} ({load()}) ...", flush=True)
        built, setup_s = prepare_lake(lake, args.scale, args.symbols, args.hours)
        print(f"  setup {'reused' if setup_s is None else f'{setup_s:.1f} s'}", flush=True)
        print(
            f"  {built.events:,} events; by hour "
            + ", ".join(
                f"{count:,} ({size / 2**20:,.0f} MiB Arrow)"
                for count, size in zip(built.hour_events, built.hour_arrow_bytes, strict=True)
            ),
            flush=True,
        )
        ok = True
        if "library" in args.measure:
            ok = measure_library(lake, built, args.repeat)
        if "publish" in args.measure:
            ok = measure_publish(lake, built, Path(tmp), args.repeat, args.publish_events) and ok
        print(f"done ({load()})")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
