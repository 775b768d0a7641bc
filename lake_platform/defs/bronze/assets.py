"""Bronze assets: external, materialized only by the ingest (sensor or standalone service).

They have no materialize button: a Bronze partition exists because events were ingested,
and the ingest reports each committed batch as a runless materialization.

Each has Dagster's built-in freshness check, evaluated by `bronze_freshness_sensor`: it fails
when the asset got no materialization (of any hour) within `FRESHNESS_LOWER_BOUND`, so the UI
shows an ingest that stopped. The sensor re-runs a failed check as soon as the asset is
materialized again, and a passed one once it can be overdue.
"""

import datetime as dt
import warnings

import dagster as dg

from lake_platform.defs.asset_metadata import OWNERS, code_reference, table_metadata
from lake_platform.defs.keys import bronze_key
from lake_platform.defs.partitions import HOURLY
from lake_platform.ingest.commit import commit
from lake_platform.schemas import SCHEMAS, TableSchema, decode_batch
from lake_platform.schemas.registry import partition_column_last

BRONZE_CODE = (
    code_reference(decode_batch, "decoder"),
    code_reference(commit, "commit"),
)
"""The code that writes every Bronze table: the registry-generated decoder and the commit."""


def bronze_asset(schema: TableSchema) -> dg.AssetSpec:
    """The external asset of one registry entry's Bronze table."""
    table = f"bronze/{schema.table}"
    return dg.AssetSpec(
        bronze_key(schema),
        partitions_def=HOURLY,
        group_name="bronze",
        kinds={"nats", "parquet"},
        owners=OWNERS,
        description=(
            f"{schema.description} Raw `{schema.name}` events from NATS subject "
            f"`{schema.subject}.>` (stream {schema.stream}), append-only Parquet partitioned "
            f"by `{schema.partition_column}` and UTC hour, with the JetStream provenance."
        ),
        metadata={
            "table": schema.table,
            **table_metadata(
                table,
                partition_column_last(schema.bronze_schema, schema.partition_column),
                schema.partition_column,
                BRONZE_CODE,
            ),
        },
    )


BRONZE_ASSETS = [bronze_asset(schema) for schema in SCHEMAS]

FRESHNESS_LOWER_BOUND = dt.timedelta(hours=2)
"""An hourly table not updated for two hours means the ingest (or its publishers) stopped."""
FRESHNESS_SENSOR_INTERVAL_S = 60

with warnings.catch_warnings():
    # Dagster marks these superseded by `FreshnessPolicy`, which needs the instance's opt-in
    # freshness daemon and shows no check results: the checks work on every instance.
    warnings.simplefilter("ignore", dg.SupersessionWarning)
    BRONZE_FRESHNESS_CHECKS = dg.build_last_update_freshness_checks(
        assets=[spec.key for spec in BRONZE_ASSETS], lower_bound_delta=FRESHNESS_LOWER_BOUND
    )
    bronze_freshness_sensor = dg.build_sensor_for_freshness_checks(
        freshness_checks=BRONZE_FRESHNESS_CHECKS,
        name="bronze_freshness_sensor",
        minimum_interval_seconds=FRESHNESS_SENSOR_INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
