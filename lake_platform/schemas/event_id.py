"""`event_id`: the MD5 of an event's canonical encoding, computed for a whole frame at once.

Canonical encoding, version 1 (pinned by golden vectors in the tests; changing it changes
every identity in the lake and breaks dedup across history):

- the event's stored columns in schema order (for `futures.mbp10` the flattened book
  columns), except `ts_recv_ns`, `event_id` and the `_` provenance columns;
- each value becomes a token: null `~`; string `{utf8 byte length}:{value}`; integer in
  decimal; float as its shortest round-trip decimal (`-0.0` written as `0.0`); boolean `T`/`F`;
  date `YYYY-MM-DD`; list `[` item tokens joined by `,` `]`; struct `{` field tokens in
  declared order joined by `,` `}`;
- tokens are joined by `|` and the UTF-8 bytes hashed with MD5, written as 32 lowercase hex.

Length-prefixed strings keep the encoding unambiguous whatever the values contain.
"""

import polars as pl
import polars_hash  # noqa: F401  (registers the `nchash` expression namespace)

NULL_TOKEN = "~"
EXCLUDED = frozenset({"ts_recv_ns", "event_id"})


def _token(expr: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """The canonical token of every value of `expr`, as a String expression."""
    if dtype == pl.String:
        token = pl.concat_str([expr.str.len_bytes().cast(pl.String), pl.lit(":"), expr])
    elif dtype == pl.Boolean:
        token = pl.when(expr).then(pl.lit("T")).otherwise(pl.lit("F"))
    elif dtype.is_float():
        token = pl.when(expr == 0).then(pl.lit(0.0)).otherwise(expr).cast(pl.String)
    elif dtype.is_integer() or dtype == pl.Date:
        token = expr.cast(pl.String)
    elif isinstance(dtype, pl.List):
        items = expr.list.eval(_token(pl.element(), dtype.inner)).list.join(",")
        token = pl.concat_str([pl.lit("["), items, pl.lit("]")])
    elif isinstance(dtype, pl.Struct):
        fields = [_token(expr.struct.field(f.name), f.dtype) for f in dtype.fields]
        token = pl.concat_str([pl.lit("{"), pl.concat_str(fields, separator=","), pl.lit("}")])
    else:
        raise TypeError(f"no canonical encoding for {dtype}")
    return pl.when(expr.is_null()).then(pl.lit(NULL_TOKEN)).otherwise(token)


def canonical_encoding(schema: pl.Schema) -> pl.Expr:
    """The canonical encoding (a String expression) of the rows of a frame with `schema`."""
    tokens = [
        _token(pl.col(name), dtype)
        for name, dtype in schema.items()
        if name not in EXCLUDED and not name.startswith("_")
    ]
    return pl.concat_str(tokens, separator="|")


def event_id(schema: pl.Schema) -> pl.Expr:
    """The `event_id` expression (32 lowercase hex) for frames with `schema`."""
    return canonical_encoding(schema).nchash.md5().alias("event_id")  # type: ignore[attr-defined]
