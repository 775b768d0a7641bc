"""Decode a batch of raw JSON payloads into a typed frame of one schema, in bulk.

msgspec validates the whole batch in one call (types, integer ranges, enums, dates, required
fields, list bounds, partition values of 1..128 characters); only when that fails are the
payloads decoded one by one to find which are bad and why. The joined batch is first split
into raw values and each is compared with its own payload, so fragments that are invalid
alone but valid once joined (`{…"conditions":[1` + `2]}`) never pass as rows: the bulk path
accepts exactly what the one-by-one path accepts. Checks that need the whole value or the
clock (the escaped byte length of the partition value, `ts_event_ns`) run as Polars
expressions on the frame. Every input ends up either as a row or as a `Rejection` with its
reason: nothing here raises on bad input.
"""

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import chain
from operator import attrgetter
from typing import Annotated, Any, Literal

import msgspec
import polars as pl
import pyarrow as pa

from lake_platform.schemas.event_id import event_id
from lake_platform.schemas.fields import Field
from lake_platform.schemas.registry import TableSchema
from lake_platform.storage.paths import ESCAPED_VALUE_MAX_BYTES, HIVE_ESCAPED
from lake_platform.timestamps import HOUR_NS

PARTITION_VALUE_MAX_CHARS = 128
JSON_WHITESPACE = b" \t\n\r"
"""The whitespace JSON allows around a value (RFC 8259)."""


@dataclass(frozen=True)
class Rejection:
    """A message that cannot become a row: its position in the batch and why."""

    index: int
    reason: str


@dataclass(frozen=True)
class DecodedBatch:
    """The typed rows of a batch (stored columns, `event_id` included) and its rejections.

    `positions[i]` is the index in the input batch of row `i`, so callers can attach
    per-message provenance (stream sequence, subject) to the rows.
    """

    rows: pl.DataFrame
    positions: list[int]
    rejections: list[Rejection]
    unknown_field_messages: int


def _int_bounds(dtype: pl.DataType) -> tuple[int, int]:
    bits = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64}[type(dtype)]
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def _value_type(dtype: pl.DataType, name: str, item_required: tuple[str, ...] = ()) -> Any:
    """The msgspec type that validates a JSON value stored as `dtype`."""
    if dtype == pl.String:
        return str
    if dtype == pl.Float64:
        return float
    if dtype == pl.Boolean:
        return bool
    if dtype == pl.Date:
        return dt.date
    if dtype.is_integer():
        low, high = _int_bounds(dtype)
        return Annotated[int, msgspec.Meta(ge=low, le=high)]
    if isinstance(dtype, pl.List):
        return list[_value_type(dtype.inner, name, item_required)]  # type: ignore[misc]
    if isinstance(dtype, pl.Struct):
        members = []
        for sub in dtype.fields:
            sub_type = _value_type(sub.dtype, f"{name}_{sub.name}")
            if sub.name in item_required:
                members.append((sub.name, sub_type))
            else:
                members.append((sub.name, sub_type | None, None))
        members.sort(key=lambda member: len(member) == 3)
        return msgspec.defstruct(name, members, forbid_unknown_fields=True, kw_only=True, gc=False)
    raise TypeError(f"no JSON decoding for {dtype}")


def _field_type(field: Field, partition_column: str) -> Any:
    if field.choices is not None:
        base: Any = Literal[field.choices]  # type: ignore[valid-type]
    else:
        base = _value_type(field.dtype, field.name, field.item_required)
    if field.name == partition_column:
        base = Annotated[base, msgspec.Meta(min_length=1, max_length=PARTITION_VALUE_MAX_CHARS)]
    elif field.max_items is not None:
        base = Annotated[base, msgspec.Meta(max_length=field.max_items)]
    return base


@dataclass(frozen=True)
class _Decoders:
    strict: msgspec.json.Decoder
    lenient: msgspec.json.Decoder
    batch: msgspec.json.Decoder
    raw: msgspec.json.Decoder


@cache
def _decoders(schema: TableSchema) -> _Decoders:
    """Message types generated from the registry entry, strict and tolerant of extra fields."""

    def message_type(forbid_unknown: bool) -> type:
        members: list[tuple[Any, ...]] = []
        for field in schema.fields:
            value_type = _field_type(field, schema.partition_column)
            if field.required:
                members.append((field.name, value_type))
            else:
                members.append((field.name, value_type | None, field.default))
        return msgspec.defstruct(
            schema.name.replace(".", "_"),
            members,
            forbid_unknown_fields=forbid_unknown,
            kw_only=True,
            gc=False,
        )

    strict = message_type(forbid_unknown=True)
    return _Decoders(
        strict=msgspec.json.Decoder(strict),
        lenient=msgspec.json.Decoder(message_type(forbid_unknown=False)),
        batch=msgspec.json.Decoder(list[strict]),  # type: ignore[valid-type]
        raw=msgspec.json.Decoder(list[msgspec.Raw]),
    )


def _flatten_expressions(schema: TableSchema) -> list[pl.Expr]:
    """Numbered columns (`bid_px_1`…) for the fields stored flattened."""
    columns = []
    for field in schema.fields:
        if field.flatten_items is None:
            continue
        inner = field.dtype.inner  # type: ignore[attr-defined]
        for sub in inner.fields:
            for i in range(field.flatten_items):
                item = pl.col(field.name).list.get(i, null_on_oob=True)
                columns.append(item.struct.field(sub.name).alias(f"{sub.name}_{i + 1}"))
    return columns


def _decode_one(decoders: _Decoders, payload: bytes) -> tuple[Any, str | None, bool]:
    """One message: (message, None, has_unknown_fields) or (None, reason, False)."""
    try:
        try:
            return decoders.strict.decode(payload), None, False
        except msgspec.ValidationError as error:
            if "unknown field" not in str(error):
                raise
            return decoders.lenient.decode(payload), None, True
    except msgspec.ValidationError as error:
        return None, f"invalid field: {error}", False
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        return None, f"not a JSON object in UTF-8: {error}", False


def _decode_each(
    decoders: _Decoders, payloads: Sequence[bytes]
) -> tuple[list[Any], list[int], list[Rejection], int]:
    """Slow path: decode message by message, so each bad one gets its own reason."""
    messages: list[Any] = []
    positions: list[int] = []
    rejections: list[Rejection] = []
    unknown = 0
    for index, payload in enumerate(payloads):
        message, reason, has_unknown = _decode_one(decoders, payload)
        if reason is not None:
            rejections.append(Rejection(index, reason))
            continue
        messages.append(message)
        positions.append(index)
        unknown += has_unknown
    return messages, positions, rejections, unknown


def bulk_array(schema: TableSchema, payloads: Sequence[bytes]) -> bytes | None:
    """The payloads as one JSON array, when its raw values are the payloads, one each:
    exactly, or (checked only when the exact comparison fails) the payloads stripped of the
    JSON whitespace around them, such as a trailing newline, which one-by-one decoding
    accepts too. None otherwise (a payload is malformed, or fragments splice together)."""
    joined = b"[" + b",".join(payloads) + b"]"
    try:
        raws = list(map(bytes, _decoders(schema).raw.decode(joined)))
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if raws == list(payloads) or raws == [p.strip(JSON_WHITESPACE) for p in payloads]:
        return joined
    return None


def _decode_messages(
    schema: TableSchema, payloads: Sequence[bytes]
) -> tuple[list[Any], list[int], list[Rejection], int]:
    """Decode the batch as one JSON array; fall back to one by one when any message is bad."""
    decoders = _decoders(schema)
    joined = bulk_array(schema, payloads)
    if joined is None:
        return _decode_each(decoders, payloads)
    try:
        messages = decoders.batch.decode(joined)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _decode_each(decoders, payloads)
    return messages, list(range(len(payloads))), [], 0


def _arrow(values: list[Any], dtype: pl.DataType) -> pa.Array:
    """`values` (decoded JSON: scalars, lists, message structs, None) as an Arrow array.

    Lists and structs are built from their flattened items and offsets, never row by row
    (Polars converts nested Python values one at a time), and nothing goes through
    `pa.array`, which imports pandas on first use (seconds, inside the first batch).
    """
    if isinstance(dtype, pl.List):
        present = [value for value in values if value is not None]
        lengths = pl.Series(
            [0 if value is None else len(value) for value in values], dtype=pl.Int64
        )
        offsets = pl.concat([pl.Series([0], dtype=pl.Int64), lengths.cum_sum()])
        items = _arrow(list(chain.from_iterable(present)), dtype.inner)
        return pa.LargeListArray.from_arrays(
            offsets.to_arrow(), items, mask=_nulls(values) if len(present) < len(values) else None
        )
    if isinstance(dtype, pl.Struct):
        members = [
            _arrow(
                [None if value is None else getattr(value, sub.name) for value in values], sub.dtype
            )
            for sub in dtype.fields
        ]
        return pa.StructArray.from_arrays(
            members, names=[sub.name for sub in dtype.fields], mask=_nulls(values)
        )
    return pl.Series(values, dtype=dtype).to_arrow()


def _nulls(values: list[Any]) -> pa.Array:
    return pl.Series([value is None for value in values], dtype=pl.Boolean).to_arrow()


def _frame(schema: TableSchema, messages: Sequence[Any]) -> pl.DataFrame:
    """The decoded messages as a frame, built column by column.

    No record dict is made per message: a batch allocates few objects the garbage
    collector tracks (the message structs are not tracked), which at tens of thousands of
    messages a second is most of what decoding costs.
    """
    return pl.DataFrame(
        [_column(field, list(map(attrgetter(field.name), messages))) for field in schema.fields]
    )


def _column(field: Field, values: list[Any]) -> pl.Series:
    """One decoded field's values as a column: nested ones built in Arrow (`_arrow`), flat
    ones by Polars straight from the Python values (not through Arrow and back)."""
    if isinstance(field.dtype, pl.List | pl.Struct):
        return pl.Series(field.name, _arrow(values, field.dtype))
    return pl.Series(field.name, values, dtype=field.dtype)


def _escaped_bytes(column: str) -> pl.Expr:
    """UTF-8 length of the Hive-escaped value: every escaped character becomes 3 ASCII bytes."""
    value = pl.col(column)
    return value.str.len_bytes() + 2 * value.str.count_matches(HIVE_ESCAPED.pattern)


def _value_rejections(frame: pl.DataFrame, column: str) -> list[Rejection]:
    """Partition values whose escaped form would not fit a file name or an object key."""
    escaped = _escaped_bytes(column).alias("_escaped_bytes")
    over = frame.select("_position", escaped).filter(
        pl.col("_escaped_bytes") > ESCAPED_VALUE_MAX_BYTES
    )
    return [
        Rejection(
            position,
            f"partition value `{column}` escapes to {size} bytes, over the "
            f"{ESCAPED_VALUE_MAX_BYTES}-byte budget of a path segment",
        )
        for position, size in over.iter_rows()
    ]


def decode_batch(
    schema: TableSchema,
    payloads: Sequence[bytes],
    *,
    received_ns: Sequence[int],
    earliest_ns: int,
    now_ns: int,
) -> DecodedBatch:
    """Typed rows and rejections for `payloads`, all messages of `schema`.

    `received_ns[i]` fills `ts_recv_ns` of message `i` when the message has none (the
    JetStream stored timestamp). Events before `earliest_ns` (LAKE_PARTITIONS_START) or
    more than an hour after `now_ns` are rejected.
    """
    messages, positions, rejections, unknown = _decode_messages(schema, payloads)
    frame = _frame(schema, messages)
    latest_ns = now_ns + HOUR_NS
    frame = frame.with_columns(
        _position=pl.Series(positions, dtype=pl.Int64),
        _received=pl.Series(received_ns, dtype=pl.Int64).gather(positions),
    )
    value_rejections = _value_rejections(frame, schema.partition_column)
    rejections.extend(value_rejections)
    in_range = pl.col("ts_event_ns").is_between(earliest_ns, latest_ns)
    if value_rejections:
        frame = frame.filter(~pl.col("_position").is_in([r.index for r in value_rejections]))
    out_of_range = frame.filter(~in_range)
    rejections.extend(
        Rejection(
            position,
            f"ts_event_ns {ts} outside [{earliest_ns}, {latest_ns}] "
            "(LAKE_PARTITIONS_START, now + 1 h)",
        )
        for position, ts in out_of_range.select("_position", "ts_event_ns").iter_rows()
    )
    stored = schema.stored_schema
    rows = frame.filter(in_range).with_columns(
        pl.col("ts_recv_ns").fill_null(pl.col("_received")), *_flatten_expressions(schema)
    )
    rows = rows.with_columns(event_id(stored))
    return DecodedBatch(
        rows=rows.select(stored.names()),
        positions=rows.get_column("_position").to_list(),
        rejections=sorted(rejections, key=lambda rejection: rejection.index),
        unknown_field_messages=unknown,
    )
