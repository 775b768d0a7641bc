"""Asset keys of every tier, derived from the registry's table paths."""

import dagster as dg

from lake_platform.schemas import TableSchema


def bronze_key(schema: TableSchema) -> dg.AssetKey:
    """`bronze/<table>`, e.g. `bronze/stocks/trades`."""
    return dg.AssetKey(["bronze", *schema.table.split("/")])


def silver_key(schema: TableSchema) -> dg.AssetKey:
    """`silver/<table>`, e.g. `silver/stocks/trades`."""
    return dg.AssetKey(["silver", *schema.table.split("/")])


GOLD_SIGNALS = dg.AssetKey(["gold", "levels", "signals"])
GOLD_BARS_1M = dg.AssetKey(["gold", "stocks", "bars_1m"])
