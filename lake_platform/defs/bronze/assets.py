"""Bronze assets: external, materialized only by the ingest (sensor or standalone service).

They have no materialize button: a Bronze partition exists because events were ingested,
and the ingest reports each committed batch as a runless materialization.
"""

import dagster as dg

from lake_platform.defs.keys import bronze_key
from lake_platform.defs.partitions import HOURLY
from lake_platform.schemas import SCHEMAS

BRONZE_ASSETS = [
    dg.AssetSpec(
        bronze_key(schema),
        partitions_def=HOURLY,
        group_name="bronze",
        kinds={"parquet"},
        description=(
            f"Raw `{schema.name}` events from NATS subject `{schema.subject}.>` "
            f"(stream {schema.stream}), append-only Parquet partitioned by "
            f"`{schema.partition_column}` and UTC hour."
        ),
        metadata={"table": schema.table, "partition_column": schema.partition_column},
    )
    for schema in SCHEMAS
]
