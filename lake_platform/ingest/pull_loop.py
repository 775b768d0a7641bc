"""The pull tasks of an ingest worker, and what it does when JetStream refuses its pulls.

Each stream has a task that fetches up to `FETCH_BATCH` messages, as many as the room
`held` leaves, and routes the previous batch into the buffers in a worker thread while the
next one arrives (Polars releases the GIL).

A pull that JetStream answers with a status instead of messages (503: the consumer is
deleted or has no leader; 409: a conflict) backs off with jitter (the server answers at
once: asking again at once would spin), is logged once per change, makes `/healthz` fail
after `PULL_UNHEALTHY_AFTER_S` and ends an `until_idle` run after `PULL_GIVE_UP_S`; a
deleted consumer is created again after the last committed message (`consumer_recovery`).
"""

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import nats.errors
from nats.js import JetStreamContext

from lake_platform.ingest.backoff import Backoff
from lake_platform.ingest.buffers import Buffers
from lake_platform.ingest.consumer_recovery import recreate_if_deleted
from lake_platform.ingest.failpoints import failpoint
from lake_platform.ingest.held import Held
from lake_platform.ingest.jetstream import ConsumerSizing
from lake_platform.ingest.pull import NO_PENDING_MESSAGES, LeanPull, PulledMessages
from lake_platform.ingest.route import route
from lake_platform.ingest.stats import IngestStats
from lake_platform.schemas import STREAMS
from lake_platform.storage import LakeStore, StorageError

log = logging.getLogger(__name__)

FETCH_BATCH = 10_000
PULL_WAIT_S = 0.5
TICK_S = 0.1
"""How often a waiting loop looks again: a pull task for room, the service for a stop or a
due commit."""
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


class PullHealth:
    """Which streams' pulls JetStream refuses, kept in `IngestStats.unhealthy`."""

    def __init__(
        self, store: LakeStore, sizing: ConsumerSizing, stats: IngestStats, until_idle: bool
    ) -> None:
        self._store = store
        self._sizing = sizing
        self._stats = stats
        self._until_idle = until_idle
        self._troubles: dict[str, str] = {}

    def works(self, pull: LeanPull, trouble: PullTrouble) -> None:
        if trouble.state is not None:
            log.warning("pulls from %s work again (after %s)", pull.stream, trouble.state)
        trouble.since = trouble.state = None
        trouble.backoff.reset()
        if self._troubles.pop(pull.stream, None) is not None:
            self._stats.unhealthy = "; ".join(self._troubles.values()) or None

    async def refused(self, pull: LeanPull, js: JetStreamContext, trouble: PullTrouble) -> None:
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
            self._troubles[pull.stream] = lasting
            self._stats.unhealthy = "; ".join(self._troubles.values())
        if self._until_idle and now - trouble.since >= PULL_GIVE_UP_S:
            raise PullStuckError(f"{lasting}: is stream {pull.stream} or its consumer gone?")
        await asyncio.sleep(trouble.backoff.next())

    async def _recreated(self, js: JetStreamContext, stream: str) -> bool:
        """True when the consumer of `stream` was deleted and is created again now."""
        try:
            return await recreate_if_deleted(js, self._store, stream, self._sizing)
        except (nats.errors.Error, StorageError) as error:
            log.warning("cannot check or recreate the consumer of %s: %s", stream, error)
            return False


class StreamPulls:
    """The pull tasks of one worker and what they share: the buffers they route into, the
    streams found drained, the unknown fields seen since the last commit, their health."""

    def __init__(
        self,
        buffers: Buffers,
        held: Held,
        stats: IngestStats,
        unknown_fields: Counter[str],
        health: PullHealth,
        earliest_ns: int,
    ) -> None:
        """`earliest_ns`: events before it (the first partition) are quarantined."""
        self._buffers = buffers
        self._held = held
        self._stats = stats
        self._unknown_fields = unknown_fields
        self._health = health
        self._earliest_ns = earliest_ns
        self.drained: dict[str, bool] = dict.fromkeys(STREAMS, False)

    async def run(
        self,
        pull: LeanPull,
        js: JetStreamContext,
        next_pull: Callable[[], tuple[int, int] | None],
        stopping: Callable[[], bool],
    ) -> None:
        """Fetch, and route the previous batch in a worker thread while the next one arrives,
        until `stopping`. `next_pull`: the messages and bytes the next pull may take, None
        while it must wait."""
        routing: asyncio.Task[None] | None = None
        trouble = PullTrouble()
        while not stopping():
            size = next_pull()
            if size is None:
                await asyncio.sleep(TICK_S)
                continue
            room, max_bytes = size
            try:
                messages, drained = await pull.fetch(min(FETCH_BATCH, room), PULL_WAIT_S, max_bytes)
            except Exception as error:  # a reconnecting client raises; the loop retries
                log.warning("pull from %s failed, retrying: %s", pull.stream, error)
                await asyncio.sleep(PULL_WAIT_S)
                continue
            raw_bytes = _raw_bytes(messages)
            self._held.routing_bytes += raw_bytes
            self._held.note_bytes()
            if routing is not None:
                await routing
                routing = None
            self.drained[pull.stream] = drained and not messages
            if messages:
                routing = asyncio.create_task(self._accept(messages, raw_bytes))
            else:
                self._held.routing_bytes -= raw_bytes
            if messages or pull.status is None or pull.status in NO_PENDING_MESSAGES:
                self._health.works(pull, trouble)
            else:
                await self._health.refused(pull, js, trouble)
        if routing is not None:
            await routing

    async def _accept(self, pulled: PulledMessages, raw_bytes: int) -> None:
        """Route `pulled` (`raw_bytes` of messages, counted as held until routed) into the
        buffers."""
        try:
            failpoint(f"raise:route:{pulled.stream}")
            self._held.routing_rows += len(pulled)
            try:
                routed = await asyncio.to_thread(
                    route, pulled, earliest_ns=self._earliest_ns, now_ns=time.time_ns()
                )
            finally:
                self._held.routing_rows -= len(pulled)
            self._buffers.add(routed)
        finally:
            self._held.routing_bytes -= raw_bytes
        self._held.note_bytes()
        self._unknown_fields.update(routed.unknown_field_messages)
        self._stats.messages += len(pulled)


def _raw_bytes(messages: PulledMessages) -> int:
    """Payload, subject and reply bytes of pulled messages (what `max_bytes` counts, but
    headers)."""
    return (
        sum(map(len, messages.payloads))
        + sum(map(len, messages.subjects))
        + sum(map(len, messages.replies))
    )
