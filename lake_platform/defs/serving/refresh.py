"""`warehouse_refresh_sensor`: refresh `serving/duckdb` after Silver/Gold commits, at most once
a minute.

Every minute (`minimum_interval_seconds`, the debounce: any number of commits within it
give one refresh) the sensor compares event-log storage ids, with no state of its own: a
refresh is due when a Silver or Gold materialization was recorded after the warehouse's
latest planned run (a run is planned before it reads the catalog, so a commit before the
plan was in that run's views). When that run failed or was canceled, the baseline is the
warehouse's latest materialization instead, so the refresh is tried again the next minute.
While a run of the warehouse is in progress nothing is requested: the next tick after it
ends asks again, with what committed meanwhile.
"""

from collections.abc import Sequence

import dagster as dg

from lake_platform.defs.serving.assets import SERVED_KEYS, WAREHOUSE_KEY
from lake_platform.settings import LakeSettings

REFRESH_INTERVAL_S = 60
NOT_READ = (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
"""Statuses of a planned run that may not have written the warehouse."""


def refresh_due(
    instance: dg.DagsterInstance,
    warehouse: dg.AssetKey = WAREHOUSE_KEY,
    served: Sequence[dg.AssetKey] = SERVED_KEYS,
) -> str | None:
    """Why the warehouse needs a refresh (None when it does not, or a run of it is in
    progress)."""
    newest = latest_materialization(instance, served)
    if not newest:
        return None
    plan = instance.get_latest_planned_materialization_info(warehouse)
    baseline = 0
    if plan is not None:
        run = instance.get_run_by_id(plan.run_id)
        if run is not None and not run.is_finished:
            return None
        read = run is not None and run.status not in NOT_READ
        baseline = plan.storage_id if read else latest_materialization(instance, [warehouse])
    if newest <= baseline:
        return None
    return f"Silver/Gold materialization {newest} is newer than the warehouse's {baseline}"


def latest_materialization(instance: dg.DagsterInstance, keys: Sequence[dg.AssetKey]) -> int:
    """The storage id of the latest materialization of any of `keys` (0 when none)."""
    return max(
        (
            record.asset_entry.last_materialization_storage_id or 0
            for record in instance.get_asset_records(list(keys))
        ),
        default=0,
    )


@dg.sensor(
    name="warehouse_refresh_sensor",
    asset_selection=[WAREHOUSE_KEY],
    minimum_interval_seconds=REFRESH_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Refreshes serving/duckdb (the DuckDB warehouse file) when Silver or Gold committed "
        "since its latest run, at most once a minute, never two runs at a time."
    ),
)
def warehouse_refresh_sensor(
    context: dg.SensorEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    settings = LakeSettings.from_env()
    if settings.use_s3 and not settings.duckdb_path:
        return dg.SkipReason(
            "the lake is on S3 and LAKE_DUCKDB_PATH is unset: no warehouse file to refresh "
            "(`lake-platform sql` reads the lake directly)"
        )
    reason = refresh_due(context.instance)
    if reason is None:
        return dg.SkipReason("no Silver/Gold commit since the latest refresh, or one is running")
    context.log.info(reason)
    return dg.RunRequest()
