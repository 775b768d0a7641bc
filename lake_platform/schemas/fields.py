"""Building blocks of the schema registry: a field is a name, a Polars type and its rules."""

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class Field:
    """One field of a message.

    `dtype` is the stored Polars type; it also decides how the JSON value is validated
    (integer ranges, ISO dates, nested objects). `choices` restricts a string to an enum.
    `max_items` bounds a list. `flatten_items` stores a list of structs as numbered columns
    (`{field}_{1..n}` for every struct field) instead of a nested column. `item_required`
    names the fields of a list's struct items that must be present; the others are optional.
    """

    name: str
    dtype: pl.DataType
    required: bool = False
    choices: tuple[str | int, ...] | None = None
    default: object = None
    max_items: int | None = None
    flatten_items: int | None = None
    item_required: tuple[str, ...] = ()


def req(name: str, dtype: pl.DataType, **rules: object) -> Field:
    """A required field: absent or null is an error."""
    return Field(name, dtype, required=True, **rules)  # type: ignore[arg-type]


def opt(name: str, dtype: pl.DataType, **rules: object) -> Field:
    """An optional field: null when absent (or `default` when one is given)."""
    return Field(name, dtype, required=False, **rules)  # type: ignore[arg-type]


def struct(**fields: pl.DataType) -> pl.Struct:
    """A nested object whose fields are all optional, in declaration order."""
    return pl.Struct([pl.Field(name, dtype) for name, dtype in fields.items()])


SOURCES = ("direct_feed", "replay", "sim")

EVENT_TIME = req("ts_event_ns", pl.Int64())
RECEIVE_TIME = opt("ts_recv_ns", pl.Int64())
SOURCE = opt("source", pl.String(), choices=SOURCES, default="direct_feed")
