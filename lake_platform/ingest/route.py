"""From pulled JetStream messages to typed Bronze rows and quarantine records, in bulk.

A pulled batch is split by schema (the subject's first tokens), each part is decoded at
once, and every message ends up as exactly one row or one quarantine record, carrying the
reply subject that acks it.

Decoding is deterministic, so a message that makes it raise (a Polars `PanicException`, a
`BaseException`, or any other unexpected error) would do so on every redelivery: the batch
is then split in halves, recursively, down to the messages that fail alone, which are
quarantined with the error; every other message of the batch is routed as usual.
"""

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import polars as pl

from lake_platform.ingest.failpoints import panic_on_poisoned_payload
from lake_platform.ingest.pull import PulledMessages
from lake_platform.ingest.wire import parse_headers
from lake_platform.schemas import TableSchema, decode_batch, schema_for_subject

log = logging.getLogger(__name__)

T = TypeVar("T")

NOT_ISOLATED = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
"""What a failing decode may raise that is no message's fault: it goes on up."""

REPLY = "_reply"
"""Column holding each row's ack subject until its file is committed."""

QUARANTINE_SCHEMA = pl.Schema(
    {
        "subject": pl.String(),
        "stream": pl.String(),
        "stream_seq": pl.Int64(),
        "received_ns": pl.Int64(),
        "error": pl.String(),
        "headers": pl.String(),
        "payload": pl.Binary(),
    }
)


@dataclass(frozen=True)
class RoutedMessages:
    """Rows per schema (with `_stream_seq`, `_subject`, `_reply`) and quarantine records."""

    rows: list[tuple[TableSchema, pl.DataFrame]]
    quarantine: pl.DataFrame
    unknown_field_messages: dict[str, int]


def ack_metadata(replies: Sequence[str]) -> pl.DataFrame:
    """Stream sequence and stored time (ns) of each message, from its ack subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>` (9 tokens), or
    the 12-token form with domain and account hash after `$JS.ACK`.
    """
    tokens = pl.Series("reply", replies, dtype=pl.String).str.split(".")
    short_form = tokens.list.len() == 9
    frame = pl.DataFrame({"tokens": tokens, "short": short_form})
    return frame.select(
        pl.when(pl.col("short"))
        .then(pl.col("tokens").list.get(5, null_on_oob=True))
        .otherwise(pl.col("tokens").list.get(7, null_on_oob=True))
        .cast(pl.Int64, strict=False)
        .alias("stream_seq"),
        pl.when(pl.col("short"))
        .then(pl.col("tokens").list.get(7, null_on_oob=True))
        .otherwise(pl.col("tokens").list.get(9, null_on_oob=True))
        .cast(pl.Int64, strict=False)
        .alias("stored_ns"),
    )


@lru_cache(maxsize=4096)
def cached_schema_for_subject(subject: str) -> TableSchema | None:
    """`schema_for_subject`, memoized: subjects repeat across messages."""
    return schema_for_subject(subject)


def _quarantine_records(
    messages: PulledMessages,
    metadata: pl.DataFrame,
    indices: Sequence[int],
    errors: Sequence[str],
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "subject": [messages.subjects[i] for i in indices],
            "stream": [messages.stream] * len(indices),
            "stream_seq": metadata["stream_seq"].gather(indices),
            "received_ns": metadata["stored_ns"].gather(indices),
            "error": list(errors),
            "headers": [_headers_json(messages.headers[i]) for i in indices],
            "payload": [messages.payloads[i] for i in indices],
            REPLY: [messages.replies[i] for i in indices],
        },
        schema={**QUARANTINE_SCHEMA, REPLY: pl.String()},
    )


def _headers_json(raw: bytes | None) -> str:
    """The message's headers as JSON; unreadable ones as their raw text."""
    try:
        return json.dumps(parse_headers(raw))
    except Exception:
        return json.dumps({"_raw": (raw or b"").decode("utf-8", "backslashreplace")})


def _by_schema(messages: PulledMessages) -> tuple[dict[TableSchema, list[int]], list[int]]:
    """Positions of the messages of each schema, and of those whose subject has none in the
    stream they came from. A batch of one table (the usual case) is not looped over."""
    schema_of: dict[str, TableSchema | None] = {}
    for subject in set(messages.subjects):
        schema = cached_schema_for_subject(subject)
        schema_of[subject] = schema if schema and schema.stream == messages.stream else None
    schemas = set(schema_of.values())
    if len(schemas) == 1:
        (only,) = schemas
        everything = list(range(len(messages)))
        return ({}, everything) if only is None else ({only: everything}, [])
    by_schema: dict[TableSchema, list[int]] = {}
    unknown: list[int] = []
    for index, schema in enumerate(map(schema_of.__getitem__, messages.subjects)):
        if schema is None:
            unknown.append(index)
        else:
            by_schema.setdefault(schema, []).append(index)
    return by_schema, unknown


def _pick(values: list[T], indices: list[int]) -> list[T]:
    """`values` at the increasing `indices`; `values` itself when they are all of them."""
    return values if len(indices) == len(values) else [values[i] for i in indices]


def route(messages: PulledMessages, *, earliest_ns: int, now_ns: int) -> RoutedMessages:
    """Decode `messages` into rows per schema; everything else becomes a quarantine record,
    including each message that makes decoding raise (found by splitting the batch in halves:
    at most 2 × log2(len) decodes per such message, each of a part of the batch)."""
    try:
        return _route_all(messages, earliest_ns=earliest_ns, now_ns=now_ns)
    except NOT_ISOLATED:
        raise
    except BaseException as error:
        failure = error
    if len(messages) == 1:
        return _failed_alone(messages, failure)
    middle = len(messages) // 2
    halves = (_part(messages, 0, middle), _part(messages, middle, len(messages)))
    return _merged([route(half, earliest_ns=earliest_ns, now_ns=now_ns) for half in halves])


def _part(messages: PulledMessages, start: int, stop: int) -> PulledMessages:
    return PulledMessages(
        messages.subjects[start:stop],
        messages.replies[start:stop],
        messages.payloads[start:stop],
        messages.headers[start:stop],
        stream=messages.stream,
    )


def _failed_alone(message: PulledMessages, error: BaseException) -> RoutedMessages:
    """The quarantine record of one message whose decoding raises `error`."""
    reason = f"decoding this message raised {type(error).__name__}: {error}"
    record = _quarantine_records(message, ack_metadata(message.replies), [0], [reason])
    log.error(
        "quarantining message %s of %s: %s",
        record.get_column("stream_seq")[0],
        message.stream,
        reason,
    )
    return RoutedMessages(rows=[], quarantine=record, unknown_field_messages={})


def _merged(parts: list[RoutedMessages]) -> RoutedMessages:
    unknown_fields: dict[str, int] = {}
    for part in parts:
        for table, count in part.unknown_field_messages.items():
            unknown_fields[table] = unknown_fields.get(table, 0) + count
    return RoutedMessages(
        rows=[rows for part in parts for rows in part.rows],
        quarantine=pl.concat([part.quarantine for part in parts]),
        unknown_field_messages=unknown_fields,
    )


def _route_all(messages: PulledMessages, *, earliest_ns: int, now_ns: int) -> RoutedMessages:
    """Decode `messages` into rows per schema; everything else becomes a quarantine record.
    Raises what decoding raises."""
    metadata = ack_metadata(messages.replies)
    by_schema, unknown_subjects = _by_schema(messages)

    rows: list[tuple[TableSchema, pl.DataFrame]] = []
    quarantined = [
        _quarantine_records(
            messages,
            metadata,
            unknown_subjects,
            [f"no schema for subject {messages.subjects[i]}" for i in unknown_subjects],
        )
    ]
    unknown_fields: dict[str, int] = {}
    for schema, indices in by_schema.items():
        payloads = _pick(messages.payloads, indices)
        panic_on_poisoned_payload(payloads)
        decoded = decode_batch(
            schema,
            payloads,
            received_ns=_pick(metadata["stored_ns"].to_list(), indices),
            earliest_ns=earliest_ns,
            now_ns=now_ns,
        )
        if decoded.unknown_field_messages:
            unknown_fields[schema.table] = decoded.unknown_field_messages
        if decoded.rejections:
            quarantined.append(
                _quarantine_records(
                    messages,
                    metadata,
                    [indices[r.index] for r in decoded.rejections],
                    [r.reason for r in decoded.rejections],
                )
            )
        if decoded.rows.height:
            taken = _pick(indices, decoded.positions)
            rows.append(
                (
                    schema,
                    decoded.rows.with_columns(
                        _stream_seq=metadata["stream_seq"].gather(taken),
                        _subject=pl.Series(_pick(messages.subjects, taken), dtype=pl.String),
                        _reply=pl.Series(_pick(messages.replies, taken), dtype=pl.String),
                    ),
                )
            )
    return RoutedMessages(
        rows=rows, quarantine=pl.concat(quarantined), unknown_field_messages=unknown_fields
    )
