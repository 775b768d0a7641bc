"""The Bronze ingest loop: pull from both streams, micro-batch, commit, ack.

Pulling runs in one task per stream; committing runs in a worker thread (Polars and the
Parquet writer release the GIL), so the next messages are pulled while a batch is written.
Acks are sent only after the batch's files and ledger entry are durable; the entry is
reported to Dagster after its acks, by a task of its own that calls the reporter in a
thread, so a slow or locked Dagster instance never holds back the acks or the commits.

The tasks are supervised: when one fails, the service stops, commits what it holds, and
raises `IngestFailedError`. Storage failures never stop it: transient ones are retried with
backoff (nothing is acked meanwhile), files the store rejects are quarantined (see `commit`).
Every third of the consumer's `ack_wait`, each message held (in a buffer waiting for its max
age, in a slow commit, in a retry) gets an in-progress ack, so it is not redelivered meanwhile.

A pull that JetStream answers with a status instead of messages (503: the consumer is
deleted or has no leader; 409: a conflict) backs off with jitter, is logged once per change,
makes `/healthz` fail after `PULL_UNHEALTHY_AFTER_S` and ends an `until_idle` run after
`PULL_GIVE_UP_S`; a deleted consumer is created again after the last committed message
(`consumer_recovery`). Every retry waits a jittered delay (`backoff.Backoff`).
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
from nats.js import JetStreamContext

from lake_platform.ingest.backoff import Backoff
from lake_platform.ingest.buffers import Buffer, Buffers
from lake_platform.ingest.commit import Commit, commit
from lake_platform.ingest.connection import LakeNatsClient, connect
from lake_platform.ingest.consumer_recovery import recreate_if_deleted
from lake_platform.ingest.failpoints import failpoint
from lake_platform.ingest.file_writes import Written
from lake_platform.ingest.jetstream import (
    DURABLE,
    ConsumerSizing,
    ensure_consumers,
    ensure_streams,
    pending_messages,
)
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.ingest.pull import NO_PENDING_MESSAGES, LeanPull, PulledMessages
from lake_platform.ingest.reports import Reporter, ReportQueue
from lake_platform.ingest.route import NOT_ISOLATED, route
from lake_platform.ingest.write_outcomes import Strikes
from lake_platform.schemas import STREAMS
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore, StorageError

log = logging.getLogger(__name__)

FETCH_BATCH = 10_000
DECODE_HEADROOM = 8
"""Pulls ask for at most (1 - 1/8) of the room `BRONZE_MAX_BUFFER_BYTES` leaves: decoded rows
may take a little more memory than the messages did."""
MESSAGE_OVERHEAD_BYTES = 64 * 1024
"""Subject, reply and headers of the largest message, beyond the server's `max_payload`."""
PULL_WAIT_S = 0.5
TICK_S = 0.1
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
"""Storage retries: from 1 s (jittered) up to this."""
PULL_FIRST_BACKOFF_S = 0.1
PULL_MAX_BACKOFF_S = 5.0
PULL_UNHEALTHY_AFTER_S = 30.0
"""Pulls answered 409/503 this long make `/healthz` fail (a leader election takes 4-7 s)."""
PULL_GIVE_UP_S = 60.0
"""Pulls answered 409/503 this long end an `until_idle` run (a sensor tick, a one-shot)."""
STATUS_MEANINGS = {
    "503": "no responders: the consumer was deleted or has no leader",
    "409": "a conflict",
}
FLUSH_TIMEOUT_S = 5
FINAL_COMMIT_ATTEMPTS = 3
IN_PROGRESS = b"+WPI"
"""JetStream's in-progress ack: restarts the message's `ack_wait` timer."""


class IngestFailedError(RuntimeError):
    """A task of the ingest failed; what it had pulled was committed or left unacked."""


class PullStuckError(RuntimeError):
    """JetStream answered a stream's pulls with 409/503 for longer than `PULL_GIVE_UP_S`."""


@dataclass
class PullTrouble:
    """Since when, and with which status, a stream's pulls get no messages but a 409/503."""

    backoff: Backoff = field(
        default_factory=lambda: Backoff(PULL_FIRST_BACKOFF_S, PULL_MAX_BACKOFF_S)
    )
    since: float | None = None
    state: str | None = None


@dataclass
class IngestStats:
    """Counters of one ingest run, for the status line and the summary."""

    started: float = field(default_factory=time.monotonic)
    messages: int = 0
    rows: int = 0
    files: int = 0
    quarantined: int = 0
    bytes: int = 0
    commits: int = 0
    storage_errors: int = 0
    last_error: str | None = None
    unhealthy: str | None = None
    """Why the worker cannot do its job now (pulls answered 503 for long), else None."""
    held_bytes_peak: int = 0
    """The most memory (estimated) messages pulled and not yet acked took at once."""

    @property
    def events_per_s(self) -> float:
        return self.messages / max(time.monotonic() - self.started, 1e-9)

    def line(self) -> str:
        """One status line; with storage errors, their count and the latest one."""
        line = (
            f"{self.messages:,} events ({self.events_per_s:,.0f}/s), {self.files:,} files, "
            f"{self.rows:,} rows, {self.quarantined:,} quarantined"
        )
        if self.storage_errors:
            line += f", {self.storage_errors:,} storage errors (last: {self.last_error})"
        return line


def writer_name(kind: str) -> str:
    """`{kind}:{host}:{pid}`, recorded in the ledger."""
    return f"{kind}:{socket.gethostname()}:{os.getpid()}"


class IngestService:
    """One ingest process (or one sensor tick): NATS JetStream to Bronze."""

    def __init__(
        self,
        settings: LakeSettings,
        store: LakeStore,
        *,
        writer: str,
        reporter: Reporter | None = None,
        on_status: Callable[[IngestStats], None] | None = None,
        on_commit: Callable[[float], None] | None = None,
        final_commit_attempts: int = FINAL_COMMIT_ATTEMPTS,
    ) -> None:
        """`final_commit_attempts`: commits tried at shutdown while storage fails (a sensor
        tick makes one, so a hanging store cannot carry it past the sensor timeout).
        `on_commit`: called with the duration (s) of every commit, failed ones included."""
        self.settings = settings
        self.store = store
        self.writer = writer
        self.reporter = reporter
        self.on_status = on_status
        self.on_commit = on_commit
        self.final_commit_attempts = final_commit_attempts
        self.sizing = ConsumerSizing.for_settings(settings)
        self.stats = IngestStats()
        self.buffers = Buffers(settings)
        self._unknown_fields: Counter[str] = Counter()
        self._drained: dict[str, bool] = dict.fromkeys(STREAMS, False)
        self._committing_rows = 0
        self._routing_rows = 0
        self._committing_bytes = 0
        self._routing_bytes = 0
        self._retry_at = 0.0
        self.storage_backoff = Backoff(FIRST_BACKOFF_S, MAX_BACKOFF_S)
        self._pull_troubles: dict[str, str] = {}
        self._until_idle = False
        self._stopping = False
        self._nc: LakeNatsClient | None = None
        self._committing: list[Buffer] = []
        self._written = Written()
        self._strikes = Strikes()
        self._unrecorded_rows = 0  # in files a failed commit wrote, awaiting their ledger entry
        self._unsent_acks: list[str] = []  # of committed messages, while NATS is away
        self._reports = ReportQueue()

    @property
    def running(self) -> bool:
        """From connecting to NATS until it starts stopping (a signal, the end, a failed task)."""
        return self._nc is not None and not self._stopping

    async def run(
        self,
        *,
        until_idle: bool = False,
        max_seconds: float | None = None,
        stop: asyncio.Event | None = None,
        check_access: bool = True,
    ) -> IngestStats:
        """Ingest until `stop` is set, `max_seconds` pass, or (`until_idle`) nothing is pending.

        With `until_idle`, buffers are committed as soon as both streams are drained instead
        of waiting for their max age. Everything pulled is committed and acked before returning.
        Wrong credentials or a missing bucket fail at once (`check_access`; False when the
        caller has checked already).
        """
        stop = stop or asyncio.Event()
        self._until_idle = until_idle
        if check_access:
            await asyncio.to_thread(self.store.check_access)
        nc = self._nc = await connect(
            self.settings, name=f"lake-platform {self.writer}", error_cb=self._on_nats_error
        )
        js = nc.jetstream()
        pulls: list[LeanPull] = []
        tasks: dict[asyncio.Task[None], str] = {}
        progress: asyncio.Task[None] | None = None
        reporting: asyncio.Task[None] | None = None
        failure: str | None = None
        try:
            await ensure_streams(js, self.settings)
            ack_wait_s = await ensure_consumers(js, self.sizing)
            pulls = [LeanPull(nc, stream, DURABLE) for stream in STREAMS]
            for pull in pulls:
                await pull.start()
            tasks = {asyncio.create_task(self._pull_loop(p, js)): f"pull {p.stream}" for p in pulls}
            progress = asyncio.create_task(self._progress_loop(ack_wait_s / 3))
            tasks[progress] = "in-progress acks"
            if self.reporter is not None:
                reporting = asyncio.create_task(self._reports.report(self.store, self.reporter))
            deadline = None if max_seconds is None else time.monotonic() + max_seconds
            next_status = time.monotonic() + 1.0
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), TICK_S)
                if failure := _failed_task(tasks):
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                await self._send_acks()
                if now >= self._retry_at:
                    drained = until_idle and all(self._drained.values())
                    everything = drained or self._pull_bytes() is None
                    await self._commit(
                        self.buffers.take_all() if everything else self.buffers.take_due(now)
                    )
                if until_idle and self._idle() and await self._nothing_pending(js):
                    break
                if self.on_status is not None and now >= next_status:
                    self.on_status(self.stats)
                    next_status = now + 1.0
        finally:
            self._stopping = True
            failure = failure or _failed_task(tasks)
            if progress is not None:
                progress.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            failure = failure or _failed_task(tasks)
            try:
                await self._final_commit()
                await self._send_acks()
                await self._reports.drain(reporting)
            finally:
                if self._unsent_acks:
                    log.error(
                        "NATS unreachable at shutdown: %d committed messages not acked, "
                        "JetStream redelivers them (Silver removes the duplicates)",
                        len(self._unsent_acks),
                    )
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    for pull in pulls:
                        await pull.stop()
                    await nc.flush(timeout=FLUSH_TIMEOUT_S)  # unflushed acks mean redelivery
                await nc.close()
        if self.on_status is not None:
            self.on_status(self.stats)
        if failure is not None:
            raise IngestFailedError(f"ingest stopped: {failure}")
        return self.stats

    async def _nothing_pending(self, js: JetStreamContext) -> bool:
        try:
            return await pending_messages(js) == 0
        except Exception as error:  # unreachable server: not idle, ask again next tick
            log.warning("cannot read consumer state: %s", error)
            return False

    def _held_rows(self) -> int:
        """Messages pulled and not yet acked: the consumer's limit bounds them."""
        held = self.buffers.rows + self._committing_rows + self._routing_rows
        return held + self._unrecorded_rows + len(self._unsent_acks)

    def _held_bytes(self) -> int:
        """Estimated memory of the messages pulled and not yet acked."""
        return self.buffers.bytes + self._committing_bytes + self._routing_bytes

    def _note_held_bytes(self) -> None:
        self.stats.held_bytes_peak = max(self.stats.held_bytes_peak, self._held_bytes())

    def _pull_bytes(self) -> int | None:
        """`max_bytes` of the next pull: a stream's share of the room `BRONZE_MAX_BUFFER_BYTES`
        leaves, less the decoding headroom (the streams' pulls run at once, so each may fill
        its share); None when a share cannot hold the largest message the server takes (the
        buffers are then committed at once). Holding nothing, a pull may always take one
        largest message, even past a bound smaller than that."""
        assert self._nc is not None
        bound = self.settings.bronze_max_buffer_bytes
        held = self._held_bytes()
        share = (bound - bound // DECODE_HEADROOM - held) // len(STREAMS)
        largest = self._nc.max_payload + MESSAGE_OVERHEAD_BYTES
        if share >= largest:
            return share
        return largest if held == 0 else None

    def _idle(self) -> bool:
        return (
            all(self._drained.values())
            and len(self.buffers) == 0
            and not self._committing_rows
            and not self._routing_rows
            and not self._written
            and not self._unsent_acks
        )

    def _held_replies(self) -> list[str]:
        """Ack subjects of the messages in buffers, being committed, or written unrecorded."""
        replies = [*self._written.replies, *self.buffers.replies()]
        for buffer in self._committing:
            replies.extend(buffer.replies())
        return replies

    async def _progress_loop(self, every_s: float) -> None:
        """Every `every_s`, an in-progress ack for each message held.

        A message is pulled at most `PULL_WAIT_S` (plus routing) before it is held, so with
        `every_s` a third of `ack_wait` it gets its first in-progress ack well within it.
        """
        assert self._nc is not None
        while not self._stopping:
            await asyncio.sleep(every_s)
            try:
                await self._nc.publish_all(self._held_replies(), IN_PROGRESS)
            except nats.errors.Error as error:  # reconnecting: the next round sends them
                log.warning("cannot send in-progress acks: %s", error)

    async def _pull_loop(self, pull: LeanPull, js: JetStreamContext) -> None:
        """Fetch, and route the previous batch in a worker thread while the next one arrives."""
        routing: asyncio.Task[None] | None = None
        trouble = PullTrouble()
        while not self._stopping:
            room = self.sizing.process_inflight - self._held_rows()
            max_bytes = self._pull_bytes()
            if (
                room <= 0
                or max_bytes is None
                or self.buffers.full
                or time.monotonic() < self._retry_at
            ):
                await asyncio.sleep(TICK_S)
                continue
            try:
                messages, drained = await pull.fetch(min(FETCH_BATCH, room), PULL_WAIT_S, max_bytes)
            except Exception as error:  # a reconnecting client raises; the loop retries
                log.warning("pull from %s failed, retrying: %s", pull.stream, error)
                await asyncio.sleep(PULL_WAIT_S)
                continue
            raw_bytes = _raw_bytes(messages)
            self._routing_bytes += raw_bytes
            self._note_held_bytes()
            if routing is not None:
                await routing
                routing = None
            self._drained[pull.stream] = drained and not messages
            if messages:
                routing = asyncio.create_task(self._accept(messages, raw_bytes))
            else:
                self._routing_bytes -= raw_bytes
            if messages or pull.status is None or pull.status in NO_PENDING_MESSAGES:
                self._pull_works(pull, trouble)
            else:
                await self._pull_refused(pull, js, trouble)
        if routing is not None:
            await routing

    def _pull_works(self, pull: LeanPull, trouble: PullTrouble) -> None:
        if trouble.state is not None:
            log.warning("pulls from %s work again (after %s)", pull.stream, trouble.state)
        trouble.since = trouble.state = None
        trouble.backoff.reset()
        if self._pull_troubles.pop(pull.stream, None) is not None:
            self.stats.unhealthy = "; ".join(self._pull_troubles.values()) or None

    async def _pull_refused(
        self, pull: LeanPull, js: JetStreamContext, trouble: PullTrouble
    ) -> None:
        """A pull answered with a status instead of messages: recreate a deleted consumer,
        else wait a jittered, growing delay (the server answers at once: asking again at once
        would spin). Said once per status; past the bounds, unhealthy, then given up."""
        state = f"{pull.status} {pull.description}".strip()
        now = time.monotonic()
        if trouble.state != state:
            meaning = STATUS_MEANINGS.get(pull.status or "", "unexpected")
            log.warning("pull from %s answered %s (%s), backing off", pull.stream, state, meaning)
            trouble.state = state
        if trouble.since is None:
            trouble.since = now
        if (pull.status == "503" or "Deleted" in pull.description) and await self._recreated(
            js, pull.stream
        ):
            return
        lasting = f"pulls from {pull.stream} answered {state} for {now - trouble.since:.0f}s"
        if now - trouble.since >= PULL_UNHEALTHY_AFTER_S:
            self._pull_troubles[pull.stream] = lasting
            self.stats.unhealthy = "; ".join(self._pull_troubles.values())
        if self._until_idle and now - trouble.since >= PULL_GIVE_UP_S:
            raise PullStuckError(f"{lasting}: is stream {pull.stream} or its consumer gone?")
        await asyncio.sleep(trouble.backoff.next())

    async def _recreated(self, js: JetStreamContext, stream: str) -> bool:
        """True when the consumer of `stream` was deleted and is created again now."""
        try:
            return await recreate_if_deleted(js, self.store, stream, self.sizing)
        except (nats.errors.Error, StorageError) as error:
            log.warning("cannot check or recreate the consumer of %s: %s", stream, error)
            return False

    async def _accept(self, pulled: PulledMessages, raw_bytes: int) -> None:
        """Route `pulled` (`raw_bytes` of messages, counted as held until routed) into the
        buffers."""
        try:
            failpoint(f"raise:route:{pulled.stream}")
            self._routing_rows += len(pulled)
            try:
                routed = await asyncio.to_thread(
                    route,
                    pulled,
                    earliest_ns=int(self.settings.partitions_start.timestamp()) * 10**9,
                    now_ns=time.time_ns(),
                )
            finally:
                self._routing_rows -= len(pulled)
            self.buffers.add(routed)
        finally:
            self._routing_bytes -= raw_bytes
        self._note_held_bytes()
        self._unknown_fields.update(routed.unknown_field_messages)
        self.stats.messages += len(pulled)

    async def _commit(self, buffers: list[Buffer]) -> bool:
        """Commit `buffers` (and files left by a failed commit); False when storage failed.

        What was written is recorded and acked; what was not goes back to the buffers and
        is retried after a backoff.
        """
        if not buffers and not self._written:
            return True
        unknown, self._unknown_fields = dict(self._unknown_fields), Counter()
        rows = sum(buffer.rows for buffer in buffers)
        held_bytes = sum(buffer.bytes for buffer in buffers)
        self._committing_rows += rows
        self._committing_bytes += held_bytes
        self._committing = buffers
        started = time.monotonic()
        earlier_entries = int(self._written.entry is not None)  # a failed try's, written first
        try:
            done = await asyncio.to_thread(self._commit_or_fail, buffers, unknown)
        finally:
            self._committing_rows -= rows
            self._committing_bytes -= held_bytes
            self._committing = []
            self._unrecorded_rows = len(self._written.replies)
        if self.on_commit is not None:
            self.on_commit(time.monotonic() - started)
        self.buffers.put_back(done.unwritten)
        if len(done.entries) <= earlier_entries:  # no entry of this try's files
            self._unknown_fields.update(unknown)
        if done.entries:
            await self._acknowledge(done.entries, done.replies)
        if done.error is None:
            self.storage_backoff.reset()
            return True
        self.stats.storage_errors += 1
        self.stats.last_error = str(done.error)
        delay = self.storage_backoff.next()
        self._retry_at = time.monotonic() + delay
        then = "stopping" if self._stopping else f"retrying in {delay:.1f}s"
        log.error(
            "storage failed (%s), %d messages not acked, %s: %s",
            done.error.kind,
            self._held_rows(),
            then,
            done.error,
        )
        return False

    def _commit_or_fail(self, buffers: list[Buffer], unknown: dict[str, int]) -> Commit:
        """`commit`; an error it does not foresee (a panic outside the writes) fails it like
        storage: what it held is not acked, JetStream redelivers it after `ack_wait`."""
        try:
            return commit(
                self.store,
                buffers,
                written=self._written,
                writer=self.writer,
                unknown_field_messages=unknown,
                strikes=self._strikes,
            )
        except NOT_ISOLATED:
            raise
        except BaseException as failure:
            held = sum(buffer.rows for buffer in buffers)
            log.exception("commit failed unexpectedly, %d messages left for redelivery", held)
            error = StorageError(f"commit failed: {type(failure).__name__}: {failure}")
            return Commit((), [], [], error)

    async def _final_commit(self) -> None:
        """Commit everything held before stopping; a few quick retries if storage fails,
        one try when the last commit already failed (against a store that is down, each try
        would only delay the stop: ~5 s against an unreachable S3 endpoint).

        Whatever still cannot be written stays unacked: JetStream redelivers it later.
        """
        last_failed = self.storage_backoff.failing  # reset by a success
        for attempt in range(1 if last_failed else self.final_commit_attempts):
            if attempt:
                await asyncio.sleep(attempt)
            if await self._commit(self.buffers.take_all()):
                return
        log.error(
            "storage still failing at shutdown: %d messages left unacked for redelivery",
            self._held_rows(),
        )

    async def _acknowledge(self, entries: tuple[LedgerEntry, ...], replies: list[str]) -> None:
        """Ack the entries' messages (or keep the acks until NATS is back), then queue the
        entries for reporting."""
        self._unsent_acks.extend(replies)
        await self._send_acks()
        for entry in entries:
            if self.reporter is not None:
                self._reports.put(entry)
            self.stats.commits += 1
            self.stats.files += len(entry.files)
            self.stats.rows += sum(f.rows for f in entry.files)
            self.stats.quarantined += sum(f.rows for f in entry.quarantine)
            self.stats.bytes += sum(f.bytes for f in (*entry.files, *entry.quarantine))

    async def _send_acks(self) -> None:
        """Send the acks of committed messages; while the client reconnects, keep them.

        nats-py buffers what is published while it reconnects, but only up to 2 MiB (~26k
        acks), and raises past that: the acks of a large commit stay here instead and go out
        once the client is connected again. Messages whose acks wait past `ack_wait` are
        redelivered, and written again: Silver removes such duplicates.
        """
        assert self._nc is not None
        if not self._unsent_acks or not self._nc.is_connected:
            return
        replies, self._unsent_acks = self._unsent_acks, []
        try:
            await self._nc.publish_all(replies)
        except nats.errors.Error as error:  # disconnected meanwhile: the next tick sends them
            log.warning("cannot send %d acks yet: %s", len(replies), error)
            self._unsent_acks[:0] = replies

    async def _on_nats_error(self, error: Exception) -> None:
        log.warning("NATS: %s", error)


def _raw_bytes(messages: PulledMessages) -> int:
    """Payload, subject and reply bytes of pulled messages (what `max_bytes` counts, but
    headers)."""
    return (
        sum(map(len, messages.payloads))
        + sum(map(len, messages.subjects))
        + sum(map(len, messages.replies))
    )


def _failed_task(tasks: dict[asyncio.Task[None], str]) -> str | None:
    """`what failed: error` for the first finished task that raised, else None."""
    for task, name in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            return f"{name} failed: {type(error).__name__}: {error}"
    return None
