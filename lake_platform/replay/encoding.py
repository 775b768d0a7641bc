"""A replayed stream as NATS messages, a chunk of events at a time.

Each hour is encoded a chunk at a time (`CHUNK_EVENTS` events of the merged stream: each
table's slice encoded at once by `messages.subjects`/`messages.payloads`, in a worker thread,
the next chunk while the current one is sent), so memory holds the hour's rows and two chunks
of messages. Every message carries `Nats-Msg-Id` = its `event_id` (a Bronze row as ingested:
`{event_id}-{_stream_seq}`, see `msg_ids`): a JetStream target de-duplicates a replay
resumed within its duplicate window.
"""

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import polars as pl

from lake_platform.replay.messages import payloads, subjects
from lake_platform.replay.stream import ReplayHour
from lake_platform.schemas import BY_TABLE

CHUNK_EVENTS = 50_000
"""Events of the merged stream encoded at once."""
BRONZE_SEQUENCE = "_stream_seq"


@dataclass(frozen=True)
class EncodedChunk:
    """Consecutive events of one hour of the stream, as messages: per table (`tables`), its
    subjects, payloads, `Nats-Msg-Id`s (`msg_ids`) and event times; `order` the table of each
    event."""

    hour: dt.datetime
    final: bool
    """The hour's last chunk."""
    tables: tuple[str, ...]
    order: list[int]
    subjects: tuple[list[str], ...]
    payloads: tuple[list[bytes], ...]
    msg_ids: tuple[list[str], ...]
    times: tuple[list[int], ...]
    distinct_subjects: frozenset[str]

    def events(self) -> Iterator[tuple[str, str, bytes, str, int]]:
        """(table, subject, payload, msg id, event time) of each event, in stream order."""
        offsets = [0] * len(self.tables)
        for index in self.order:
            at = offsets[index]
            offsets[index] = at + 1
            yield (
                self.tables[index],
                self.subjects[index][at],
                self.payloads[index][at],
                self.msg_ids[index][at],
                self.times[index][at],
            )


def encoded_chunks(
    hours: Iterable[ReplayHour], prefix: str, as_recorded: bool, size: int = CHUNK_EVENTS
) -> Iterator[EncodedChunk]:
    """The hours' events as messages, `size` events of the stream at a time."""
    for hour in hours:
        offsets = [0] * len(hour.tables)
        for start in range(0, hour.events, size):
            order = hour.order.slice(start, size)
            parts = []
            for index, frame in enumerate(hour.frames):
                count = int((order == index).sum())
                parts.append(frame.slice(offsets[index], count))
                offsets[index] += count
            schemas = [BY_TABLE[table] for table in hour.tables]
            chunk_subjects = tuple(
                subjects(schema, part, prefix) for schema, part in zip(schemas, parts, strict=True)
            )
            yield EncodedChunk(
                hour=hour.hour,
                final=start + size >= hour.events,
                tables=hour.tables,
                order=order.to_list(),
                subjects=chunk_subjects,
                payloads=tuple(
                    payloads(s, f, as_recorded=as_recorded)
                    for s, f in zip(schemas, parts, strict=True)
                ),
                msg_ids=tuple(msg_ids(part) for part in parts),
                times=tuple(f.get_column("ts_event_ns").to_list() for f in parts),
                distinct_subjects=frozenset().union(*map(set, chunk_subjects)),
            )


def msg_ids(rows: pl.DataFrame) -> list[str]:
    """Each row's `Nats-Msg-Id`: its `event_id`; for a Bronze row as ingested (with its
    `_stream_seq`), `{event_id}-{_stream_seq}`, so that the duplicates Bronze holds reach the
    target too (one id each) instead of being dropped by its duplicate window."""
    if BRONZE_SEQUENCE not in rows.columns:
        return rows.get_column("event_id").to_list()
    ids = pl.concat_str(pl.col("event_id"), pl.lit("-"), pl.col(BRONZE_SEQUENCE).cast(pl.String))
    return rows.select(ids).to_series().to_list()


def event_id_of(msg_id: str) -> str:
    """The `event_id` of a `Nats-Msg-Id` made by `msg_ids` (event ids are hex: no `-`)."""
    return msg_id.partition("-")[0]
