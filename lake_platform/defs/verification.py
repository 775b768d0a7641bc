"""Re-verifying stored hours without rebuilding them: one `verify_stored_files` check per
derived asset, and the `verify_stored_files` job that runs them for chosen hours.

The inline checks run inside the asset's step (their "Execute" button is disabled in the
UI); these run on their own over the files as stored (`derived/reverify.py`), e.g. after an
upgrade. They record one result per hour, like the inline checks, targeting the hour's latest
materialization. They are not blocking: a failed re-verification says an hour needs a
rebuild, and does not hold back automation.

Dagster adds every check of an asset to the runs that materialize it (automation, backfills,
the UI's "Materialize"). In such a run the asset's own step has just checked the hours it
rebuilt, so this check records nothing there (the UI shows it skipped) rather than read every
file of the hour a second time.

Run them with `lake-platform verify --date`, with `dagster job execute -m
lake_platform.definitions -j verify_stored_files --tags '{"dagster/asset_partition_range_start":
"…", "dagster/asset_partition_range_end": "…"}'`, or from the UI: Jobs → verify_stored_files →
Launchpad with the same tags (or `dagster/partition` for one hour). A job of checks alone has
no partitions of its own in Dagster 1.13 (the hours come from those tags), and the UI disables
"Execute" of a partitioned asset's check; that button on the checks list launches a run
without hours, which is refused with this advice.
"""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from lake_platform.defs.keys import derived_key
from lake_platform.defs.partitions import HOURLY, hour_of_partition
from lake_platform.defs.reporting import latest_materialization_targets
from lake_platform.defs.resources import LakeResource
from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.reverify import Verification, verify_hour
from lake_platform.derived.tables import DERIVED_TABLES
from lake_platform.storage import StorageError

VERIFY_CHECK = "verify_stored_files"
VERIFY_JOB = "verify_stored_files"
AS_OF_TAG = "lake/as_of"
"""Run tag: verify the snapshot current at this tag, snapshot id or time, not the current one."""


def verification_line(table: DerivedTable, partition: str, verification: Verification) -> str:
    """One line for a verified hour: `ok` and what was read, or the failed checks and the
    first failure's message."""
    where = f"{table.target} {partition}"
    if verification.passed:
        return f"{where} ok: {verification.files} files ({verification.input_files} input files)"
    failures = verification.failures
    first = next(iter(failures.values()))
    return f"{where} FAILED {', '.join(failures)}: {first.message}"


def _evaluation(
    key: dg.AssetKey,
    partition: str,
    verification: Verification,
    description: str,
    target: object,
) -> dg.AssetCheckEvaluation:
    outcomes = {
        name: {"passed": outcome.passed, "message": outcome.message}
        for name, outcome in verification.outcomes.items()
    }
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=VERIFY_CHECK,
        passed=verification.passed,
        partition=partition,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "failed_checks": dg.MetadataValue.json(sorted(verification.failures)),
            "checks": dg.MetadataValue.json(outcomes),
            "files": dg.MetadataValue.int(verification.files),
            "input_files": dg.MetadataValue.int(verification.input_files),
        },
        target_materialization_data=target,  # type: ignore[arg-type]
    )


def build_verify_check(table: DerivedTable) -> dg.AssetChecksDefinition:
    """`verify_stored_files` of the derived asset of `table`."""
    key = derived_key(table.target)

    @dg.asset_check(
        asset=key,
        name=VERIFY_CHECK,
        partitions_def=HOURLY,
        blocking=False,
        description=(
            "The asset's checks run again on the hour's files as stored, without rebuilding "
            "it; reconciliations against totals recomputed from the stored inputs."
        ),
    )
    def verify_stored_files(
        context: dg.AssetCheckExecutionContext, lake: LakeResource
    ) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
        if key in (context.run.asset_selection or ()):
            context.log.info(f"{table.target}: checked by this run's rebuild, not verified again")
            yield dg.Output(None)
            return
        partitions = _chosen_hours(context)
        as_of = context.run.tags.get(AS_OF_TAG)
        tables = lake.tables()
        targets = latest_materialization_targets(context.instance, key, partitions)
        failed: dict[str, str] = {}
        for partition in partitions:
            try:
                verification = verify_hour(tables, table, hour_of_partition(partition), as_of)
            except StorageError as error:
                failed[partition] = str(error)
                context.log.error(f"{table.target} {partition}: not verified: {error}")
                continue
            line = verification_line(table, partition, verification)
            (context.log.info if verification.passed else context.log.error)(line)
            yield _evaluation(key, partition, verification, line, targets.get(partition))
        if failed:
            raise _unverified(table, failed)
        yield dg.Output(None)

    return verify_stored_files


def _chosen_hours(context: dg.AssetCheckExecutionContext) -> Sequence[str]:
    """The run's hours; a run without any (the check's own "Execute" button) is refused."""
    op = context.op_execution_context
    if not (op.has_partition_key or op.has_partition_key_range):
        raise dg.Failure(
            f"{VERIFY_CHECK} needs hours: launch the {VERIFY_JOB} job for a partition or a "
            "range, or run `lake-platform verify --date YYYY-MM-DD`"
        )
    return op.partition_keys


def _unverified(table: DerivedTable, failed: Mapping[str, str]) -> dg.Failure:
    """The step's failure for hours whose storage failed (the others are recorded)."""
    return dg.Failure(
        f"{table.target}: {len(failed)} hours not verified (storage failed): "
        + "; ".join(f"{partition}: {reason}" for partition, reason in failed.items()),
        metadata={"unverified_hours": dg.MetadataValue.json(sorted(failed))},
    )


VERIFY_CHECKS = [build_verify_check(table) for table in DERIVED_TABLES]

verify_job = dg.define_asset_job(
    VERIFY_JOB,
    selection=dg.AssetSelection.checks(*VERIFY_CHECKS),
    description=(
        "Runs every derived table's checks again on the stored files of the chosen hours, "
        "without rebuilding them (e.g. after an upgrade); one result per table and hour."
    ),
)
