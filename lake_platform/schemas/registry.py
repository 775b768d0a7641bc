"""The schema registry: one entry per table, from NATS subject to lake path.

Read one entry to follow a table end to end: its `subject` is consumed from `stream` into
`bronze/{table}`, partitioned by `partition_column`; Silver (`silver/{table}`) and Gold are
derived from it. Every entry is data; the decoder, the event-id encoder and the stored
Arrow schemas are generated from these fields. `description` says what one row is (the UI's
asset description); what each column holds is in `schemas/columns.py`.
"""

from dataclasses import dataclass

import polars as pl

from lake_platform.schemas.fields import EVENT_TIME, RECEIVE_TIME, SOURCE, Field, opt, req, struct

STR, F64, I64, I32, I16, I8 = (
    pl.String(),
    pl.Float64(),
    pl.Int64(),
    pl.Int32(),
    pl.Int16(),
    pl.Int8(),
)
BOOL, DATE = pl.Boolean(), pl.Date()
INT_LIST = pl.List(pl.Int32())
RIGHTS = ("C", "P")
AGGRESSORS = (-1, 0, 1)

BRONZE_PROVENANCE = {"_stream_seq": pl.Int64(), "_subject": pl.String()}
"""Columns Bronze adds to every row (dropped by Silver): JetStream sequence and full subject."""


@dataclass(frozen=True, eq=False)
class TableSchema:
    """Everything the platform knows about one table.

    Entries are singletons compared by identity: hashing one is then free, where hashing
    all its fields (Polars dtypes included) cost ~1.6 µs on every routed message.
    """

    name: str
    stream: str
    subject: str
    table: str
    partition_column: str
    payload_fields: tuple[Field, ...]
    description: str
    silver: bool = True

    @property
    def fields(self) -> tuple[Field, ...]:
        """Fields of a message in schema order: event time, receive time, payload, source."""
        return (EVENT_TIME, RECEIVE_TIME, *self.payload_fields, SOURCE)

    @property
    def stored_schema(self) -> pl.Schema:
        """Columns of a Silver row (and of a Bronze row before provenance), in order."""
        columns: dict[str, pl.DataType] = {}
        for field in self.fields:
            if field.flatten_items is None:
                columns[field.name] = field.dtype
                continue
            inner = field.dtype.inner  # type: ignore[attr-defined]
            for sub in inner.fields:
                for i in range(1, field.flatten_items + 1):
                    columns[f"{sub.name}_{i}"] = sub.dtype
        columns["event_id"] = pl.String()
        return pl.Schema(columns)

    @property
    def bronze_schema(self) -> pl.Schema:
        """Columns of a Bronze row: the stored columns plus provenance."""
        return pl.Schema({**self.stored_schema, **BRONZE_PROVENANCE})

    @property
    def bronze_file_schema(self) -> pl.Schema:
        """Columns of a Bronze file: a Bronze row without its partition column.

        The partition value is in the file's path (`{col}={value}/…`), as Hive and Spark lay
        out tables: a Hive-aware reader (pandas, PyArrow, Polars, DuckDB, Spark) adds the
        column from the path, and refuses a file that also holds it with another type.
        """
        return without_column(self.bronze_schema, self.partition_column)


def without_column(schema: pl.Schema, column: str) -> pl.Schema:
    """`schema` without `column` (the others in order)."""
    return pl.Schema({name: dtype for name, dtype in schema.items() if name != column})


def partition_column_last(schema: pl.Schema, column: str) -> pl.Schema:
    """`schema` with `column` moved to the end: the file's columns, then the one from the path
    (where Hive-aware readers put it)."""
    return pl.Schema({**without_column(schema, column), column: schema[column]})


_TRADE_CORE = (req("price", F64), req("size", I32))
_OPTION_CONTRACT = (
    req("option_symbol", STR),
    req("exp_date", DATE),
    req("strike", F64),
    req("right", STR, choices=RIGHTS),
)
_BOOK_LEVEL = struct(bid_px=F64, bid_sz=I32, ask_px=F64, ask_sz=I32)
_SIGNAL_LEVEL = pl.Struct(
    [
        pl.Field("level_id", STR),
        pl.Field("level_kind", STR),
        pl.Field("level_price", F64),
        pl.Field("direction", STR),
        pl.Field("distance", F64),
        pl.Field("break_score_raw", F64),
        pl.Field("break_score_smooth", F64),
        pl.Field("signal", STR),
        pl.Field("confidence", STR),
        pl.Field(
            "barrier",
            struct(
                state=STR,
                delta_liq=F64,
                replenishment_ratio=F64,
                added=F64,
                canceled=F64,
                filled=F64,
            ),
        ),
        pl.Field(
            "tape",
            struct(imbalance=F64, buy_vol=F64, sell_vol=F64, velocity=F64, sweep_detected=BOOL),
        ),
        pl.Field("fuel", struct(effect=STR, net_dealer_gamma=F64, call_wall=F64, put_wall=F64)),
        pl.Field("runway", struct(direction=STR, next_level_price=F64, distance=F64, quality=STR)),
    ]
)

SCHEMAS: tuple[TableSchema, ...] = (
    TableSchema(
        name="stocks.trades",
        stream="MARKET",
        subject="market.stocks.trades",
        table="stocks/trades",
        partition_column="symbol",
        payload_fields=(
            req("symbol", STR),
            *_TRADE_CORE,
            opt("exchange", I16),
            opt("conditions", INT_LIST),
            opt("seq", I64),
        ),
        description="Stock trades (prints): one row per trade.",
    ),
    TableSchema(
        name="stocks.quotes",
        stream="MARKET",
        subject="market.stocks.quotes",
        table="stocks/quotes",
        partition_column="symbol",
        payload_fields=(
            req("symbol", STR),
            req("bid_px", F64),
            req("bid_sz", I32),
            req("ask_px", F64),
            req("ask_sz", I32),
            opt("bid_exch", I16),
            opt("ask_exch", I16),
            opt("seq", I64),
        ),
        description="Stock top-of-book quotes: one row per best bid/ask update.",
    ),
    TableSchema(
        name="options.trades",
        stream="MARKET",
        subject="market.options.trades",
        table="options/trades",
        partition_column="underlying",
        payload_fields=(
            req("underlying", STR),
            *_OPTION_CONTRACT,
            *_TRADE_CORE,
            opt("opt_bid", F64),
            opt("opt_ask", F64),
            opt("aggressor", I8, choices=AGGRESSORS),
            opt("conditions", INT_LIST),
            opt("seq", I64),
        ),
        description="Option trades: one row per trade of an option contract.",
    ),
    TableSchema(
        name="options.greeks",
        stream="MARKET",
        subject="market.options.greeks",
        table="options/greeks_snapshots",
        partition_column="underlying",
        payload_fields=(
            req("underlying", STR),
            *_OPTION_CONTRACT,
            req("delta", F64),
            req("gamma", F64),
            req("theta", F64),
            req("vega", F64),
            req("implied_vol", F64),
            opt("underlying_price", F64),
            opt("open_interest", I64),
            opt("seq", I64),
        ),
        description="Option greeks snapshots: one row per contract and snapshot.",
    ),
    TableSchema(
        name="futures.trades",
        stream="MARKET",
        subject="market.futures.trades",
        table="futures/trades",
        partition_column="symbol",
        payload_fields=(
            req("symbol", STR),
            *_TRADE_CORE,
            opt("aggressor", I8, choices=AGGRESSORS),
            opt("exchange", STR),
            opt("conditions", INT_LIST),
            opt("seq", I64),
        ),
        description="Futures trades: one row per trade.",
    ),
    TableSchema(
        name="futures.mbp10",
        stream="MARKET",
        subject="market.futures.mbp10",
        table="futures/mbp10",
        partition_column="symbol",
        payload_fields=(
            req("symbol", STR),
            opt("is_snapshot", BOOL, default=False),
            opt("seq", I64),
            opt("action", STR, choices=("A", "C", "M", "T")),
            opt("side", STR, choices=("A", "B", "N")),
            opt("action_price", F64),
            opt("action_size", I32),
            req(
                "levels",
                pl.List(_BOOK_LEVEL),
                max_items=10,
                flatten_items=10,
                item_required=("bid_px", "bid_sz", "ask_px", "ask_sz"),
            ),
        ),
        description="Futures book by price, 10 levels (MBP-10): one row per update or snapshot.",
    ),
    TableSchema(
        name="levels.signals",
        stream="SIGNALS",
        subject="levels.signals",
        table="levels/signals",
        partition_column="underlying",
        payload_fields=(
            req("underlying", STR),
            opt("spot", F64),
            opt("bid", F64),
            opt("ask", F64),
            req(
                "levels",
                pl.List(_SIGNAL_LEVEL),
                item_required=("level_id", "level_kind", "level_price"),
            ),
        ),
        description="Level signals: one row per signal, its price levels nested.",
        silver=False,
    ),
)

BY_NAME: dict[str, TableSchema] = {schema.name: schema for schema in SCHEMAS}
BY_TABLE: dict[str, TableSchema] = {schema.table: schema for schema in SCHEMAS}
BY_SUBJECT: dict[str, TableSchema] = {schema.subject: schema for schema in SCHEMAS}
STREAMS: dict[str, str] = {"MARKET": "market.>", "SIGNALS": "levels.>"}


def schema_for_subject(subject: str) -> TableSchema | None:
    """The schema of a subject, from its first three tokens (`market.stocks.trades.SPY`).

    `levels.signals` has only two tokens of its own, so two-token prefixes are tried too.
    """
    tokens = subject.split(".")
    return BY_SUBJECT.get(".".join(tokens[:3])) or BY_SUBJECT.get(".".join(tokens[:2]))
