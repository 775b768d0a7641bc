"""The harness's own JetStream reads (every message of a stream, the ingest consumers'
backlog), made to wait out a leader election like the platform's requests.

While a stream or consumer leader is elected (4-7 s after a SIGKILL) JetStream answers
nothing (timeouts) or 503 (`JetStream system temporarily unavailable`), and a pull request to
a consumer nobody serves comes back as a 503 status, which nats-py's `fetch` raises as a bare
`ServiceUnavailableError` (code None). That last one also happens on a healthy cluster: the
ephemeral consumer of a read is placed on any node, and its first pull request can reach the
client's node before the consumer's interest does (issue 20: about one read in forty here).
Each request is retried by the ingest's own `retrying` (`API_RETRY_S`, jittered backoff);
a read of a whole stream resumes after the last message it got, with a new ephemeral
consumer starting at the next sequence, so a retry neither skips nor repeats a message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js import api as js_api

from lake_platform.ingest.jetstream import DURABLE, retrying
from lake_platform.schemas import STREAMS

FETCH_BATCH = 1_000
FETCH_WAIT_S = 10.0

BeforeFetch = Callable[[JetStreamContext.PullSubscription], Awaitable[None]]
"""Called with the reader before each fetch: a test's failpoint (kill the consumer's node)."""


async def stream_messages(
    urls: list[str], stream: str, before_fetch: BeforeFetch | None = None
) -> list[Msg]:
    """Every message ``stream`` holds when the read starts, in stream order, read by
    ephemeral consumers (the durable ones untouched)."""
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        state = (await retrying(f"stream {stream}", js.stream_info, stream)).state
        messages: list[Msg] = []
        if state.messages:
            what = f"reading {stream}"
            await retrying(what, _read_until, js, stream, state, messages, before_fetch)
        return messages
    finally:
        await nc.close()


async def _read_until(
    js: JetStreamContext,
    stream: str,
    state: js_api.StreamState,
    messages: list[Msg],
    before_fetch: BeforeFetch | None,
) -> None:
    """Append to ``messages`` those after its last one up to the stream's last sequence in
    ``state``, by a new ephemeral consumer: an attempt resumes where the previous one ended."""
    next_seq = _sequence(messages[-1]) + 1 if messages else state.first_seq
    config = js_api.ConsumerConfig(
        ack_policy=js_api.AckPolicy.NONE,
        deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=next_seq,
    )
    reader = await js.pull_subscribe(STREAMS[stream], stream=stream, config=config)
    try:
        while next_seq <= state.last_seq:
            if before_fetch is not None:
                await before_fetch(reader)
            try:
                fetched = await reader.fetch(
                    min(FETCH_BATCH, state.last_seq + 1 - next_seq), FETCH_WAIT_S
                )
            except TimeoutError as error:  # nats-py may raise a bare one
                raise nats.errors.TimeoutError from error
            messages += [message for message in fetched if _sequence(message) <= state.last_seq]
            next_seq = _sequence(messages[-1]) + 1 if messages else next_seq
    finally:
        with contextlib.suppress(nats.errors.Error):
            await reader.unsubscribe()


def _sequence(message: Msg) -> int:
    return message.metadata.sequence.stream


async def consumer_backlog(urls: list[str]) -> dict[str, tuple[int, int]]:
    """Stream -> (pending, ack pending) of its durable ingest consumer."""
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        backlog = {}
        for stream in STREAMS:
            what = f"consumer {stream}/{DURABLE}"
            info = await retrying(what, js.consumer_info, stream, DURABLE)
            backlog[stream] = (info.num_pending, info.num_ack_pending)
        return backlog
    finally:
        await nc.close()
