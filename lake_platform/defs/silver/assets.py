"""Silver assets, declared with their lineage; their computation lands with the Silver issue."""

import dagster as dg

from lake_platform.defs.keys import bronze_key, silver_key
from lake_platform.defs.partitions import HOURLY
from lake_platform.schemas import SCHEMAS

SILVER_ASSETS = [
    dg.AssetSpec(
        silver_key(schema),
        deps=[bronze_key(schema)],
        partitions_def=HOURLY,
        group_name="silver",
        kinds={"parquet", "polars"},
        description=f"`{schema.name}` deduplicated by `event_id`, sorted by `ts_event_ns`.",
    )
    for schema in SCHEMAS
    if schema.silver
]
