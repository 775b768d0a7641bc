"""Gold tables written in SQL: one daily asset per SQL Gold table (`derived/sql_tables.py`),
its query run by DuckDB through `dagster_duckdb.DuckDBResource` over the day's hours of its
input, its blocking checks partitioned like it, and the automation that rebuilds a day when
an hour of it changes upstream.

Each day depends on its input's 24 hourly partitions (Dagster's default time-window mapping
of days over hours). A run may cover a range of days (single-run backfills): they are rebuilt
one after the other; a day whose storage fails, or whose commit kept losing to concurrent
runs, fails the step after the other days are recorded, as for the hourly assets
(`defs/derived.py`).
"""

import datetime as dt
from collections.abc import Iterator, Mapping

import dagster as dg
from dagster_duckdb import DuckDBResource

from lake_platform.defs.asset_metadata import OWNERS, code_reference, table_metadata
from lake_platform.defs.automation import NO_RUN, FailedHourRetry, LatestPlans
from lake_platform.defs.keys import derived_key
from lake_platform.defs.partitions import DAILY, day_of_partition
from lake_platform.defs.reporting import (
    Rebuilt,
    inputs_metadata,
    partitions_failure,
    rebuild_partitions,
    record_partitions,
    run_metadata,
    snapshot_metadata,
)
from lake_platform.defs.resources import LakeResource
from lake_platform.derived.results import HourResult
from lake_platform.derived.sql_rebuild import check_day, rebuild_day
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES, SqlGoldTable
from lake_platform.settings import LakeSettings
from lake_platform.tables.catalog import CATALOG_NAME
from lake_platform.tables.identifiers import table_identifier

SQL_DUCKDB_RESOURCE = "sql_gold_duckdb"
"""The resource key of the DuckDB the SQL Gold tables' queries run in."""


def sql_gold_duckdb() -> DuckDBResource:
    """An in-memory DuckDB for each run: the queries read the frames handed to them, and
    nothing is kept between runs (a database file would be locked across runs)."""
    return DuckDBResource(database=":memory:")


class UpstreamHourNewerThanPlan(dg.AutomationCondition[dg.AssetKey]):
    """Days one of whose upstream hours was materialized after this asset's latest planned
    run of the day (or which were never planned): `UpstreamNewerThanPlan` of
    `defs/automation.py`, with a day's upstream partitions its hours.

    Stateless like it: an hour re-materialized after the day's run was planned (late trades,
    a rebuilt hour) makes the day stale, whichever of its hours it is."""

    @property
    def name(self) -> str:
        return "upstream_hour_newer_than_latest_plan"

    def evaluate(  # ty: ignore[invalid-method-override]
        self, context: dg.AutomationContext[dg.AssetKey]
    ) -> dg.AutomationResult[dg.AssetKey]:
        candidates = context.candidate_subset
        days = set(candidates.expensively_compute_partition_keys())
        if not days:
            return dg.AutomationResult(context, true_subset=candidates)
        instance = context.asset_graph_view.instance
        plans = LatestPlans.load(instance, context.key, days)
        own = _time_partitions(context, context.key)
        newer: list[tuple[str, int]] = []  # (day, upstream event after its baseline)
        for upstream in context.asset_graph.get(context.key).parent_keys:
            hourly = _time_partitions(context, upstream)
            hours = {
                day: hourly.get_partition_keys_in_time_window(
                    own.time_window_for_partition_key(day)
                )
                for day in days
            }
            updated = instance.event_log_storage.get_latest_storage_id_by_partition(
                upstream,
                dg.DagsterEventType.ASSET_MATERIALIZATION,
                {hour for of_day in hours.values() for hour in of_day},
            )
            newer += [
                (day, updated[hour])
                for day, of_day in hours.items()
                for hour in of_day
                if updated.get(hour, 0) > plans.baseline(day)
            ]
        runs = _materialization_runs(instance, [storage_id for _, storage_id in newer])
        stale = {
            day
            for day, storage_id in newer
            if runs.get(storage_id, NO_RUN) != plans.run_that_read(day)
        }
        return dg.AutomationResult(
            context, true_subset=candidates.compute_intersection_with_partition_keys(stale)
        )


def _time_partitions(
    context: dg.AutomationContext[dg.AssetKey], key: dg.AssetKey
) -> dg.TimeWindowPartitionsDefinition:
    partitions = context.asset_graph.get(key).partitions_def
    if not isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        raise TypeError(f"{key.to_user_string()} is not partitioned by time: {partitions}")
    return partitions


def _materialization_runs(instance: dg.DagsterInstance, storage_ids: list[int]) -> dict[int, str]:
    """Storage id -> run id of those materializations (runless: empty), one query."""
    if not storage_ids:
        return {}
    records = instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.ASSET_MATERIALIZATION, storage_ids=storage_ids)
    )
    return {record.storage_id: record.event_log_entry.run_id for record in records}


def follows_upstream_hours(lookback_hours: int) -> dg.AutomationCondition:
    """Run a day when an hour of it changed upstream after its latest plan, or again when
    that plan's run failed, as the hourly assets follow theirs (`follows_upstream`).

    The look-back covers every day one of whose hours is within `lookback_hours` (a day is
    in Dagster's window only whole). A day waits while one of its upstream hours' blocking
    checks failed. Dagster maps an hourly dependency's partitions onto a day by *any* hour,
    so "every dependency passed its checks" would let one passing hour outweigh a failing
    one; "no hour failed" is what holds the day back, and hours never materialized (a night
    without trades) do not.
    """
    window = dg.AutomationCondition.in_latest_time_window(
        dt.timedelta(hours=lookback_hours) + dt.timedelta(days=1)
    )
    hour_failed_a_check = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.any_checks_match(
            dg.AutomationCondition.check_failed(), blocking_only=True
        )
    ).with_label("an upstream hour failed a blocking check")
    return (
        window
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & (UpstreamHourNewerThanPlan() | FailedHourRetry())
        & ~hour_failed_a_check
    ).with_label("follows upstream hours")


SQL_GOLD_AUTOMATION = follows_upstream_hours(LakeSettings.from_env().automation_lookback_hours)


def build_sql_gold_asset(table: SqlGoldTable) -> dg.AssetsDefinition:
    """The daily asset that rebuilds `table` with its query and runs its blocking checks."""
    key = derived_key(table.target)
    descriptions = table.check_descriptions()
    code = (
        dg.LocalFileCodeReference(file_path=str(table.sql_path), line_number=1, label="query"),
        code_reference(rebuild_day, "daily rebuild"),
        code_reference(check_day, "checks"),
    )

    @dg.asset(
        key=key,
        deps=[derived_key(path) for path in table.inputs],
        partitions_def=DAILY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=SQL_GOLD_AUTOMATION,
        check_specs=[
            dg.AssetCheckSpec(
                name, asset=key, blocking=True, description=descriptions[name], partitions_def=DAILY
            )
            for name in table.check_names
        ],
        group_name="gold",
        kinds={"duckdb", "parquet", "iceberg"},
        owners=OWNERS,
        description=table.description,
        metadata={
            **table_metadata(
                table.target,
                table.schema,
                table.partition_column,
                code,
                column_docs=table.column_docs,
            ),
            "iceberg_table": f"{CATALOG_NAME}.{table_identifier(table.target)}",
            "query": dg.MetadataValue.md(f"```sql\n{table.sql.strip()}\n```"),
        },
    )
    def sql_gold(
        context: dg.AssetExecutionContext, lake: LakeResource, sql_gold_duckdb: DuckDBResource
    ) -> Iterator[
        dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output
    ]:
        tables = lake.tables()

        def rebuild_and_check(partition_key: str) -> Rebuilt:
            day = day_of_partition(partition_key)
            result = rebuild_day(tables, table, day, connection, context.run.run_id)
            return result, check_day(tables, table, result)

        with sql_gold_duckdb.get_connection() as connection:
            results, outcomes, failed = rebuild_partitions(context, table.target, rebuild_and_check)
        yield from record_partitions(
            context,
            key,
            results,
            outcomes,
            _run_metadata(results),
            _day_metadata,
            some_failed=bool(failed),
        )
        if failed:
            raise partitions_failure(table.target, failed, len(context.partition_keys), "days")

    return sql_gold


def _day_metadata(partition: str, result: HourResult) -> dict[str, dg.MetadataValue]:
    """What one day's rebuild read and wrote, attached to that day's materialization only
    (as `reporting.hour_metadata` for an hour)."""
    return {
        "dagster/row_count": dg.MetadataValue.int(result.rows_written),
        "dagster/partition_row_count": dg.MetadataValue.int(result.rows_written),
        "dagster/size_bytes": dg.MetadataValue.int(result.bytes),
        "day_read_rows": dg.MetadataValue.int(result.rows_read),
        "day_written_rows": dg.MetadataValue.int(result.rows_written),
        "day_output_files": dg.MetadataValue.int(len(result.files)),
        "inputs": dg.MetadataValue.json({partition: inputs_metadata(result)}),
        **snapshot_metadata(result),
    }


def _run_metadata(results: Mapping[str, HourResult]) -> dict[str, dg.MetadataValue]:
    """The run's totals (`reporting.run_metadata`), counted in days; rows read and written
    differ by aggregation, not by duplicates."""
    metadata = run_metadata(results)
    metadata["days"] = metadata.pop("hours")
    del metadata["duplicates_removed"]
    return metadata


SQL_GOLD_ASSETS = [build_sql_gold_asset(table) for table in SQL_GOLD_TABLES]
