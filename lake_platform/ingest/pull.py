"""A lean JetStream pull: one inbox subscription, raw `CONSUMER.MSG.NEXT` requests.

nats-py's `fetch()` spends ~75 µs per message (a task and a `wait_for` each); this pull asks
for the next batch on the same wire API and takes the messages straight from the parser
(`LakeNatsClient.deliver_raw`) into columns: no `Msg` object, queue or task per message.
Status messages (404 no messages, 408 request expired, 409 conflicts, 503 no responders)
end a request; everything else is a stream message for the caller. The status that ended the
last request is kept (`status`, `description`): the caller backs off on 409 and 503, which
the server answers at once, so asking again at once would spin at network round-trip rate.
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
HEADER_LINE = b"NATS/1.0"


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
    description: str = ""


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
        self.requests = 0
        """Pull requests sent."""
        self.received_bytes = 0
        """Payload bytes received, all requests together."""
        self.status: str | None = None
        """The status that ended the last request (None: it was filled or timed out)."""
        self.description = ""

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
                self._request.description = _description(headers)
                self._request.finished.set()

    def _receive(self, messages: RawMessages) -> None:
        self._received.extend(messages)
        self.received_bytes += sum(map(len, messages.payloads))
        request = self._request
        if request is not None:
            request.received += len(messages)
            if request.received >= request.wanted:
                request.finished.set()

    async def fetch(
        self, batch: int, wait_s: float, max_bytes: int | None = None
    ) -> tuple[PulledMessages, bool]:
        """Up to `batch` messages of at most `max_bytes` together (JetStream counts each
        message's subject, reply, headers and payload), waiting at most `wait_s` for the
        first ones.

        Returns the messages and whether the consumer reported nothing pending (the request
        ended with 404/408 before it was filled). `status` and `description` tell what ended
        the request.
        """
        request = _Request(wanted=batch)
        self._request = request
        expires_ns = max(int(wait_s * 1e9), 1_000_000)
        body: dict[str, int] = {"batch": batch, "expires": expires_ns}
        if max_bytes is not None:
            body["max_bytes"] = max_bytes
        self.requests += 1
        await self._nc.publish(self._subject, json.dumps(body).encode(), reply=self._inbox)
        deadline = time.monotonic() + wait_s + 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(request.finished.wait(), max(0.0, deadline - time.monotonic()))
        self._request = None
        self.status, self.description = request.status, request.description
        messages, self._received = self._received, self._empty()
        drained = request.status in NO_PENDING_MESSAGES and request.received < batch
        return messages, drained


def _description(headers: bytes | None) -> str:
    """The text after the code of a status line: `NATS/1.0 409 Consumer Deleted`."""
    first = (headers or b"").split(b"\r\n", 1)[0]
    parts = first[len(HEADER_LINE) :].split(maxsplit=1)
    return parts[1].decode(errors="replace").strip() if len(parts) == 2 else ""
