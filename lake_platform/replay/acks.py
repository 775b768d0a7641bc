"""A replay's publishes awaiting their PubAck.

Publishes are pipelined (nats-py's `publish_async`: a future per message, no task): up to
`IN_FLIGHT` await their PubAck, settled oldest first, so the stats' last event is the last
one acked with every event before it acked too (what `--resume-after` continues from). A
publish whose PubAck fails or does not come within `ACK_TIMEOUT_S` of its sending is sent
again with the same id by the simulator's `publish_once` (retried with backoff for
`API_RETRY_S`, then `PublishFailedError`); after a server restart the stream holds every
event once, though publishes the client buffered while reconnecting may land before the
lost ones sent again.
"""

import asyncio
import time
from collections import deque
from typing import NamedTuple

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import PubAck

from lake_platform.replay.encoding import event_id_of
from lake_platform.replay.stats import ReplayStats
from lake_platform.simulate.market import Message
from lake_platform.simulate.publisher import ACK_TIMEOUT_S, IN_FLIGHT, MSG_ID_HEADER, publish_once


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
