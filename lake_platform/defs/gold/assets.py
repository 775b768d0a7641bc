"""Gold assets, declared with their lineage; their computation lands with the Gold issue."""

import dagster as dg

from lake_platform.defs.keys import GOLD_BARS_1M, GOLD_SIGNALS, bronze_key, silver_key
from lake_platform.defs.partitions import HOURLY
from lake_platform.schemas import BY_NAME

GOLD_ASSETS = [
    dg.AssetSpec(
        GOLD_SIGNALS,
        deps=[bronze_key(BY_NAME["levels.signals"])],
        partitions_def=HOURLY,
        group_name="gold",
        kinds={"parquet", "polars"},
        description="Level signals, one row per level, nested objects flattened.",
    ),
    dg.AssetSpec(
        GOLD_BARS_1M,
        deps=[silver_key(BY_NAME["stocks.trades"])],
        partitions_def=HOURLY,
        group_name="gold",
        kinds={"parquet", "polars"},
        description="One-minute OHLCV bars per symbol from Silver stock trades.",
    ),
]
