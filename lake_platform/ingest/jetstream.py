"""The JetStream streams and durable consumers the ingest reads, created idempotently.

Consumers use explicit acks: with AckPolicy.ALL, acking a later message acks every earlier
in-flight one, so a writer that dies mid-batch would lose the other writers' messages.
`ack_wait` and `max_ack_pending` are derived from the batch settings when a consumer is
created: a message must stay unacked while it waits in a buffer (up to its max age) and is
written, and the consumer must allow every buffer of a process to fill. An existing consumer
is used as it is, never updated: several processes share it, and each one rewriting it from
its own environment would make its settings depend on which process started last. The
service sends an in-progress ack for every message it holds each third of `ack_wait`, so
a smaller existing `ack_wait` only costs a warning.

Streams get the retention of the settings (`NATS_STREAM_MAX_AGE`, `NATS_STREAM_MAX_BYTES`,
`NATS_STREAM_REPLICAS`) when they are created: JetStream is a buffer, Bronze is the archive.

Every JetStream API request here is retried for up to `API_RETRY_S` on the errors of a
cluster that is electing a stream leader (4-7 s) or restarting a node: a process starting at
that moment waits instead of exiting. The waits are jittered (`backoff.Backoff`), so workers
restarted together do not ask in lockstep.
"""

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NotFoundError

from lake_platform.ingest.backoff import Backoff
from lake_platform.schemas import STREAMS
from lake_platform.settings import LakeSettings

log = logging.getLogger(__name__)

DURABLE = "lake-bronze"
DUPLICATE_WINDOW = dt.timedelta(minutes=2)
MAX_ACK_PENDING = 100_000
"""Unacked messages the consumer allows across all ingest processes."""
MIN_ACK_WAIT_S = 15.0
API_RETRY_S = 60.0
"""How long a JetStream request is retried; a leader election takes 4-7 s, a restart more."""
FIRST_BACKOFF_S = 0.25
MAX_BACKOFF_S = 2.0
PASSING_ERRORS = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
"""No answer from JetStream, for a reason that passes: a node restarts or a leader is elected."""

LASTING_ERR_CODES = {10023, 10039}
"""503s that waiting does not cure: too few servers for the replicas (10023), JetStream not
enabled for the account (10039)."""

T = TypeVar("T")


async def retrying(
    what: str,
    request: Callable[..., Awaitable[T]],
    *args: object,
    on_retry: Callable[[str, BaseException], None] | None = None,
    **kwargs: object,
) -> T:
    """`await request(*args, **kwargs)`, retried with jittered backoff on `PASSING_ERRORS`
    for `API_RETRY_S` (then the last error is raised). `on_retry(what, error)` is told of
    each retry; by default it is logged as a warning."""
    deadline = time.monotonic() + API_RETRY_S
    backoff = Backoff(FIRST_BACKOFF_S, MAX_BACKOFF_S)
    while True:
        try:
            return await request(*args, **kwargs)
        except PASSING_ERRORS as error:
            lasting = getattr(error, "err_code", None) in LASTING_ERR_CODES
            delay = backoff.next()
            if lasting or time.monotonic() + delay > deadline:
                raise
            (on_retry or _warn_retry)(what, error)
            await asyncio.sleep(delay)


def _warn_retry(what: str, error: BaseException) -> None:
    log.warning("%s: no answer from JetStream (%s), retrying", what, type(error).__name__)


class ConsumerConfigError(RuntimeError):
    """An existing consumer cannot serve the ingest (it does not ack explicitly)."""


@dataclass(frozen=True)
class ConsumerSizing:
    """How long a message may stay unacked, and how many may be."""

    ack_wait_s: float
    max_ack_pending: int
    process_inflight: int

    @classmethod
    def for_settings(cls, settings: LakeSettings) -> "ConsumerSizing":
        """Sizing for the settings' flush triggers (docs/contract.md §5)."""
        max_age = max(settings.bronze_max_age_s, settings.gold_max_age_s)
        max_events = max(settings.bronze_max_events, settings.gold_max_events)
        return cls(
            ack_wait_s=max(MIN_ACK_WAIT_S, 6 * max_age),
            max_ack_pending=max(MAX_ACK_PENDING, 4 * max_events),
            process_inflight=max(MAX_ACK_PENDING, 4 * max_events) // 2,
        )


async def ensure_streams(
    js: JetStreamContext,
    settings: LakeSettings | None = None,
    streams: Mapping[str, str] = STREAMS,
) -> None:
    """Create `streams` (name: subjects; `MARKET` and `SIGNALS` by default) if missing, with
    the retention and replicas of `settings` (the defaults when None); existing streams are
    left as they are."""
    settings = settings or LakeSettings()
    for name, subjects in streams.items():
        try:
            await retrying(f"stream {name}", js.stream_info, name)
            continue
        except NotFoundError:
            pass
        config = js_api.StreamConfig(
            name=name,
            subjects=[subjects],
            storage=js_api.StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
            max_age=settings.nats_stream_max_age_s,
            max_bytes=settings.nats_stream_max_bytes or -1,
            num_replicas=settings.nats_stream_replicas,
        )
        try:
            await retrying(f"creating stream {name}", js.add_stream, config)
        except BadRequestError:
            await retrying(f"stream {name}", js.stream_info, name)


async def ensure_consumers(js: JetStreamContext, sizing: ConsumerSizing) -> float:
    """Create the durable pull consumer of each stream if missing; returns the shortest
    `ack_wait` (s) of the consumers. Existing consumers are used as they are (see above)."""
    ack_waits = []
    for stream in STREAMS:
        what = f"consumer {stream}/{DURABLE}"
        try:
            actual = (await retrying(what, js.consumer_info, stream, DURABLE)).config
        except NotFoundError:
            config = consumer_config(sizing)
            actual = (await retrying(what, js.add_consumer, stream, config)).config
        if actual.ack_policy != js_api.AckPolicy.EXPLICIT:
            raise ConsumerConfigError(
                f"consumer {stream}/{DURABLE} acks with {actual.ack_policy}; it must be explicit"
            )
        if (actual.ack_wait, actual.max_ack_pending) != (
            sizing.ack_wait_s,
            sizing.max_ack_pending,
        ):
            log.warning(
                "consumer %s/%s has ack_wait=%ss and max_ack_pending=%s, these settings would "
                "give %ss and %s: using the existing consumer as it is",
                stream,
                DURABLE,
                actual.ack_wait,
                actual.max_ack_pending,
                sizing.ack_wait_s,
                sizing.max_ack_pending,
            )
        ack_waits.append(actual.ack_wait or sizing.ack_wait_s)
    return min(ack_waits)


def consumer_config(sizing: ConsumerSizing) -> js_api.ConsumerConfig:
    """A new durable consumer's configuration: explicit acks, every message of the stream."""
    return js_api.ConsumerConfig(
        durable_name=DURABLE,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=sizing.ack_wait_s,
        max_ack_pending=sizing.max_ack_pending,
        max_deliver=-1,
    )


async def pending_messages(js: JetStreamContext) -> int:
    """Messages not yet delivered or not yet acked, over both consumers."""
    total = 0
    for stream in STREAMS:
        info = await js.consumer_info(stream, DURABLE)
        total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return total
