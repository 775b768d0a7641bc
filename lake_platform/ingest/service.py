"""The Bronze ingest loop: pull from both streams, micro-batch, commit, ack.

Pulling runs in one task per stream (`pull_loop`); committing runs in a worker thread
(Polars and the Parquet writer release the GIL), so the next messages are pulled while a
batch is written. Acks are sent only after the batch's files and ledger entry are durable
(`acks`); the entry is reported to Dagster after its acks, by a task of its own that calls
the reporter in a thread (`reports`), so a slow or locked Dagster instance never holds back
the acks or the commits. What the worker holds meanwhile, and so how much it may pull, is
counted in `held`.

The tasks are supervised: when one fails, the service stops, commits what it holds, and
raises `IngestFailedError`. Storage failures never stop it: transient ones are retried with
backoff (nothing is acked meanwhile), files the store rejects are quarantined (see `commit`).
Every retry waits a jittered delay (`backoff.Backoff`).
"""

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable

import nats.errors
from nats.js import JetStreamContext

from lake_platform.ingest.acks import UnsentAcks, send_in_progress_acks
from lake_platform.ingest.backoff import Backoff
from lake_platform.ingest.buffers import Buffer, Buffers
from lake_platform.ingest.commit import Commit, commit
from lake_platform.ingest.connection import LakeNatsClient, connect
from lake_platform.ingest.file_writes import Written
from lake_platform.ingest.held import Held
from lake_platform.ingest.jetstream import (
    DURABLE,
    ConsumerSizing,
    ensure_consumers,
    ensure_streams,
    pending_messages,
)
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.ingest.pull import LeanPull
from lake_platform.ingest.pull_loop import TICK_S, PullHealth, StreamPulls
from lake_platform.ingest.reports import Reporter, ReportQueue
from lake_platform.ingest.route import NOT_ISOLATED
from lake_platform.ingest.stats import IngestStats
from lake_platform.ingest.write_outcomes import Strikes
from lake_platform.schemas import STREAMS
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore, StorageError

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
"""Storage retries: from 1 s (jittered) up to this."""
FLUSH_TIMEOUT_S = 5
FINAL_COMMIT_ATTEMPTS = 3


class IngestFailedError(RuntimeError):
    """A task of the ingest failed; what it had pulled was committed or left unacked."""


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
        self._retry_at = 0.0
        self.storage_backoff = Backoff(FIRST_BACKOFF_S, MAX_BACKOFF_S)
        self._stopping = False
        self._nc: LakeNatsClient | None = None
        self._written = Written()
        self._strikes = Strikes()
        self._unsent_acks = UnsentAcks()  # of committed messages, while NATS is away
        self._held = Held(
            self.buffers,
            self._written,
            self._unsent_acks,
            self.stats,
            settings.bronze_max_buffer_bytes,
        )
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
        if check_access:
            await asyncio.to_thread(self.store.check_access)
        nc = self._nc = await connect(
            self.settings, name=f"lake-platform {self.writer}", error_cb=self._on_nats_error
        )
        js = nc.jetstream()
        health = PullHealth(self.store, self.sizing, self.stats, until_idle)
        earliest_ns = int(self.settings.partitions_start.timestamp()) * 10**9
        streams = StreamPulls(
            self.buffers, self._held, self.stats, self._unknown_fields, health, earliest_ns
        )
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
            for pull in pulls:
                pulling = streams.run(pull, js, self._next_pull, self._is_stopping)
                tasks[asyncio.create_task(pulling)] = f"pull {pull.stream}"
            progress = asyncio.create_task(
                send_in_progress_acks(nc, ack_wait_s / 3, self._held.replies, self._is_stopping)
            )
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
                await self._unsent_acks.send(nc)
                if now >= self._retry_at:
                    drained = until_idle and all(streams.drained.values())
                    everything = drained or self._pull_bytes() is None
                    await self._commit(
                        self.buffers.take_all() if everything else self.buffers.take_due(now)
                    )
                if until_idle and self._idle(streams) and await self._nothing_pending(js):
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
                await self._unsent_acks.send(nc)
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

    def _is_stopping(self) -> bool:
        return self._stopping

    def _idle(self, streams: StreamPulls) -> bool:
        return all(streams.drained.values()) and self._held.empty

    async def _nothing_pending(self, js: JetStreamContext) -> bool:
        try:
            return await pending_messages(js) == 0
        except Exception as error:  # unreachable server: not idle, ask again next tick
            log.warning("cannot read consumer state: %s", error)
            return False

    def _pull_bytes(self) -> int | None:
        """`max_bytes` of the next pull (`Held.pull_bytes`), None when the buffers must be
        committed at once to make room."""
        assert self._nc is not None
        return self._held.pull_bytes(self._nc.max_payload)

    def _next_pull(self) -> tuple[int, int] | None:
        """The messages and bytes the next pull may take; None while it must wait: no room
        under the consumer's limit or the memory bound, buffers full, or a storage retry
        pending (what it pulled would only wait)."""
        room = self.sizing.process_inflight - self._held.rows
        max_bytes = self._pull_bytes()
        if room <= 0 or max_bytes is None or self.buffers.full or time.monotonic() < self._retry_at:
            return None
        return room, max_bytes

    async def _commit(self, buffers: list[Buffer]) -> bool:
        """Commit `buffers` (and files left by a failed commit); False when storage failed.

        What was written is recorded and acked; what was not goes back to the buffers and
        is retried after a backoff.
        """
        if not buffers and not self._written:
            return True
        unknown = dict(self._unknown_fields)
        self._unknown_fields.clear()
        rows = sum(buffer.rows for buffer in buffers)
        held_bytes = sum(buffer.bytes for buffer in buffers)
        self._held.committing_rows += rows
        self._held.committing_bytes += held_bytes
        self._held.committing = buffers
        started = time.monotonic()
        earlier_entries = int(self._written.entry is not None)  # a failed try's, written first
        try:
            done = await asyncio.to_thread(self._commit_or_fail, buffers, unknown)
        finally:
            self._held.committing_rows -= rows
            self._held.committing_bytes -= held_bytes
            self._held.committing = []
            self._held.unrecorded_rows = len(self._written.replies)
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
            self._held.rows,
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
            self._held.rows,
        )

    async def _acknowledge(self, entries: tuple[LedgerEntry, ...], replies: list[str]) -> None:
        """Ack the entries' messages (or keep the acks until NATS is back), then queue the
        entries for reporting."""
        assert self._nc is not None
        self._unsent_acks.add(replies)
        await self._unsent_acks.send(self._nc)
        for entry in entries:
            if self.reporter is not None:
                self._reports.put(entry)
            self.stats.commits += 1
            self.stats.files += len(entry.files)
            self.stats.rows += sum(f.rows for f in entry.files)
            self.stats.quarantined += sum(f.rows for f in entry.quarantine)
            self.stats.bytes += sum(f.bytes for f in (*entry.files, *entry.quarantine))

    async def _on_nats_error(self, error: Exception) -> None:
        log.warning("NATS: %s", error)


def _failed_task(tasks: dict[asyncio.Task[None], str]) -> str | None:
    """`what failed: error` for the first finished task that raised, else None."""
    for task, name in tasks.items():
        if task.done() and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            return f"{name} failed: {type(error).__name__}: {error}"
    return None
