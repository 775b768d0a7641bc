"""The random kill -9 loop: a simulated session ingested by `lake-platform ingest` processes
SIGKILLed at random moments, compared with a clean single-run ingest of the same stream.

Used by `test_chaos_ingest.py` (short) and `benchmarks/chaos_ingest.py` (long). One seed
decides the session and every kill moment, so a failing run is repeated with its seed.

The session is published at a steady rate in a thread for as long as the kills take, so every
process has work when it dies. Each process is killed a random time after its first status
line (it is then connected and pulling; the interpreter's start-up is not counted). The
last run drains the streams with `--until-idle`. Then the consumers are deleted and one
in-process ingest reads the same streams again into a second lake: both lakes hold the same
messages with the same stored times and stream sequences, so their Silver and Gold, rebuilt
hour by hour, must be the same bytes.
"""

import asyncio
import dataclasses
import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import polars as pl

from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import GOLD_BARS, GOLD_SIGNALS, SILVER_TABLES
from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.jetstream import DURABLE
from lake_platform.ingest.ledger import read_entries
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.schemas import BY_NAME, STREAMS
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import Message, SessionSpec, session
from lake_platform.simulate.publisher import publish
from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import settings_env
from lake_platform_tests.session import decoded_rows, read_table
from lake_platform_tests.tables_of import tables_of

SESSION_MINUTES = 10.0
FINAL_RUN_S = 300
STARTED_S = 120
"""How long a process may take to print its first status line."""
DERIVED = (*SILVER_TABLES.values(), GOLD_SIGNALS, GOLD_BARS)
"""Silver first: Gold bars read Silver trades."""


@dataclass(frozen=True)
class ChaosPlan:
    """What to publish and when to kill: all from `seed`."""

    events: int
    kills: int
    seed: int
    max_delay_s: float = 4.0

    def messages(self) -> list[Message]:
        spec = SessionSpec(
            minutes=SESSION_MINUTES,
            rate=self.events / (SESSION_MINUTES * 60),
            seed=self.seed,
            end_ns=time.time_ns(),
        )
        return list(session(spec))

    def delays(self) -> list[float]:
        """Seconds from each process's first status line to its SIGKILL."""
        rng = random.Random(self.seed)
        return [rng.uniform(0.0, self.max_delay_s) for _ in range(self.kills)]

    @property
    def publish_rate(self) -> float:
        """Events/s that spread the session over the kills (each run lives ~3 s + delay)."""
        return self.events / (self.kills * (3.0 + self.max_delay_s / 2))


@dataclass
class ChaosResult:
    """The figures of one run, and every difference found (none when nothing was lost)."""

    plan: ChaosPlan
    published: int = 0
    good: int = 0
    bad: int = 0
    kills: int = 0
    kill_delays_s: list[float] = field(default_factory=list)
    entries_before_kill: list[int] = field(default_factory=list)
    """Ledger entries each killed process had committed: it died while working."""
    bronze_rows: int = 0
    derived_files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return sum(1 for problem in self.problems if problem.startswith("lost"))

    def lines(self) -> list[str]:
        return [
            f"seed {self.plan.seed}: {self.published:,} messages published "
            f"({self.good:,} good, {self.bad:,} bad), {self.kills} SIGKILLs at "
            + ", ".join(f"{delay:.1f}" for delay in self.kill_delays_s)
            + " s after their first status line; ledger entries each had committed: "
            + ", ".join(map(str, self.entries_before_kill)),
            f"bronze rows {self.bronze_rows:,} (duplicates from redelivery included); "
            f"silver+gold files compared byte for byte: {self.derived_files:,}",
            f"problems: {len(self.problems)}",
            *self.problems,
        ]


def ingest_process(settings: LakeSettings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """`lake-platform ingest` in a process of its own, its output into `log`."""
    env = {**os.environ, **settings_env(settings)}
    env.pop("DAGSTER_HOME", None)
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "lake_platform.cli", "ingest", *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def delete_consumers(url: str) -> None:
    """Forget what the ingest consumed, so a new ingest reads both streams from the start."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in STREAMS:
            await js.delete_consumer(stream, DURABLE)
    finally:
        await nc.close()


def wait_started(process: subprocess.Popen[bytes], log: Path) -> bool:
    """Until the process's first status line (False if it exits or never prints one)."""
    deadline = time.monotonic() + STARTED_S
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and b" events (" in log.read_bytes():
            return True
        time.sleep(0.05)
    return False


def entries_by(store: LakeStore, pid: int) -> int:
    """Ledger entries written by process `pid`."""
    now = time.time_ns()
    entries = read_entries(store, now - 48 * 3_600 * 10**9, now)
    return sum(1 for entry in entries if entry.writer.endswith(f":{pid}"))


class Publisher(threading.Thread):
    """The session published at a steady rate beside the kill loop."""

    def __init__(self, settings: LakeSettings, messages: list[Message], rate: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.messages, self.rate = settings, messages, rate
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(publish(self.settings, self.messages, rate=self.rate, progress=False))
        except BaseException as error:  # reported by the kill loop
            self.error = error


def kill_loop(
    settings: LakeSettings,
    plan: ChaosPlan,
    messages: list[Message],
    logs: Path,
    result: ChaosResult,
) -> None:
    """Start an ingest, SIGKILL it after the plan's delay, again; then drain with one more."""
    logs.mkdir(parents=True, exist_ok=True)
    store = LakeStore.from_settings(settings)
    publisher = Publisher(settings, messages, plan.publish_rate)
    publisher.start()
    for index, delay in enumerate(plan.delays()):
        log = logs / f"run-{index:02d}.log"
        process = ingest_process(settings, log)
        if not wait_started(process, log):
            process.kill()
            result.problems.append(f"run {index} never started: {log.read_text()[-500:]}")
            return
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        if process.wait() != -signal.SIGKILL:
            result.problems.append(f"run {index} exited by itself ({process.returncode})")
            continue
        result.kills += 1
        result.kill_delays_s.append(delay)
        result.entries_before_kill.append(entries_by(store, process.pid))
    publisher.join()
    if publisher.error is not None:
        result.problems.append(f"publishing failed: {publisher.error!r}")
    final = ingest_process(
        settings, logs / "final.log", "--until-idle", "--max-seconds", str(FINAL_RUN_S)
    )
    if final.wait(timeout=FINAL_RUN_S + 60):
        log = (logs / "final.log").read_text(errors="replace")[-2000:]
        result.problems.append(f"the final ingest exited {final.returncode}: {log}")


def clean_ingest(settings: LakeSettings) -> None:
    """One undisturbed ingest of the whole stream, in this process."""
    service = IngestService(settings, LakeStore.from_settings(settings), writer=writer_name("c"))
    asyncio.run(service.run(until_idle=True, max_seconds=FINAL_RUN_S))


def expected_ids(messages: list[Message]) -> dict[str, tuple[int, set[str]]]:
    """Per table: messages published (re-publishes counted) and their distinct event ids."""
    expected = {}
    for name in sorted({m.schema for m in messages if m.schema is not None}):
        payloads = [m.payload for m in messages if m.schema == name]
        rows = decoded_rows(name, payloads)
        expected[BY_NAME[name].table] = (len(payloads), set(rows.get_column("event_id")))
    return expected


def check_bronze(root: str, messages: list[Message], result: ChaosResult) -> None:
    """Every good message in Bronze (by event id and stream sequence), every bad one in the
    quarantine (by stream sequence and payload)."""
    for table, (count, event_ids) in expected_ids(messages).items():
        rows = read_table(root, f"bronze/{table}")
        result.bronze_rows += rows.height
        landed = set(rows.get_column("event_id")) if rows.height else set()
        seqs = rows.get_column("_stream_seq").n_unique() if rows.height else 0
        if landed != event_ids:
            missing, extra = len(event_ids - landed), len(landed - event_ids)
            result.problems.append(f"lost {table}: {missing} event ids missing, {extra} extra")
        if seqs != count:
            result.problems.append(f"lost {table}: {seqs} stream sequences of {count} messages")
    bad = [m.payload for m in messages if m.schema is None]
    quarantine = read_table(root, "_quarantine")
    seqs = quarantine.select(pl.struct("stream", "stream_seq").n_unique()).item() if bad else 0
    payloads = set(quarantine.get_column("payload")) if quarantine.height else set()
    if seqs != len(bad) or payloads != set(bad):
        result.problems.append(f"lost quarantine: {seqs} stream sequences of {len(bad)} bad")


def bronze_hours(store: LakeStore) -> list[dt.datetime]:
    """Every UTC hour with a Bronze file."""
    hours = set()
    for path in store.list_files("bronze"):
        date = next(p for p in path.split("/") if p.startswith("date="))[5:]
        hour = next(p for p in path.split("/") if p.startswith("hour="))[5:]
        hours.add(dt.datetime.fromisoformat(f"{date}T{hour}:00+00:00"))
    return sorted(hours)


def derived_bytes(store: LakeStore) -> dict[str, bytes]:
    """Rebuild Silver and Gold for every Bronze hour; the bytes of every file they hold."""
    for hour in bronze_hours(store):
        for table in DERIVED:
            rebuild_hour(tables_of(store), table, hour)
    paths = [*store.list_files("silver"), *store.list_files("gold")]
    return dict(zip(paths, store.read_many_bytes(paths), strict=True))


def compare_derived(chaos: LakeStore, clean: LakeStore, result: ChaosResult) -> None:
    ours, theirs = derived_bytes(chaos), derived_bytes(clean)
    result.derived_files = len(theirs)
    if sorted(ours) != sorted(theirs):
        only = sorted(set(ours) ^ set(theirs))[:5]
        result.problems.append(f"derived file sets differ, e.g. {only}")
    differing = [path for path in theirs if path in ours and ours[path] != theirs[path]]
    if differing:
        result.problems.append(f"{len(differing)} derived files differ, e.g. {differing[:3]}")


def run_chaos(
    workdir: Path, plan: ChaosPlan, progress: Callable[[str], None] = lambda _: None
) -> ChaosResult:
    """The whole scenario on a nats-server of its own under `workdir`."""
    result = ChaosResult(plan)
    messages = plan.messages()
    result.published = len(messages)
    result.bad = sum(1 for m in messages if m.schema is None)
    result.good = result.published - result.bad
    with NatsServer.start(workdir / "nats") as server:
        settings = LakeSettings(
            data_root=str(workdir / "chaos"),
            nats_servers=(server.url,),
            bronze_max_age_s=0.5,
            gold_max_age_s=0.5,
        )
        progress(f"kill loop: {plan.kills} kills, {len(messages):,} messages (seed {plan.seed})")
        kill_loop(settings, plan, messages, workdir / "logs", result)
        progress("clean single-run ingest of the same stream")
        asyncio.run(delete_consumers(server.url))
        clean = dataclasses.replace(settings, data_root=str(workdir / "clean"))
        clean_ingest(clean)
    progress("checking Bronze and the quarantine, rebuilding Silver and Gold")
    check_bronze(settings.data_root, messages, result)
    clean_check = ChaosResult(plan)
    check_bronze(clean.data_root, messages, clean_check)
    result.problems += [f"clean lake: {problem}" for problem in clean_check.problems]
    compare_derived(LakeStore.from_settings(settings), LakeStore.from_settings(clean), result)
    return result
