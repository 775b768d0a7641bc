"""`serving/duckdb`: the DuckDB warehouse file (LAKE_DUCKDB_PATH), every lake table a view
pinned to its current snapshot, plus macros; rebuilt beside the file through
`dagster_duckdb.DuckDBResource` and renamed over it (`query/warehouse.py`), so readers never
wait and never see half a file. `defs/serving/refresh.py` refreshes it after commits."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from lake_platform.defs.asset_metadata import OWNERS, code_reference
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.gold.sql_assets import SQL_GOLD_ASSETS
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.query.warehouse import MACROS, WarehouseVersion, build_warehouse, write_warehouse

WAREHOUSE_KEY = dg.AssetKey(["serving", "duckdb"])
SERVED_KEYS = tuple(asset.key for asset in (*SILVER_ASSETS, *GOLD_ASSETS, *SQL_GOLD_ASSETS))
"""The assets whose commits the warehouse serves (its views pin their snapshots)."""

DESCRIPTION = (
    "The DuckDB warehouse file (LAKE_DUCKDB_PATH, by default next to a local lake: "
    "data/lake.duckdb) for any DuckDB client: every table as a view named {tier}.{table} "
    "(silver.stocks_trades, gold.stocks_bars_1m, bronze.stocks_trades), each Silver/Gold view "
    "pinned to the snapshot current at the refresh, `warehouse_tables` saying which, and the "
    "macros "
    + ", ".join(f"{macro.name} ({macro.description})" for macro in MACROS)
    + " Refreshed at most once a minute after Silver/Gold commits; a refresh writes a new "
    "file and renames it over the old one, so open it read-only and reconnect for the latest."
)


@dg.asset(
    key=WAREHOUSE_KEY,
    deps=list(SERVED_KEYS),
    group_name="serving",
    kinds={"duckdb"},
    owners=OWNERS,
    description=DESCRIPTION,
    metadata={
        "dagster/code_references": dg.CodeReferencesMetadataValue(
            code_references=[
                code_reference(build_warehouse, "warehouse build"),
                code_reference(write_warehouse, "views and macros"),
            ]
        ),
    },
)
def serving_duckdb(
    context: dg.AssetExecutionContext, lake: LakeResource, warehouse_duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """Rebuild the warehouse file through the resource's connection and publish it."""
    version = build_warehouse(
        lake.tables(), warehouse_duckdb.database, warehouse_duckdb.get_connection
    )
    context.log.info(
        f"{version.path}: {len(version.views)} views, macros {', '.join(version.macros)}, "
        f"{version.size_bytes} bytes"
    )
    return dg.MaterializeResult(metadata=version_metadata(version))


def version_metadata(version: WarehouseVersion) -> dict[str, dg.MetadataValue]:
    """What a refresh shows in the UI: where the file is, its tables and their snapshots,
    its macros and its size."""
    return {
        "path": dg.MetadataValue.path(version.path),
        "tables": dg.MetadataValue.int(len(version.views)),
        "snapshot_ids": dg.MetadataValue.json(
            {view.name: view.snapshot_id for view in version.views if view.snapshot_id is not None}
        ),
        "macros": dg.MetadataValue.json(list(version.macros)),
        "bytes": dg.MetadataValue.int(version.size_bytes),
    }
