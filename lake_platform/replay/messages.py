"""Rows of the lake back into the NATS messages a producer would have sent: subjects and JSON.

A payload holds every field of the table's schema (`TableSchema.fields`, in that order) with
its stored value: `futures/mbp10`'s flattened book (`bid_px_1` … `ask_sz_10`) re-nested into
`levels` up to the last level with a value, `levels/signals`' nested `levels` as stored,
dates ISO, floats in their shortest round-trip form. A null is left out (the decoder reads an
absent optional field as null), in nested objects too, except in a field with a default
(`source`, `is_snapshot`): absent reads back as the default there, so a stored null is sent as
`null`, the only form that reads back as null. `event_id` and the provenance columns
(`_stream_seq`, `_subject`) are no fields and are never sent. Decoding a payload
(`decode_batch`) therefore gives back the row it was made from, `event_id` included
(`source` is part of the event's identity: with `source` set to `replay`, the identity
changes).

The whole frame is encoded by Polars in one pass (`struct.json_encode`); the nulls are then
cut out by a regular expression over the JSON text. That is exact: a key is `"` + name +
`":`, and in a JSON string every `"` but the closing one is escaped (`\\"`), so `,"` or `{"`
followed by a field name and `":null` is always a key and its null value, never text inside a
string.
"""

import re
import unicodedata
from collections.abc import Iterator
from functools import cache

import polars as pl
import pyarrow as pa

from lake_platform.schemas.fields import SOURCE, Field
from lake_platform.schemas.registry import TableSchema

REPLAY_SOURCE = "replay"
"""The `source` of a replayed event, unless it is replayed as recorded."""
SUBJECT_SPECIALS = frozenset("%.*>")
"""Characters a subject token cannot hold as they are: the escape itself, the token separator
and the wildcards."""


def subject_token(value: str) -> str:
    """`value` as one NATS subject token: `%`, `.`, `*`, `>`, whitespace and control
    characters percent-encoded (`%XX` of each UTF-8 byte), everything else kept;
    `urllib.parse.unquote` gives the value back."""
    return "".join(_escaped(char) for char in value)


def _escaped(char: str) -> str:
    if char in SUBJECT_SPECIALS or _unprintable(char):
        return "".join(f"%{byte:02X}" for byte in char.encode())
    return char


def _unprintable(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) == "Cc"


def subjects(schema: TableSchema, frame: pl.DataFrame, prefix: str) -> list[str]:
    """Each row's subject: `{prefix}.{schema.subject}.{token of its partition value}`
    (`{schema.subject}.{token}` when `prefix` is empty), e.g. `market.stocks.trades.SPY`.

    Only the unprefixed form is routed by the ingest (its streams hold `market.>` and
    `levels.>`, and a schema is found from a subject's first tokens); the partition value the
    ingest stores is the payload's, never the subject's. A ValueError for a prefix that is
    not whole subject tokens (`replay`, `a.b`; not `a.`, `*`, `a b`).
    """
    head = f"{_checked_prefix(prefix)}{schema.subject}."
    values = frame.get_column(schema.partition_column).cast(pl.String)
    tokens = {value: head + subject_token(value) for value in values.unique().to_list()}
    return values.replace_strict(tokens, return_dtype=pl.String).to_list()


def _checked_prefix(prefix: str) -> str:
    """`prefix` followed by its dot (nothing when empty); a ValueError when it is no
    sequence of subject tokens (one empty, a wildcard, whitespace or a control character)."""
    if not prefix:
        return ""
    for token in prefix.split("."):
        if token in ("", "*", ">") or any(_unprintable(char) for char in token):
            raise ValueError(f"subject prefix {prefix!r} is not a sequence of NATS tokens")
    return f"{prefix}."


def payloads(schema: TableSchema, frame: pl.DataFrame, *, as_recorded: bool) -> list[bytes]:
    """Each row of `frame` (Silver or Bronze rows of `schema`) as the UTF-8 JSON object a
    producer would have published (see the module); `source` is `replay` unless
    `as_recorded` keeps the recorded one."""
    if not frame.height:
        return []
    fields = [
        pl.lit(REPLAY_SOURCE, pl.String).alias(field.name)
        if field is SOURCE and not as_recorded
        else pl.lit(_renested(field, frame))
        if field.flatten_items is not None
        else pl.col(field.name)
        for field in schema.fields
    ]
    encoded = pl.struct(fields).struct.json_encode()
    for pattern, replacement in _null_patterns(schema):
        encoded = encoded.str.replace_all(pattern, replacement)
    return frame.select(encoded.cast(pl.Binary)).to_series().to_list()


def _renested(field: Field, frame: pl.DataFrame) -> pl.Series:
    """A list field stored flattened (`bid_px_1` … `ask_sz_10`) as its list of objects again,
    up to the last item with a value.

    The items are gathered, in row then item order, from the numbered columns stacked item
    after item, and the list is assembled from them and their offsets in Arrow
    (`pl.concat_list` of ten struct columns costs ~35 µs a row).
    """
    names = [sub.name for sub in field.dtype.inner.fields]  # type: ignore[attr-defined]
    count = field.flatten_items or 0
    rows = frame.height
    given = frame.select(
        pl.max_horizontal(
            pl.when(pl.any_horizontal(pl.col(f"{name}_{i}").is_not_null() for name in names))
            .then(pl.lit(i, pl.Int64))
            .otherwise(pl.lit(0, pl.Int64))
            for i in range(1, count + 1)
        )
    ).to_series()
    stacked = pl.concat(
        [
            frame.select(pl.col(f"{name}_{i}").alias(name) for name in names)
            for i in range(1, count + 1)
        ],
        rechunk=True,
    )
    row = pl.int_range(rows, dtype=pl.Int64)
    positions = pl.select(pl.int_ranges(row, row + rows * pl.lit(given), rows)).to_series()
    items = stacked.select(pl.struct(names).gather(positions.explode(empty_as_null=False)))
    offsets = pl.concat([pl.Series([0], dtype=pl.Int64), given.cum_sum()])
    return pl.Series(
        field.name,
        pa.LargeListArray.from_arrays(offsets.to_arrow(), items.to_series().to_arrow()),
    )


@cache
def _null_patterns(schema: TableSchema) -> list[tuple[str, str]]:
    """Regular expressions (and replacements) that cut `"name":null` out of the JSON text
    for every optional member of the payload and of its nested objects: first each one after
    another member, with its comma before; then those left, each the first member of its
    object, with the comma after (if any). A member with a default is not cut (see the
    module)."""
    objects = list(_objects(schema.fields))
    defaulted = {field.name for field in schema.fields if field.default is not None}
    omitted = {name for names, required in objects for name in names if name not in required}
    omitted -= defaulted
    patterns = []
    if omitted:
        patterns.append((f',"{_any_of(omitted)}":null', ""))
    openers = {names[0] for names, _ in objects} & omitted
    if openers:
        patterns.append((f'\\{{"{_any_of(openers)}":null,?', "{"))
    return patterns


def _any_of(names: set[str]) -> str:
    return f"(?:{'|'.join(re.escape(name) for name in sorted(names))})"


def _objects(fields: tuple[Field, ...]) -> Iterator[tuple[list[str], frozenset[str]]]:
    """Every object of a payload (the payload, then its nested objects) as its member names
    and the names of its required members."""
    yield [field.name for field in fields], frozenset(f.name for f in fields if f.required)
    for field in fields:
        yield from _nested_objects(field.dtype, frozenset(field.item_required))


def _nested_objects(
    dtype: pl.DataType, required: frozenset[str]
) -> Iterator[tuple[list[str], frozenset[str]]]:
    """The objects of values of `dtype`; `required`: the required members of its items."""
    if isinstance(dtype, pl.List):
        yield from _nested_objects(dtype.inner, required)
    elif isinstance(dtype, pl.Struct):
        yield [member.name for member in dtype.fields], required
        for member in dtype.fields:
            yield from _nested_objects(member.dtype, frozenset())
