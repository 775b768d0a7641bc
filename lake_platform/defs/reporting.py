"""Materialization metadata and per-hour check evaluations of derived assets."""

from collections.abc import Callable, Iterator, Mapping, Sequence

import dagster as dg
import polars as pl

# Dagster exports no public name for it; an evaluation needs it to count as the check of the
# materialization it follows (without it, the hour's check status reads as unknown).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from lake_platform.checks import CheckOutcome
from lake_platform.derived.hour_files import files_digest
from lake_platform.derived.results import HourResult
from lake_platform.storage import StorageError
from lake_platform.tables.hours import HourConflict


def _markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * frame.width
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


def inputs_metadata(result: HourResult) -> dict[str, int | str]:
    """The exact input files an hour's rebuild read: how many, and the SHA-256 of their paths.

    A digest rather than the list: an open hour can hold thousands of Bronze files, too many
    for an event; the paths are sorted relative lake paths joined by newlines.
    """
    return {"files": result.input_files, "sha256": files_digest(result.every_input())}


def hour_metadata(partition: str, result: HourResult) -> dict[str, dg.MetadataValue]:
    """What one hour's rebuild read and wrote, attached to that hour's materialization only.

    Key-level metadata is copied onto every partition's event of a range run, so per-hour
    values set there would be stored hours × hours times; these are stored once per hour.
    Their names contain none of the run-level names (`rows_written` is the run's total).
    Dagster's own names give the hour's rows and bytes (the UI shows the latest
    materialization's, i.e. an hour's): `dagster/row_count` and `dagster/partition_row_count`
    are both the rows the hour holds now, `dagster/size_bytes` the bytes of its files.
    """
    return {
        "dagster/row_count": dg.MetadataValue.int(result.rows_written),
        "dagster/partition_row_count": dg.MetadataValue.int(result.rows_written),
        "dagster/size_bytes": dg.MetadataValue.int(result.bytes),
        "hour_read_rows": dg.MetadataValue.int(result.rows_read),
        "hour_written_rows": dg.MetadataValue.int(result.rows_written),
        "hour_output_files": dg.MetadataValue.int(len(result.files)),
        "hour_output_bytes": dg.MetadataValue.int(result.bytes),
        "inputs": dg.MetadataValue.json({partition: inputs_metadata(result)}),
        **snapshot_metadata(result),
    }


def snapshot_metadata(result: HourResult) -> dict[str, dg.MetadataValue]:
    """The hour's Iceberg snapshot (committed now, or the current one when the output was
    unchanged) and the files its commit added and removed."""
    commit = result.commit
    metadata: dict[str, dg.MetadataValue] = {
        "iceberg_snapshot_committed": dg.MetadataValue.bool(
            commit is not None and commit.snapshot_id is not None
        ),
        "iceberg_files_added": dg.MetadataValue.int(commit.files_added if commit else 0),
        "iceberg_files_removed": dg.MetadataValue.int(commit.files_removed if commit else 0),
    }
    if result.snapshot_id is not None:
        metadata["iceberg_snapshot_id"] = dg.MetadataValue.text(str(result.snapshot_id))
    return metadata


def run_metadata(results: Mapping[str, HourResult]) -> dict[str, dg.MetadataValue]:
    """Counts summed over the run's hours and a preview of the first rows (a fixed size)."""
    hours = list(results.values())
    preview = next((r.preview for r in hours if r.preview is not None), None)
    metadata: dict[str, dg.MetadataValue] = {
        "hours": dg.MetadataValue.int(len(hours)),
        "rows_read": dg.MetadataValue.int(sum(r.rows_read for r in hours)),
        "rows_written": dg.MetadataValue.int(sum(r.rows_written for r in hours)),
        "duplicates_removed": dg.MetadataValue.int(sum(r.duplicates_removed for r in hours)),
        "files": dg.MetadataValue.int(sum(len(r.files) for r in hours)),
        "bytes": dg.MetadataValue.int(sum(r.bytes for r in hours)),
        "input_files": dg.MetadataValue.int(sum(r.input_files for r in hours)),
    }
    if preview is not None:
        metadata["preview"] = dg.MetadataValue.md(_markdown_table(preview))
    return metadata


def materialization_targets(
    instance: dg.DagsterInstance, run_id: str, key: dg.AssetKey, partitions: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """Run `run_id`'s materialization of each of `partitions` of `key`, by partition.

    The newest materializations of an hour may be another run's (a concurrent run that
    materialized it later), so records are read newest first, page after page, until every
    hour has this run's; their storage ids are the asset index's, as Dagster's own checks use.
    """
    return _newest_targets(instance, key, partitions, run_id)


def latest_materialization_targets(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each of `partitions` of `key` (of any run, or runless),
    by partition: what a check of the stored files checks."""
    return _newest_targets(instance, key, partitions, run_id=None)


def _newest_targets(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str], run_id: str | None
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The newest materialization of each partition (of run `run_id`, or of any run), read
    newest first page after page until every partition has one or there are no more."""
    records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(partitions))
    targets: dict[str, AssetCheckEvaluationTargetMaterializationData] = {}
    cursor = None
    while len(targets) < len(set(partitions)):
        page = instance.fetch_materializations(records_filter, len(partitions), cursor)
        for record in page.records:
            if record.partition_key is not None and run_id in (None, record.run_id):
                targets.setdefault(
                    record.partition_key,
                    AssetCheckEvaluationTargetMaterializationData(
                        storage_id=record.storage_id,
                        run_id=record.run_id,
                        timestamp=record.timestamp,
                    ),
                )
        if not page.has_more:
            break
        cursor = page.cursor
    return targets


def check_evaluations(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    results: Mapping[str, HourResult],
    outcomes: Mapping[str, Mapping[str, CheckOutcome]],
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """One evaluation per check and hour partition, then each check's (empty) output.

    `AssetCheckResult` takes the partition from the step's single partition key, so a range
    run would record one result for no partition; an `AssetCheckEvaluation` names its hour.
    Call after the materialization has been yielded: each evaluation targets it.
    """
    targets = materialization_targets(context.instance, context.run.run_id, key, list(outcomes))
    selected = [check for check in context.selected_asset_check_keys if check.asset_key == key]
    for partition, by_name in outcomes.items():
        inputs = inputs_metadata(results[partition])
        for check in selected:
            outcome = by_name[check.name]
            yield dg.AssetCheckEvaluation(
                asset_key=key,
                check_name=check.name,
                passed=outcome.passed,
                partition=partition,
                blocking=True,
                severity=dg.AssetCheckSeverity.ERROR,
                description=outcome.message,
                metadata={
                    "input_files": dg.MetadataValue.int(int(inputs["files"])),
                    "input_files_sha256": dg.MetadataValue.text(str(inputs["sha256"])),
                },
                target_materialization_data=targets.get(partition),
            )
    for check in selected:
        yield dg.Output(
            None, output_name=context.assets_def.get_output_name_for_asset_check_key(check)
        )


Rebuilt = tuple[HourResult, dict[str, CheckOutcome]]
"""One partition rebuilt, committed and checked: its result and its checks' outcomes."""


def rebuild_partitions(
    context: dg.AssetExecutionContext, target: str, rebuild: Callable[[str], Rebuilt]
) -> tuple[dict[str, HourResult], dict[str, dict[str, CheckOutcome]], dict[str, str]]:
    """`rebuild` each partition of the run, one after the other: the results, the checks'
    outcomes and the failed partitions with their errors. A `StorageError` (an unreadable
    input, an outage) or a commit that kept losing to concurrent runs (`HourConflict`) fails
    its partition only; the run's other partitions are still rebuilt."""
    results: dict[str, HourResult] = {}
    outcomes: dict[str, dict[str, CheckOutcome]] = {}
    failed: dict[str, str] = {}
    for partition_key in context.partition_keys:
        try:
            result, outcome = rebuild(partition_key)
        except (StorageError, HourConflict) as error:
            failed[partition_key] = str(error)
            context.log.error(f"{target} {partition_key}: {error}")
            continue
        context.log.info(
            f"{target} {partition_key}: {result.rows_read} rows read, "
            f"{result.rows_written} written in {len(result.files)} files, "
            f"Iceberg snapshot {result.snapshot_id}"
        )
        results[partition_key], outcomes[partition_key] = result, outcome
    return results, outcomes, failed


PartitionMetadata = Callable[[str, HourResult], dict[str, dg.MetadataValue]]
"""One partition's own metadata (`hour_metadata`, a daily table's `day` metadata)."""


def record_partitions(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    results: Mapping[str, HourResult],
    outcomes: Mapping[str, Mapping[str, CheckOutcome]],
    shared: dict[str, dg.MetadataValue],
    own: PartitionMetadata,
    *,
    some_failed: bool,
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation]:
    """Record the run's rebuilt partitions (hours or days) with the run's `shared` metadata
    and each one's `own`, then each partition's check results.

    A run that fails cannot yield its `MaterializeResult`: Dagster would record it for every
    partition of the run, the failed ones too. When `some_failed`, each rebuilt partition is
    recorded by its own event instead, before the step fails for the others.
    """
    if some_failed:
        for partition_key, result in results.items():
            yield dg.AssetMaterialization(
                asset_key=key,
                partition=partition_key,
                metadata={**shared, **own(partition_key, result)},
            )
    else:
        for partition_key, result in results.items():
            context.add_asset_metadata(own(partition_key, result), partition_key=partition_key)
        yield dg.MaterializeResult(metadata=shared)
    yield from check_evaluations(context, key, results, outcomes)


def partitions_failure(target: str, failed: Mapping[str, str], total: int, unit: str) -> dg.Failure:
    """The step's failure: which of the run's `total` partitions (`unit`: hours, days) failed
    and why (the others are recorded)."""
    return dg.Failure(
        f"{target}: {len(failed)} of {total} {unit} failed (the others were rebuilt and "
        "recorded): " + "; ".join(f"{key}: {reason}" for key, reason in failed.items()),
        metadata={f"failed_{unit}": dg.MetadataValue.json(sorted(failed))},
    )
