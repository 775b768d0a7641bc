"""Asset keys of every tier, derived from the registry's and the derived tables' paths."""

import dagster as dg

from lake_platform.schemas import TableSchema


def bronze_key(schema: TableSchema) -> dg.AssetKey:
    """`bronze/<table>`, e.g. `bronze/stocks/trades`."""
    return dg.AssetKey(["bronze", *schema.table.split("/")])


def silver_key(schema: TableSchema) -> dg.AssetKey:
    """`silver/<table>`, e.g. `silver/stocks/trades`."""
    return dg.AssetKey(["silver", *schema.table.split("/")])


def derived_key(path: str) -> dg.AssetKey:
    """The asset of a lake folder path, e.g. `gold/stocks/bars_1m` (a derived table's `target`,
    or one of its inputs)."""
    return dg.AssetKey(path.split("/"))
