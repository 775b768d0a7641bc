"""`lake-platform verify`: check a day's stored derived files again, without rebuilding them.

Runs the `verify_stored_files` job (`defs/verification.py`) over the date's hours in one
Dagster run on the instance of `DAGSTER_HOME` (an ephemeral one when unset), so each table
and hour records its result as the UI's backfills do; prints one line per table and hour and
exits 1 when any failed or could not be verified.
"""

import datetime as dt
import sys

import dagster as dg

from lake_platform.commands.dagster_runs import (
    QUIET_RUN,
    RANGE_END_TAG,
    RANGE_START_TAG,
    command_instance,
)
from lake_platform.defs.keys import derived_key
from lake_platform.defs.partitions import hours_of_day
from lake_platform.defs.verification import AS_OF_TAG, VERIFY_CHECK, VERIFY_JOB
from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.registry import chosen_tables
from lake_platform.derived.tables import DERIVED_TABLES


def run_verify(day: dt.date, table: str | None, as_of: str | None = None) -> int:
    """Verify the date's hours of one table or all (as of a tag, snapshot id or time: the
    files of the snapshot current then); 0 when every table-hour passed."""
    from lake_platform.definitions import defs

    tables = chosen_tables(table, DERIVED_TABLES)
    if as_of is not None:
        _check_as_of(tables, as_of)
    first, last = hours_of_day(day)
    checks = {dg.AssetCheckKey(derived_key(t.target), VERIFY_CHECK) for t in tables}
    job = defs.resolve_job_def(VERIFY_JOB).get_subset(asset_check_selection=checks)
    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last}
    if as_of is not None:
        tags[AS_OF_TAG] = as_of
    result = job.execute_in_process(
        instance=command_instance(),
        tags=tags,
        run_config=QUIET_RUN,
        raise_on_error=False,
    )
    evaluations = sorted(
        result.get_asset_check_evaluations(),
        key=lambda e: (e.asset_key.to_user_string(), e.partition or ""),
    )
    for evaluation in evaluations:
        print(evaluation.description)
    failed = sum(not evaluation.passed for evaluation in evaluations)
    for failure in result.get_step_failure_events():
        print(f"not verified: {failure.step_key}: {_first_line(failure)}", file=sys.stderr)
    print(
        f"verified {day} ({first} … {last}): {len(evaluations)} table-hours, {failed} failed, "
        f"run {result.run_id}"
    )
    return 0 if result.success and not failed else 1


def _check_as_of(tables: list[DerivedTable], as_of: str) -> None:
    """An `AsOfError` (one line) when a table has no snapshot at `as_of`."""
    from lake_platform.settings import LakeSettings
    from lake_platform.tables.lake_tables import open_lake_tables
    from lake_platform.tables.time_travel import snapshot_as_of

    lake = open_lake_tables(LakeSettings.from_env())
    for table in tables:
        snapshot_as_of(lake.table(table), as_of)


def _first_line(failure: dg.DagsterEvent) -> str:
    error = failure.step_failure_data.error
    message = error.message.strip() if error is not None else "failed"
    return message.splitlines()[0] if message else "failed"
