"""Publishing a session (simulated or replayed from JSON lines) to JetStream, with progress."""

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lake_platform.ingest.connection import connect
from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.schemas import schema_for_subject
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import Message

IN_FLIGHT = 512
"""Publishes awaiting their JetStream ack at once."""


@dataclass
class PublishStats:
    """Messages published per schema (`None`: malformed on purpose or unknown subject)."""

    by_schema: Counter[str | None] = field(default_factory=Counter)

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


async def publish(
    settings: LakeSettings,
    messages: Iterable[Message],
    *,
    rate: float | None = None,
    progress: bool = True,
) -> PublishStats:
    """Publish with JetStream acks, `IN_FLIGHT` at a time; paced at `rate`/s when given."""
    nc = await connect(settings, name="lake-platform publish")
    stats = PublishStats()
    try:
        js = nc.jetstream()
        await ensure_streams(js, settings)
        pending: list[asyncio.Future] = []
        started = time.monotonic()
        with tqdm(unit="msg", disable=not progress, desc="publish") as bar:
            for index, message in enumerate(messages):
                if rate is not None:
                    delay = started + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                pending.append(asyncio.ensure_future(js.publish(message.subject, message.payload)))
                stats.by_schema[message.schema] += 1
                if len(pending) >= IN_FLIGHT or rate is not None:
                    await asyncio.gather(*pending)
                    bar.update(len(pending))
                    pending = []
            await asyncio.gather(*pending)
            bar.update(len(pending))
    finally:
        await nc.close()
    return stats
