"""One factory for every derived asset (Silver and Gold): rebuild the run's hours, commit each
to its Iceberg table (one snapshot per hour), then check the committed files.

A run may cover a range of hours (single-run backfills): they are rebuilt one after the other,
each one partition value at a time, so memory never holds more than one value's hour.
Checks are partitioned like their asset and every hour records its own result, so a failed
hour blocks its own downstream partitions and no other. An hour whose storage fails (a
truncated or corrupt Bronze file, an outage while rebuilding or checking it) fails the step
with the hour and the file's name, after the run's other hours are rebuilt, recorded as
materialized and checked: automation and downstream assets see them, and only the failed
hours stay to be retried. So does an hour whose commit kept losing to concurrent runs of the
same hour (`HourConflict`).
"""

import warnings
from collections.abc import Iterator

import dagster as dg

from lake_platform.checks import CheckOutcome, check_descriptions
from lake_platform.defs.asset_metadata import OWNERS, code_reference, table_metadata
from lake_platform.defs.automation import derived_automation
from lake_platform.defs.keys import derived_key
from lake_platform.defs.partitions import HOURLY, hour_of_partition
from lake_platform.defs.reporting import (
    hour_metadata,
    partitions_failure,
    rebuild_partitions,
    record_partitions,
    run_metadata,
)
from lake_platform.defs.resources import LakeResource
from lake_platform.derived.checking import check_hour
from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.results import HourResult
from lake_platform.tables.catalog import CATALOG_NAME
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.lake_tables import LakeTables


def previous_hours_mapping(start_offset: int) -> dg.TimeWindowPartitionMapping:
    """An hour's upstream hours from `start_offset` hours before it to itself; before the
    first partition there are none (no error)."""
    with warnings.catch_warnings():
        # `allow_nonexistent_upstream_partitions` is beta; the lake's first hour needs it.
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.TimeWindowPartitionMapping(
            start_offset=start_offset, end_offset=0, allow_nonexistent_upstream_partitions=True
        )


def input_deps(table: DerivedTable) -> list[dg.AssetDep]:
    """The assets an hour of `table` reads: each input's same hour, and the hour before where
    a lookup reads it (a time-window mapping with an offset, so the lineage shows it and a
    late change to the previous hour makes this hour stale). The lake's first hour has no
    hour before: that input is then simply absent."""
    deps = []
    for path, offsets in table.input_hours.items():
        start = min(offsets)
        mapping = None if start == 0 else previous_hours_mapping(start)
        deps.append(dg.AssetDep(derived_key(path), partition_mapping=mapping))
    return deps


def build_derived_asset(
    table: DerivedTable, *, group_name: str, description: str
) -> dg.AssetsDefinition:
    """The hourly asset that rebuilds `table` and runs its blocking checks."""
    key = derived_key(table.target)
    descriptions = check_descriptions(table)
    code = (
        code_reference(table.transform, "transform"),
        code_reference(rebuild_hour, "hourly rebuild"),
        code_reference(check_hour, "checks"),
    )

    @dg.asset(
        key=key,
        deps=input_deps(table),
        partitions_def=HOURLY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=derived_automation(derived_key(table.source)),
        check_specs=[
            dg.AssetCheckSpec(
                name,
                asset=key,
                blocking=True,
                description=descriptions[name],
                partitions_def=HOURLY,
            )
            for name in table.check_names
        ],
        group_name=group_name,
        kinds={"polars", "parquet", "iceberg"},
        owners=OWNERS,
        description=description,
        metadata={
            **table_metadata(
                table.target,
                table.schema,
                table.partition_column,
                code,
                column_docs=table.column_docs,
            ),
            "iceberg_table": f"{CATALOG_NAME}.{table_identifier(table.target)}",
        },
    )
    def derived(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[
        dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output
    ]:
        tables = lake.tables()
        results, outcomes, failed = rebuild_partitions(
            context,
            table.target,
            lambda partition_key: _rebuild_and_check(
                tables, table, partition_key, context.run.run_id
            ),
        )
        shared = run_metadata(results)
        yield from record_partitions(
            context, key, results, outcomes, shared, hour_metadata, some_failed=bool(failed)
        )
        if failed:
            raise partitions_failure(table.target, failed, len(context.partition_keys), "hours")

    return derived


def _rebuild_and_check(
    tables: LakeTables, table: DerivedTable, partition_key: str, run_id: str
) -> tuple[HourResult, dict[str, CheckOutcome]]:
    """One hour rebuilt, committed and checked; a `StorageError` of either, or a commit that
    kept losing to concurrent runs (`HourConflict`), fails that hour only."""
    result = rebuild_hour(tables, table, hour_of_partition(partition_key), run_id)
    return result, check_hour(tables, table, result)
