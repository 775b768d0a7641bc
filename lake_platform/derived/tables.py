"""The derived tables: Silver for every market table, and the Gold tables.

A Gold table is declared once, here, as a `GoldTable`: everything else is derived from its
declaration (its Dagster asset, key, upstream asset and checks in `defs/gold/assets.py`, the
`lake-platform tables` listing, the demo's summary, the re-verification). Adding one is a
declaration appended to `GOLD_TABLES`, its transform, and its tests. This module is plain
Python (no Dagster), so commands that only list tables do not load Dagster.
"""

import datetime as dt

import polars as pl

from lake_platform.checks import (
    OHLC_CONSISTENT,
    RECONCILES_WITH_BRONZE,
    CheckOutcome,
    distinct_count,
    is_first_distinct,
)
from lake_platform.derived.asof_tables import GOLD_OPTIONS_ENRICHED, GOLD_TRADES_NBBO
from lake_platform.derived.declaration import DerivedTable, GoldTable, Reconciliation
from lake_platform.schemas import BY_NAME, SCHEMAS, TableSchema
from lake_platform.schemas.registry import partition_column_last
from lake_platform.transforms.gold import (
    BARS_INPUT,
    BARS_ORDER,
    GOLD_BARS_SCHEMA,
    GOLD_SIGNALS_SCHEMA,
    SIGNALS_INPUT,
    SIGNALS_ORDER,
    bars_1m,
    flatten_signals,
)
from lake_platform.transforms.silver import DEDUP_ORDER, SILVER_ORDER, deduplicate, is_provenance

SILVER_RECONCILES = Reconciliation(
    "row count (distinct event_id in Bronze)",
    pl.len(),
    pl.col("event_id").map_batches(
        lambda ids: pl.Series([distinct_count(ids)]), return_dtype=pl.Int64, returns_scalar=True
    ),
)


def silver_table(schema: TableSchema) -> DerivedTable:
    """Bronze → Silver for one registry entry (of the provenance, only what the dedup orders by
    is read)."""
    return DerivedTable(
        source=f"bronze/{schema.table}",
        target=f"silver/{schema.table}",
        partition_column=schema.partition_column,
        source_columns=tuple(
            name
            for name in schema.bronze_file_schema.names()
            if not is_provenance(name) or name in DEDUP_ORDER
        ),
        transform=deduplicate,
        schema=partition_column_last(schema.stored_schema, schema.partition_column),
        order=SILVER_ORDER,
        unique_keys=("event_id",),
        reconciliations={RECONCILES_WITH_BRONZE: SILVER_RECONCILES},
    )


SILVER_TABLES = {schema.table: silver_table(schema) for schema in SCHEMAS if schema.silver}


SIGNALS_RECONCILE = Reconciliation(
    "row count (levels of the distinct signals in Bronze)",
    pl.len(),
    pl.col("levels")
    .list.len()
    .filter(pl.col("event_id").map_batches(is_first_distinct, return_dtype=pl.Boolean()))
    .sum(),
)


SIGNALS = BY_NAME["levels.signals"]
GOLD_SIGNALS = GoldTable(
    description=(
        "Level signals, one row per level (`level_index`), deduplicated by `event_id`, "
        "nested objects flattened as `{object}_{field}`."
    ),
    source="bronze/levels/signals",
    target="gold/levels/signals",
    partition_column=SIGNALS.partition_column,
    source_columns=SIGNALS_INPUT,
    transform=flatten_signals,
    schema=partition_column_last(GOLD_SIGNALS_SCHEMA, SIGNALS.partition_column),
    order=SIGNALS_ORDER,
    unique_keys=("event_id", "level_index"),
    reconciliations={RECONCILES_WITH_BRONZE: SIGNALS_RECONCILE},
)


def _ohlc_consistent(frame: pl.DataFrame, path: str, _: dt.datetime) -> CheckOutcome:
    bad = frame.select(
        ~(
            (pl.col("low") <= pl.min_horizontal("open", "close"))
            & (pl.max_horizontal("open", "close") <= pl.col("high"))
        ).alias("bad")
    ).to_series()
    if not bad.any():
        return CheckOutcome.ok(f"{path}: low <= open, close <= high in {frame.height} bars")
    row = int(bad.arg_true()[0])
    bar = frame.row(row, named=True)
    return CheckOutcome(
        False,
        f"{path}: row {row} has open {bar['open']} high {bar['high']} low {bar['low']} "
        f"close {bar['close']}",
    )


TRADES = BY_NAME["stocks.trades"]
GOLD_BARS = GoldTable(
    description="One-minute OHLCV bars per symbol from Silver stock trades.",
    column_docs={
        "ts_event_ns": "Start of the bar's minute, ns since the Unix epoch (UTC).",
        "event_id": "Identity of the bar: hash of (ts_event_ns, symbol).",
        "open": "Price of the minute's first trade.",
        "high": "Highest trade price of the minute.",
        "low": "Lowest trade price of the minute.",
        "close": "Price of the minute's last trade.",
        "volume": "Sum of the minute's trade sizes.",
        "vwap": "Volume-weighted average price of the minute.",
        "trade_count": "Number of trades in the minute.",
    },
    source="silver/stocks/trades",
    target="gold/stocks/bars_1m",
    partition_column=TRADES.partition_column,
    source_columns=BARS_INPUT,
    transform=bars_1m,
    schema=partition_column_last(GOLD_BARS_SCHEMA, TRADES.partition_column),
    order=BARS_ORDER,
    unique_keys=("symbol", "ts_event_ns"),
    extra_file_checks={OHLC_CONSISTENT: _ohlc_consistent},
    reconciliations={
        "volume_matches_silver": Reconciliation(
            "sum of volume (Silver sizes)",
            pl.col("volume").sum(),
            pl.col("size").cast(pl.Int64).sum(),
        ),
        "trade_count_matches_silver": Reconciliation(
            "sum of trade_count (Silver rows)", pl.col("trade_count").sum(), pl.len()
        ),
    },
)

GOLD_TABLES: tuple[GoldTable, ...] = (
    GOLD_SIGNALS,
    GOLD_BARS,
    GOLD_TRADES_NBBO,
    GOLD_OPTIONS_ENRICHED,
)
"""Every Gold table, in the order the UI and the CLI list them."""

DERIVED_TABLES: tuple[DerivedTable, ...] = (*SILVER_TABLES.values(), *GOLD_TABLES)
"""Every derived table, Silver then Gold."""
