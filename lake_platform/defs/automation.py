"""How Silver and Gold follow their upstream, and the sensor that evaluates it.

`eager()` alone only looks at the latest hour, so a late Bronze batch for an older hour would
never re-run it: the time window is widened to LAKE_AUTOMATION_LOOKBACK_H (default 48 h).
A failed blocking check still leaves a partition "materialized", so downstream assets also
wait for their upstream's blocking checks to pass.
"""

import datetime as dt

import dagster as dg

from lake_platform.settings import LakeSettings


def follows_upstream(lookback_hours: int) -> dg.AutomationCondition:
    """Run a partition when its upstream changed, within the look-back, checks passing."""
    window = dg.AutomationCondition.in_latest_time_window(dt.timedelta(hours=lookback_hours))
    return (
        dg.AutomationCondition.eager().replace("in_latest_time_window", window)
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    )


DERIVED_AUTOMATION = follows_upstream(LakeSettings.from_env().automation_lookback_hours)

automation_sensor = dg.AutomationConditionSensorDefinition(
    "lake_automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=15,
    description="Materializes Silver and Gold partitions whose upstream changed.",
)
