"""The JetStream streams and durable consumers the ingest reads, created idempotently.

Consumers use explicit acks: with AckPolicy.ALL, acking a later message acks every earlier
in-flight one, so a writer that dies mid-batch would lose the other writers' messages.
`ack_wait` and `max_ack_pending` are derived from the batch settings and checked at start-up:
a message must stay unacked while it waits in a buffer (up to its max age) and is written,
and the consumer must allow every buffer of a process to fill.
"""

import datetime as dt
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NotFoundError

from lake_platform.schemas import STREAMS
from lake_platform.settings import LakeSettings

DURABLE = "lake-bronze"
DUPLICATE_WINDOW = dt.timedelta(minutes=2)
MAX_ACK_PENDING = 100_000
"""Unacked messages the consumer allows across all ingest processes."""
MIN_ACK_WAIT_S = 15.0


class ConsumerConfigError(RuntimeError):
    """An existing consumer cannot serve the configured batches."""


@dataclass(frozen=True)
class ConsumerSizing:
    """How long a message may stay unacked, and how many may be."""

    ack_wait_s: float
    max_ack_pending: int
    process_inflight: int

    @classmethod
    def for_settings(cls, settings: LakeSettings) -> "ConsumerSizing":
        """Sizing for the settings' flush triggers (INTERFACES §5)."""
        max_age = max(settings.bronze_max_age_s, settings.gold_max_age_s)
        max_events = max(settings.bronze_max_events, settings.gold_max_events)
        return cls(
            ack_wait_s=max(MIN_ACK_WAIT_S, 6 * max_age),
            max_ack_pending=max(MAX_ACK_PENDING, 4 * max_events),
            process_inflight=max(MAX_ACK_PENDING, 4 * max_events) // 2,
        )


async def ensure_streams(js: JetStreamContext) -> None:
    """Create `MARKET` and `SIGNALS` if missing; existing streams are left as they are."""
    for name, subjects in STREAMS.items():
        try:
            await js.stream_info(name)
            continue
        except NotFoundError:
            pass
        config = js_api.StreamConfig(
            name=name,
            subjects=[subjects],
            storage=js_api.StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW.total_seconds(),
        )
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.stream_info(name)


async def ensure_consumers(js: JetStreamContext, sizing: ConsumerSizing) -> None:
    """Create or update the durable pull consumer of each stream, then verify its config."""
    for stream in STREAMS:
        config = js_api.ConsumerConfig(
            durable_name=DURABLE,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=sizing.ack_wait_s,
            max_ack_pending=sizing.max_ack_pending,
            max_deliver=-1,
        )
        info = await js.add_consumer(stream, config)
        actual = info.config
        if actual.ack_policy != js_api.AckPolicy.EXPLICIT:
            raise ConsumerConfigError(
                f"consumer {stream}/{DURABLE} acks with {actual.ack_policy}; it must be explicit"
            )
        if (actual.ack_wait or 0) < sizing.ack_wait_s or (actual.max_ack_pending or 0) < (
            sizing.max_ack_pending
        ):
            raise ConsumerConfigError(
                f"consumer {stream}/{DURABLE} has ack_wait={actual.ack_wait}s and "
                f"max_ack_pending={actual.max_ack_pending}; the batch settings need at least "
                f"{sizing.ack_wait_s}s and {sizing.max_ack_pending}"
            )


async def pending_messages(js: JetStreamContext) -> int:
    """Messages not yet delivered or not yet acked, over both consumers."""
    total = 0
    for stream in STREAMS:
        info = await js.consumer_info(stream, DURABLE)
        total += (info.num_pending or 0) + (info.num_ack_pending or 0)
    return total
