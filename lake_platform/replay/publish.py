"""Publishing a replayed stream (`replay_hours`) to JetStream, in stream order, at a speed.

Each hour is encoded a chunk at a time (`CHUNK_EVENTS` events of the merged stream: each
table's slice encoded at once by `messages.subjects`/`messages.payloads`, in a worker thread,
the next chunk while the current one is sent), so memory holds the hour's rows and two chunks
of messages. Every message carries `Nats-Msg-Id` = its `event_id` (a Bronze row as ingested:
`{event_id}-{_stream_seq}`, see `msg_ids`): a JetStream target de-duplicates a replay
resumed within its duplicate window.

Publishes are pipelined (nats-py's `publish_async`: a future per message, no task): up to
`IN_FLIGHT` await their PubAck, settled oldest first, so the stats' last event is the last
one acked with every event before it acked too (what `--resume-after` continues from). A
publish whose PubAck fails or does not come within `ACK_TIMEOUT_S` of its sending is sent
again with the same id by the simulator's `publish_once` (retried with backoff for
`API_RETRY_S`, then `PublishFailedError`); after a server restart the stream holds every
event once, though publishes the client buffered while reconnecting may land before the
lost ones sent again.

Pacing (`speed`): event `e` is due at `anchor_wall + (ts(e) - anchor_ts) / speed` on the
monotonic clock, the anchor being the first event: the schedule is absolute, so sleeps that
overrun never add up (drift-corrected). An event already due is sent at once; when the
replay falls behind its schedule by more than `MAX_LAG_S` (a slow target, an hour being
read), the schedule is re-anchored at that event instead of bursting to catch up, and the
re-anchoring is counted. `speed=None` publishes as fast as the target acks.

The target: with no subject prefix the subjects are the live ones, and `MARKET`/`SIGNALS`
are created if missing, as every publisher does (`ensure_streams`). With a prefix, when no
stream takes any subject under it, the stream `{PREFIX}` (the prefix upper-cased, each
character a stream name cannot hold as `_`: `REPLAY` for `replay`) is created on
`{prefix}.>` with the retention of the settings. Before a subject is first published, the
target is asked which stream takes it: none is a `ReplayTargetError`, not a minute of
retries.

Cancelling (Ctrl-C under `asyncio.run`) stops sending, waits for the PubAcks in flight,
marks the stats `interrupted` and raises again: pass `stats` to read them afterwards.
"""

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import re
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import nats.errors
import polars as pl
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from lake_platform.ingest.connection import connect
from lake_platform.ingest.jetstream import ensure_streams, retrying
from lake_platform.replay.messages import payloads, subjects
from lake_platform.replay.stream import ReplayError, ReplayHour, replay_hours
from lake_platform.schemas import BY_TABLE
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import Message
from lake_platform.simulate.publisher import (
    ACK_TIMEOUT_S,
    IN_FLIGHT,
    MSG_ID_HEADER,
    PublishStats,
    publish_once,
)

CHUNK_EVENTS = 50_000
"""Events of the merged stream encoded at once."""
MAX_LAG_S = 1.0
"""How far behind its schedule a paced replay may fall before it is re-anchored."""
MIN_SLEEP_S = 0.001
"""An event due sooner than this is sent at once (a sleep that short oversleeps anyway)."""
PROGRESS_EVERY_S = 0.2
REPORT_EVERY = 256
"""Events sent between two looks at the clock for a progress report."""
MAX_SPEED = "max"
STREAM_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
BRONZE_SEQUENCE = "_stream_seq"


class ReplayTargetError(ReplayError):
    """The NATS target has no JetStream stream for a replayed subject."""


@dataclass
class ReplayStats:
    """What a replay published: counts per table (`published`, with retries and PubAcks
    marked duplicate), the last event acked in stream order, and the pacing's lag."""

    published: PublishStats = field(default_factory=PublishStats)
    hours: int = 0
    last_event_id: str | None = None
    last_event_ns: int | None = None
    lag_s: float = 0.0
    """How far behind its schedule the last paced event was sent."""
    max_lag_s: float = 0.0
    reanchors: int = 0
    """Times the schedule was re-anchored after falling more than `MAX_LAG_S` behind."""
    interrupted: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def events(self) -> int:
        return self.published.total

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Events acked per second of wall time."""
        return self.events / max(self.elapsed_s, 1e-9)

    @property
    def last_event_time(self) -> str | None:
        """The last event's time, ISO-8601 UTC to the nanosecond."""
        return None if self.last_event_ns is None else iso_ns(self.last_event_ns)

    def line(self) -> str:
        """Counts, rate, the event time reached and the lag, on one line."""
        by_table = ", ".join(f"{table} {n:,}" for table, n in self.published.by_schema.items())
        reached = self.last_event_time or "-"
        return (
            f"{self.events:,} events ({by_table or 'none'}) in {self.elapsed_s:.1f} s "
            f"({self.rate:,.0f}/s), event time reached {reached}, lag {self.lag_s:.2f} s "
            f"(max {self.max_lag_s:.2f} s, {self.reanchors} re-anchored), "
            f"{self.published.duplicates:,} already stored, {self.published.retries:,} retries"
        )

    def stopped_at(self) -> str:
        """The last event replayed and how to continue after it."""
        if self.last_event_id is None or self.last_event_ns is None:
            return "no event was replayed"
        return (
            f"{self.events:,} events replayed, the last {self.last_event_id} at "
            f"{iso_ns(self.last_event_ns)}; continue with --resume-after {self.last_event_id}"
        )

    def metadata(self) -> dict[str, object]:
        """The stats as plain values (a Dagster run's output metadata)."""
        return {
            "events": self.events,
            "by_table": dict(self.published.by_schema),
            "hours": self.hours,
            "last_event_id": self.last_event_id or "",
            "last_event_time": self.last_event_time or "",
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.rate, 1),
            "max_lag_s": round(self.max_lag_s, 3),
            "reanchors": self.reanchors,
            "already_stored": self.published.duplicates,
            "retries": self.published.retries,
        }


def iso_ns(ns: int) -> str:
    """Nanoseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`."""
    seconds, rest = divmod(ns, 10**9)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{rest:09d}Z"


class ReplayProgress(Protocol):
    """Told of a replay's progress: `advanced` every `PROGRESS_EVERY_S` or so while events
    are acked, `hour_done` once every event of an hour is acked."""

    def advanced(self, stats: ReplayStats) -> None: ...

    def hour_done(self, hour: dt.datetime, stats: ReplayStats) -> None: ...


@dataclass
class Pacer:
    """The schedule of a paced replay (see the module); `delay` is pure but for its state."""

    speed: float
    max_lag_s: float = MAX_LAG_S
    anchor_wall: float | None = None
    anchor_ns: int = 0

    def delay(self, ts_ns: int, now: float, stats: ReplayStats) -> float:
        """Seconds to wait before sending the event of time `ts_ns` at wall time `now`
        (0: send it now); records the lag in `stats`."""
        if self.anchor_wall is None:
            self.anchor_wall, self.anchor_ns = now, ts_ns
        behind = now - (self.anchor_wall + (ts_ns - self.anchor_ns) / 1e9 / self.speed)
        if behind > self.max_lag_s:
            self.anchor_wall, self.anchor_ns = now, ts_ns
            stats.reanchors += 1
        stats.lag_s = max(0.0, behind)
        stats.max_lag_s = max(stats.max_lag_s, stats.lag_s)
        return max(0.0, -behind)


@dataclass(frozen=True)
class EncodedChunk:
    """Consecutive events of one hour of the stream, as messages: per table (`tables`), its
    subjects, payloads, `Nats-Msg-Id`s (`msg_ids`) and event times; `order` the table of each
    event."""

    hour: dt.datetime
    final: bool
    """The hour's last chunk."""
    tables: tuple[str, ...]
    order: list[int]
    subjects: tuple[list[str], ...]
    payloads: tuple[list[bytes], ...]
    msg_ids: tuple[list[str], ...]
    times: tuple[list[int], ...]
    distinct_subjects: frozenset[str]

    def events(self) -> Iterator[tuple[str, str, bytes, str, int]]:
        """(table, subject, payload, msg id, event time) of each event, in stream order."""
        offsets = [0] * len(self.tables)
        for index in self.order:
            at = offsets[index]
            offsets[index] = at + 1
            yield (
                self.tables[index],
                self.subjects[index][at],
                self.payloads[index][at],
                self.msg_ids[index][at],
                self.times[index][at],
            )


def encoded_chunks(
    hours: Iterable[ReplayHour], prefix: str, as_recorded: bool, size: int = CHUNK_EVENTS
) -> Iterator[EncodedChunk]:
    """The hours' events as messages, `size` events of the stream at a time."""
    for hour in hours:
        offsets = [0] * len(hour.tables)
        for start in range(0, hour.events, size):
            order = hour.order.slice(start, size)
            parts = []
            for index, frame in enumerate(hour.frames):
                count = int((order == index).sum())
                parts.append(frame.slice(offsets[index], count))
                offsets[index] += count
            schemas = [BY_TABLE[table] for table in hour.tables]
            chunk_subjects = tuple(
                subjects(schema, part, prefix) for schema, part in zip(schemas, parts, strict=True)
            )
            yield EncodedChunk(
                hour=hour.hour,
                final=start + size >= hour.events,
                tables=hour.tables,
                order=order.to_list(),
                subjects=chunk_subjects,
                payloads=tuple(
                    payloads(s, f, as_recorded=as_recorded)
                    for s, f in zip(schemas, parts, strict=True)
                ),
                msg_ids=tuple(msg_ids(part) for part in parts),
                times=tuple(f.get_column("ts_event_ns").to_list() for f in parts),
                distinct_subjects=frozenset().union(*map(set, chunk_subjects)),
            )


def msg_ids(rows: pl.DataFrame) -> list[str]:
    """Each row's `Nats-Msg-Id`: its `event_id`; for a Bronze row as ingested (with its
    `_stream_seq`), `{event_id}-{_stream_seq}`, so that the duplicates Bronze holds reach the
    target too (one id each) instead of being dropped by its duplicate window."""
    if BRONZE_SEQUENCE not in rows.columns:
        return rows.get_column("event_id").to_list()
    ids = pl.concat_str(pl.col("event_id"), pl.lit("-"), pl.col(BRONZE_SEQUENCE).cast(pl.String))
    return rows.select(ids).to_series().to_list()


def event_id_of(msg_id: str) -> str:
    """The `event_id` of a `Nats-Msg-Id` made by `msg_ids` (event ids are hex: no `-`)."""
    return msg_id.partition("-")[0]


def replay_stream_name(prefix: str) -> str:
    """The stream a replay under `prefix` creates when no stream takes its subjects."""
    return STREAM_NAME_UNSAFE.sub("_", prefix).upper()


class Target:
    """The JetStream target of a replay: its streams made or found, each subject checked."""

    def __init__(self, js: JetStreamContext, settings: LakeSettings, prefix: str) -> None:
        self.js, self.settings, self.prefix = js, settings, prefix
        self.checked: set[str] = set()

    async def prepare(self) -> None:
        """The live streams (no prefix), or the prefix's stream when nothing takes it."""
        if not self.prefix:
            await ensure_streams(self.js, self.settings)
            return
        if await self._stream_of(f"{self.prefix}.>") is None:
            name = replay_stream_name(self.prefix)
            await ensure_streams(self.js, self.settings, {name: f"{self.prefix}.>"})

    async def check(self, chunk_subjects: frozenset[str]) -> None:
        """A `ReplayTargetError` when no stream takes one of the subjects."""
        for subject in chunk_subjects - self.checked:
            if await self._stream_of(subject) is None:
                hint = (
                    f"create a stream on {self.prefix}.> or choose another --subject-prefix"
                    if self.prefix
                    else "a stream on its first tokens (MARKET on market.>, SIGNALS on levels.>)"
                )
                raise ReplayTargetError(f"no JetStream stream takes subject {subject}: {hint}")
            self.checked.add(subject)

    async def _stream_of(self, subject: str) -> str | None:
        try:
            return await retrying(
                f"stream of {subject}", self.js.find_stream_name_by_subject, subject
            )
        except NotFoundError:
            return None


class _Sent(NamedTuple):
    future: "asyncio.Future[PubAck] | None"
    """The PubAck to come; None when the publish could not even be sent."""
    sent_at: float
    table: str
    subject: str
    payload: bytes
    msg_id: str
    ts_ns: int


class AckWindow:
    """Publishes awaiting their PubAck, oldest first; settling one records it in `stats`.

    The publish loop's per-event cost is what bounds a replay at `max` speed, so an event
    acked in time is settled synchronously (`settle_acked`); only a wait, a failure or a
    time-out goes through `settle_oldest`."""

    def __init__(self, js: JetStreamContext, stats: ReplayStats) -> None:
        self.js, self.stats = js, stats
        self.sent: deque[_Sent] = deque()

    async def send(self, table: str, subject: str, payload: bytes, msg_id: str, ts: int) -> None:
        try:
            future = await self.js.publish_async(subject, payload, headers={MSG_ID_HEADER: msg_id})
        except nats.errors.Error:  # sent again by `publish_once`, which retries or says why
            future = None
        self.sent.append(_Sent(future, time.monotonic(), table, subject, payload, msg_id, ts))

    def full(self) -> bool:
        return len(self.sent) >= IN_FLIGHT

    def settle_acked(self) -> None:
        """Record the oldest publishes as long as their PubAck is in."""
        sent, published = self.sent, self.stats.published
        while sent:
            future = sent[0].future
            if future is None or not future.done() or future.cancelled() or future.exception():
                return
            oldest = sent.popleft()
            published.by_schema[oldest.table] += 1
            published.duplicates += bool(future.result().duplicate)
            self._record(oldest)

    async def settle_oldest(self) -> None:
        """Wait for the oldest publish's PubAck, up to `ACK_TIMEOUT_S` after it was sent
        (publishes lost together time out together); send it again when it failed or did not
        come (`publish_once`), and record it."""
        oldest = self.sent[0]
        future = oldest.future
        if future is not None and not future.done():
            remaining = oldest.sent_at + ACK_TIMEOUT_S - time.monotonic()
            await asyncio.wait((future,), timeout=max(0.0, remaining))
        self.settle_acked()
        if self.sent and self.sent[0] is oldest:
            if future is not None:
                future.cancel()
            message = Message(oldest.subject, oldest.payload, oldest.table)
            await publish_once(self.js, message, oldest.msg_id, self.stats.published)
            self.sent.popleft()
            self._record(oldest)

    def _record(self, settled: _Sent) -> None:
        self.stats.last_event_id = event_id_of(settled.msg_id)
        self.stats.last_event_ns = settled.ts_ns

    async def drain(self) -> None:
        while self.sent:
            await self.settle_oldest()

    def abandon(self) -> None:
        """Forget the publishes in flight (after a failure)."""
        for sent in self.sent:
            if sent.future is not None:
                sent.future.cancel()
        self.sent.clear()


async def publish_replay(
    settings: LakeSettings,
    hours: Iterable[ReplayHour],
    *,
    speed: float | None,
    prefix: str,
    as_recorded: bool,
    progress: ReplayProgress | None = None,
    stats: ReplayStats | None = None,
) -> ReplayStats:
    """Publish the stream of `hours` to the JetStream of `settings` (see the module): on
    `{prefix}.{subject}`, `source` set to `replay` unless `as_recorded`, at `speed` times
    real time (None: as fast as acked). Returns `stats` (a new one when None)."""
    if speed is not None and not speed > 0:
        raise ReplayError(f"the speed must be positive: {speed}")
    stats = stats or ReplayStats()
    chunks = encoded_chunks(hours, prefix, as_recorded)
    chunk = await asyncio.to_thread(next, chunks, None)
    if chunk is None:
        stats.finished = time.monotonic()
        return stats
    nc = await connect(settings, name="lake-platform replay")
    upcoming: asyncio.Future[EncodedChunk | None] | None = None
    try:
        js = nc.jetstream(publish_async_max_pending=2 * IN_FLIGHT)
        target = Target(js, settings, prefix)
        await target.prepare()
        window = AckWindow(js, stats)
        sender = _Sender(window, Pacer(speed) if speed else None, progress)
        try:
            while chunk is not None:
                upcoming = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
                await target.check(chunk.distinct_subjects)
                await sender.send_chunk(chunk)
                if chunk.final:
                    await window.drain()
                    stats.hours += 1
                    if progress is not None:
                        progress.hour_done(chunk.hour, stats)
                chunk = await upcoming
                upcoming = None
            await window.drain()
        except asyncio.CancelledError:
            stats.interrupted = True
            await window.drain()
            raise
        except BaseException:
            window.abandon()
            raise
    finally:
        if upcoming is not None:
            upcoming.cancel()
        stats.finished = time.monotonic()
        with contextlib.suppress(Exception):
            await nc.close()
    return stats


class _Sender:
    """Sends a chunk's events through the window, paced, telling `progress` on the way."""

    def __init__(
        self, window: AckWindow, pacer: Pacer | None, progress: ReplayProgress | None
    ) -> None:
        self.window, self.pacer, self.progress = window, pacer, progress
        self.reported = time.monotonic()

    async def send_chunk(self, chunk: EncodedChunk) -> None:
        window, pacer, stats = self.window, self.pacer, self.window.stats
        for count, (table, subject, payload, msg_id, ts) in enumerate(chunk.events(), 1):
            if pacer is not None:
                delay = pacer.delay(ts, time.monotonic(), stats)
                if delay >= MIN_SLEEP_S:
                    await asyncio.sleep(delay)
                    self._report()
            if window.full():
                await window.settle_oldest()
            await window.send(table, subject, payload, msg_id, ts)
            window.settle_acked()
            if not count % REPORT_EVERY:
                self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.reported >= PROGRESS_EVERY_S:
            self.reported = now
            self.progress.advanced(self.window.stats)


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay and how: the options of `lake-platform replay` and of `replay_job`."""

    start: str
    end: str
    tables: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    speed: float | None = None
    """Times real time; None: as fast as the target acks."""
    subject_prefix: str = "replay"
    as_recorded: bool = False
    source: str = "silver"
    as_of: str | None = None
    nats_url: str | None = None
    resume_after: str | None = None

    def settings(self, settings: LakeSettings) -> LakeSettings:
        """`settings` with `nats_url` (comma-separated servers) in force when given."""
        if not self.nats_url:
            return settings
        servers = tuple(url.strip() for url in self.nats_url.split(",") if url.strip())
        if not servers:
            raise ReplayError(f"no NATS server in {self.nats_url!r}")
        return dataclasses.replace(settings, nats_servers=servers)


def parse_speed(raw: str) -> float | None:
    """`max` (None) or a positive finite number of times real time."""
    if raw.strip().lower() == MAX_SPEED:
        return None
    try:
        speed = float(raw)
    except ValueError:
        speed = float("nan")
    if not 0 < speed < float("inf"):
        raise ReplayError(f"the speed must be a positive number or max, not {raw!r}")
    return speed


def replay_to_nats(
    request: ReplayRequest,
    settings: LakeSettings,
    stats: ReplayStats,
    progress: ReplayProgress | None = None,
) -> ReplayStats:
    """Read the request's range and publish it (`asyncio.run`; `stats` filled as it goes, so
    an interrupted replay still says where it stopped). The range is checked, and its first
    hour read, before NATS is asked: a `ReplayError` when it holds no event."""
    settings = request.settings(settings)
    hours = replay_hours(
        request.start,
        request.end,
        request.tables,
        request.symbols,
        request.source,
        request.as_of,
        settings,
        request.resume_after,
    )
    first = next(hours, None)
    if first is None:
        after = f" after event {request.resume_after}" if request.resume_after else ""
        raise ReplayError(f"no event to replay in [{request.start}, {request.end}){after}")
    return asyncio.run(
        publish_replay(
            settings,
            itertools.chain([first], hours),
            speed=request.speed,
            prefix=request.subject_prefix,
            as_recorded=request.as_recorded,
            progress=progress,
            stats=stats,
        )
    )
