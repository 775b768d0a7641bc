"""A lean JetStream pull: one inbox subscription, raw `CONSUMER.MSG.NEXT` requests.

nats-py's `fetch()` spends ~75 µs per message (a task and a `wait_for` each); this pull asks
for the next batch on the same wire API and takes the messages straight from the parser
(`LakeNatsClient.deliver_raw`) into columns: no `Msg` object, queue or task per message.
Status messages (404 no messages, 408 request expired, 409 conflicts) end a request;
everything else is a stream message for the caller.
"""

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

from nats.aio.subscription import Subscription

from lake_platform.ingest.connection import LakeNatsClient
from lake_platform.ingest.wire import STATUS, RawMessages, parse_headers

NO_PENDING_MESSAGES = ("404", "408")


@dataclass
class PulledMessages(RawMessages):
    """Messages pulled from `stream`, column by column: the parts the ingest needs."""

    stream: str = ""


@dataclass
class _Request:
    wanted: int
    received: int = 0
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    status: str | None = None


class LeanPull:
    """Pulls batches of messages from one durable pull consumer."""

    def __init__(self, nc: LakeNatsClient, stream: str, durable: str) -> None:
        self._nc = nc
        self._subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._request: _Request | None = None
        self._subscription: Subscription | None = None
        self.stream = stream
        self.durable = durable
        self._received = self._empty()

    def _empty(self) -> PulledMessages:
        return PulledMessages(stream=self.stream)

    async def start(self) -> None:
        """Subscribe the inbox that receives the pulled messages."""
        self._subscription = await self._nc.subscribe(self._inbox)
        self._nc.deliver_raw(self._subscription, self._on_messages)

    async def stop(self) -> None:
        """Unsubscribe (before draining the connection, or a drain waits for expiries)."""
        if self._subscription is not None:
            self._nc.stop_raw(self._subscription)
            await self._subscription.unsubscribe()
            self._subscription = None

    def _on_messages(self, messages: RawMessages) -> None:
        """A run of the inbox's messages: all received at once, or one by one when a status
        (which ends the request) may be among them."""
        if "" not in messages.replies:  # a status message has none: stream messages have one
            self._receive(messages)
            return
        for index in range(len(messages)):
            headers, reply = messages.headers[index], messages.replies[index]
            status = parse_headers(headers).get(STATUS) if headers and not reply else None
            if status is None:
                self._receive(messages.one(index))
            elif self._request is not None:
                self._request.status = status
                self._request.finished.set()

    def _receive(self, messages: RawMessages) -> None:
        self._received.extend(messages)
        request = self._request
        if request is not None:
            request.received += len(messages)
            if request.received >= request.wanted:
                request.finished.set()

    async def fetch(self, batch: int, wait_s: float) -> tuple[PulledMessages, bool]:
        """Up to `batch` messages, waiting at most `wait_s` for the first ones.

        Returns the messages and whether the consumer reported nothing pending (the request
        ended with 404/408 before it was filled).
        """
        request = _Request(wanted=batch)
        self._request = request
        expires_ns = max(int(wait_s * 1e9), 1_000_000)
        body = {"batch": batch, "expires": expires_ns}
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)
        deadline = time.monotonic() + wait_s + 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.finished.wait(), max(0.0, deadline - time.monotonic()))
        self._request = None
        messages, self._received = self._received, self._empty()
        drained = request.status in NO_PENDING_MESSAGES and request.received < batch
        return messages, drained
