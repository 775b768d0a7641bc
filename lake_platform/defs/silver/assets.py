"""Silver assets: `silver/<table>` for the six market tables, rebuilt from Bronze per hour.

A run may cover a range of hours (single-run backfills): they are rebuilt one after the other,
each one partition value at a time, so memory never holds more than one value's hour.
"""

from collections.abc import Iterator

import dagster as dg

from lake_platform.defs.automation import DERIVED_AUTOMATION
from lake_platform.defs.keys import bronze_key, silver_key
from lake_platform.defs.partitions import HOURLY, hour_of_partition
from lake_platform.defs.reporting import check_results, materialization_metadata
from lake_platform.defs.resources import LakeResource
from lake_platform.derived.silver import SILVER_CHECKS, check_silver_hour, rebuild_silver_hour
from lake_platform.schemas import SCHEMAS, TableSchema

CHECK_DESCRIPTIONS = {
    "sorted_by_ts_event_ns": "Every file is sorted by ts_event_ns, then event_id.",
    "event_id_unique": "No event_id appears twice in a file.",
    "reconciles_with_bronze": "Silver rows = distinct event_id in the Bronze hour.",
    "within_partition_hour": "Every ts_event_ns lies in the partition's UTC hour.",
    "matches_declared_schema": "Columns and types are exactly the registry's.",
    "zstd_compressed": "Every column chunk is ZSTD-compressed.",
}


def build_silver_asset(schema: TableSchema) -> dg.AssetsDefinition:
    """The Silver asset of one registry entry."""
    key = silver_key(schema)

    @dg.asset(
        key=key,
        deps=[bronze_key(schema)],
        partitions_def=HOURLY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=DERIVED_AUTOMATION,
        check_specs=[
            dg.AssetCheckSpec(name, asset=key, blocking=True, description=CHECK_DESCRIPTIONS[name])
            for name in SILVER_CHECKS
        ],
        group_name="silver",
        kinds={"polars", "parquet"},
        description=(
            f"`{schema.name}` from Bronze: one row per `event_id` (the earliest received), "
            f"sorted by `ts_event_ns`, `event_id`; files per `{schema.partition_column}` and hour."
        ),
    )
    def silver_table(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        store = lake.store()
        results = []
        outcomes = []
        for partition_key in context.partition_keys:
            hour = hour_of_partition(partition_key)
            result = rebuild_silver_hour(store, schema, hour)
            context.log.info(
                f"{schema.table} {partition_key}: {result.rows_read} read, "
                f"{result.rows_written} written, {len(result.files)} files"
            )
            results.append(result)
            outcomes.append(check_silver_hour(store, schema, hour))
        yield dg.MaterializeResult(metadata=materialization_metadata(results))
        yield from check_results(outcomes, SILVER_CHECKS)

    return silver_table


SILVER_ASSETS = [build_silver_asset(schema) for schema in SCHEMAS if schema.silver]
