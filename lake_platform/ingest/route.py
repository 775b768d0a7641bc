"""From pulled JetStream messages to typed Bronze rows and quarantine records, in bulk.

A pulled batch is split by schema (the subject's first tokens), each part is decoded at
once, and every message ends up as exactly one row or one quarantine record, carrying the
reply subject that acks it.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeVar

import polars as pl

from lake_platform.ingest.pull import PulledMessages
from lake_platform.ingest.wire import parse_headers
from lake_platform.schemas import TableSchema, decode_batch, schema_for_subject

T = TypeVar("T")

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
            "headers": [json.dumps(parse_headers(messages.headers[i])) for i in indices],
            "payload": [messages.payloads[i] for i in indices],
            REPLY: [messages.replies[i] for i in indices],
        },
        schema={**QUARANTINE_SCHEMA, REPLY: pl.String()},
    )


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
    """Decode `messages` into rows per schema; everything else becomes a quarantine record."""
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
        decoded = decode_batch(
            schema,
            _pick(messages.payloads, indices),
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
