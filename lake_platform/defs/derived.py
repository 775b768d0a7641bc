"""One factory for every derived asset (Silver and Gold): rebuild the run's hours, then check.

A run may cover a range of hours (single-run backfills): they are rebuilt one after the other,
each one partition value at a time, so memory never holds more than one value's hour.
Checks are partitioned like their asset and every hour records its own result, so a failed
hour blocks its own downstream partitions and no other. An hour whose input cannot be read (a
truncated or corrupt Bronze file) fails the run with the file's name, after the run's other
hours are rebuilt.
"""

from collections.abc import Iterator, Sequence

import dagster as dg

from lake_platform.defs.automation import DERIVED_AUTOMATION
from lake_platform.defs.partitions import HOURLY, hour_of_partition
from lake_platform.defs.reporting import check_evaluations, hour_metadata, run_metadata
from lake_platform.defs.resources import LakeResource
from lake_platform.derived.hourly import DerivedTable, check_hour, rebuild_hour
from lake_platform.storage import StorageError


def build_derived_asset(
    key: dg.AssetKey,
    deps: Sequence[dg.AssetKey],
    table: DerivedTable,
    *,
    group_name: str,
    description: str,
    check_descriptions: dict[str, str],
) -> dg.AssetsDefinition:
    """The hourly asset that rebuilds `table` and runs its blocking checks."""

    @dg.asset(
        key=key,
        deps=list(deps),
        partitions_def=HOURLY,
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=DERIVED_AUTOMATION,
        check_specs=[
            dg.AssetCheckSpec(
                name,
                asset=key,
                blocking=True,
                description=check_descriptions.get(name),
                partitions_def=HOURLY,
            )
            for name in table.check_names
        ],
        group_name=group_name,
        kinds={"polars", "parquet"},
        description=description,
    )
    def derived(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckEvaluation | dg.Output]:
        store = lake.store()
        results, outcomes, failed = {}, {}, {}
        for partition_key in context.partition_keys:
            hour = hour_of_partition(partition_key)
            try:
                result = rebuild_hour(store, table, hour)
            except StorageError as error:
                failed[partition_key] = str(error)
                context.log.error(f"{table.target} {partition_key}: {error}")
                continue
            context.log.info(
                f"{table.target} {partition_key}: {result.rows_read} rows read, "
                f"{result.rows_written} written in {len(result.files)} files"
            )
            results[partition_key] = result
            outcomes[partition_key] = check_hour(store, table, result)
            context.add_asset_metadata(
                hour_metadata(partition_key, result), partition_key=partition_key
            )
        if failed:
            raise dg.Failure(
                f"{table.target}: {len(failed)} of {len(context.partition_keys)} hours failed "
                f"(the others were rebuilt): "
                + "; ".join(f"{key}: {reason}" for key, reason in failed.items())
            )
        yield dg.MaterializeResult(metadata=run_metadata(results))
        yield from check_evaluations(context, key, results, outcomes)

    return derived
