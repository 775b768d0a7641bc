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
