"""The derived tables: Silver for every market table, and the two Gold tables."""

import datetime as dt

import polars as pl

from lake_platform.checks import CheckOutcome
from lake_platform.derived.hourly import DerivedTable, hour_files, sum_columns
from lake_platform.schemas import SCHEMAS, TableSchema
from lake_platform.storage import LakeStore
from lake_platform.transforms.gold import (
    BARS_ORDER,
    GOLD_BARS_SCHEMA,
    GOLD_SIGNALS_SCHEMA,
    SIGNALS_ORDER,
    bars_1m,
    flatten_signals,
)
from lake_platform.transforms.silver import SILVER_ORDER, deduplicate


def _totals(store: LakeStore, base: str, hour: dt.datetime, *exprs: pl.Expr) -> list:
    return sum_columns(store, list(hour_files(store, base, hour).values()), list(exprs))


def _equal(what: str, derived: object, source: object, where: str) -> CheckOutcome:
    if derived == source:
        return CheckOutcome.ok(f"{where}: {what} {derived}")
    return CheckOutcome(False, f"{where}: {what} is {derived} but its input gives {source}")


def _silver_reconciles(
    store: LakeStore, table: DerivedTable, hour: dt.datetime, targets: list[str]
) -> CheckOutcome:
    (rows,) = sum_columns(store, [[path] for path in targets], [pl.len()])
    (distinct,) = _totals(store, table.source, hour, pl.col("event_id").n_unique())
    where = f"{table.target} {hour:%Y-%m-%d %H}:00"
    return _equal("row count", rows, distinct, where + " (distinct event_id in Bronze)")


def silver_table(schema: TableSchema) -> DerivedTable:
    """Bronze → Silver for one registry entry."""
    return DerivedTable(
        source=f"bronze/{schema.table}",
        target=f"silver/{schema.table}",
        transform=deduplicate,
        schema=schema.stored_schema,
        order=SILVER_ORDER,
        unique_keys=("event_id",),
        reconciliations={"reconciles_with_bronze": _silver_reconciles},
    )


SILVER_TABLES = {schema.table: silver_table(schema) for schema in SCHEMAS if schema.silver}


def _signals_reconcile(
    store: LakeStore, table: DerivedTable, hour: dt.datetime, targets: list[str]
) -> CheckOutcome:
    (rows,) = sum_columns(store, [[path] for path in targets], [pl.len()])
    levels = 0
    for files in hour_files(store, table.source, hour).values():
        signals = store.read_parquet(files, columns=["event_id", "levels"])
        levels += signals.unique("event_id").select(pl.col("levels").list.len().sum()).item()
    where = f"{table.target} {hour:%Y-%m-%d %H}:00"
    return _equal("row count", rows, levels, where + " (levels of distinct signals)")


GOLD_SIGNALS = DerivedTable(
    source="bronze/levels/signals",
    target="gold/levels/signals",
    transform=flatten_signals,
    schema=GOLD_SIGNALS_SCHEMA,
    order=SIGNALS_ORDER,
    unique_keys=("event_id", "level_index"),
    reconciliations={"reconciles_with_bronze": _signals_reconcile},
)


def _ohlc_consistent(frame: pl.DataFrame, _: object, path: str, __: dt.datetime) -> CheckOutcome:
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


def _bars_match_silver(column: str, silver_expr: pl.Expr):
    def reconcile(
        store: LakeStore, table: DerivedTable, hour: dt.datetime, targets: list[str]
    ) -> CheckOutcome:
        (derived,) = sum_columns(store, [[path] for path in targets], [pl.col(column).sum()])
        (source,) = _totals(store, table.source, hour, silver_expr)
        return _equal(f"sum of {column}", derived, source, f"{table.target} {hour:%Y-%m-%d %H}:00")

    return reconcile


GOLD_BARS = DerivedTable(
    source="silver/stocks/trades",
    target="gold/stocks/bars_1m",
    transform=bars_1m,
    schema=GOLD_BARS_SCHEMA,
    order=BARS_ORDER,
    unique_keys=("symbol", "ts_event_ns"),
    extra_file_checks={"ohlc_consistent": _ohlc_consistent},
    reconciliations={
        "volume_matches_silver": _bars_match_silver("volume", pl.col("size").cast(pl.Int64).sum()),
        "trade_count_matches_silver": _bars_match_silver("trade_count", pl.len()),
    },
)
