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
from lake_platform.defs.automation import follows_upstream_within
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


def follows_upstream_hours(lookback_hours: int) -> dg.AutomationCondition:
    """Run a day when an hour of it changed upstream after its latest plan, or again when
    that plan's run failed, as the hourly assets follow theirs (`follows_upstream`: the
    asset graph maps a day onto its input's 24 hours).

    The look-back covers every day one of whose hours is within `lookback_hours` (a day is
    in Dagster's window only whole). Hours never materialized (a night without trades) do
    not hold a day back; one materialized without passing its blocking checks does.
    """
    return follows_upstream_within(
        dt.timedelta(hours=lookback_hours) + dt.timedelta(days=1), "follows upstream hours"
    )


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
