"""Publishing a session (simulated or replayed from JSON lines) to JetStream, with progress.

Every message carries a `Nats-Msg-Id` unique to it (`{prefix}-{index}`). A publish whose
PubAck does not come (timeout, no responders, 503 while a stream leader is elected, a client
reconnecting) is sent again with the same id, with backoff, for up to `API_RETRY_S`: the
stream's duplicate window stores it once, and a PubAck marked `duplicate` still counts the
message once. The simulator's deliberate re-publishes are separate messages with ids of
their own, so they still reach the stream.
"""

import asyncio
import json
import logging
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from nats.js import JetStreamContext
from nats.js.api import PubAck
from tqdm import tqdm

from lake_platform.ingest.connection import connect
from lake_platform.ingest.jetstream import API_RETRY_S, PASSING_ERRORS, ensure_streams, retrying
from lake_platform.schemas import schema_for_subject
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import Message

log = logging.getLogger(__name__)

IN_FLIGHT = 512
"""Publishes awaiting their JetStream ack at once."""
ACK_TIMEOUT_S = 2.0
MSG_ID_HEADER = "Nats-Msg-Id"


class PublishFailedError(RuntimeError):
    """A message got no PubAck within `API_RETRY_S`."""


@dataclass
class PublishStats:
    """Messages published per schema (`None`: malformed on purpose or unknown subject)."""

    by_schema: Counter[str | None] = field(default_factory=Counter)
    retries: int = 0
    duplicates: int = 0
    """Messages whose PubAck said `duplicate`: an earlier attempt had stored them."""

    @property
    def total(self) -> int:
        return sum(self.by_schema.values())


def replay_file(path: Path) -> Iterator[Message]:
    """Messages of a JSON-lines file of `{"subject": …, "data": {…}}`."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                subject, data = record["subject"], record["data"]
            except (ValueError, KeyError, TypeError):
                raise ValueError(
                    f"{path}:{number}: not a JSON object with 'subject' and 'data'"
                ) from None
            schema = schema_for_subject(subject)
            yield Message(subject, json.dumps(data).encode(), schema.name if schema else None)


async def publish_once(
    js: JetStreamContext, message: Message, msg_id: str, stats: PublishStats
) -> PubAck:
    """Publish one message until JetStream acks it, counting it once in `stats`."""

    def count_retry(what: str, error: BaseException) -> None:
        log.debug("%s not acked (%s), retrying", what, type(error).__name__)
        stats.retries += 1

    try:
        ack = await retrying(
            f"publish of {msg_id}",
            js.publish,
            message.subject,
            message.payload,
            timeout=ACK_TIMEOUT_S,
            headers={MSG_ID_HEADER: msg_id},
            on_retry=count_retry,
        )
    except PASSING_ERRORS as error:
        raise PublishFailedError(
            f"no PubAck for {message.subject} within {API_RETRY_S:.0f}s: {type(error).__name__}"
        ) from None
    stats.by_schema[message.schema] += 1
    stats.duplicates += bool(ack.duplicate)
    return ack


async def _all_acked(pending: list[asyncio.Future]) -> None:
    """Wait for every publish; when one fails, cancel the others before raising."""
    try:
        await asyncio.gather(*pending)
    except BaseException:
        for future in pending:
            future.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        raise


async def publish(
    settings: LakeSettings,
    messages: Iterable[Message],
    *,
    rate: float | None = None,
    progress: bool = True,
    msg_id_prefix: str | None = None,
) -> PublishStats:
    """Publish with JetStream acks, `IN_FLIGHT` at a time; paced at `rate`/s when given.

    Message `i` gets the id `{msg_id_prefix}-{i}` (a fresh random prefix when None): the same
    prefix publishes the same ids, so only pass one that names this session.
    """
    prefix = msg_id_prefix or secrets.token_hex(8)
    nc = await connect(settings, name="lake-platform publish")
    stats = PublishStats()
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        pending: list[asyncio.Future] = []
        started = time.monotonic()
        bar_shown = progress and sys.stderr.isatty()  # a bar in a log is one endless line
        with tqdm(unit="msg", disable=not bar_shown, desc="publish") as bar:
            for index, message in enumerate(messages):
                if rate is not None:
                    delay = started + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                sending = publish_once(js, message, f"{prefix}-{index}", stats)
                pending.append(asyncio.ensure_future(sending))
                if len(pending) >= IN_FLIGHT or rate is not None:
                    await _all_acked(pending)
                    bar.update(len(pending))
                    pending = []
            await _all_acked(pending)
            bar.update(len(pending))
        if progress and not bar_shown:
            elapsed = time.monotonic() - started
            print(f"published {stats.total:,} messages in {elapsed:.1f} s", file=sys.stderr)
    finally:
        await nc.close()
    return stats
