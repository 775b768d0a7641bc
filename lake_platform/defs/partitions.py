"""The partitionings of the assets: UTC hours from LAKE_PARTITIONS_START (every table but the
SQL Gold tables), and UTC days from the same date (the SQL Gold tables, `defs/gold/sql_assets.py`).

`end_offset=1` makes the open hour (the open day) a partition too, so Bronze can report it
while it fills, Silver can follow it before the hour closes, and a daily table can follow the
hours of the current day.
"""

import datetime as dt

import dagster as dg

from lake_platform.settings import LakeSettings


def hourly_partitions(settings: LakeSettings) -> dg.HourlyPartitionsDefinition:
    """Hourly UTC partitions keyed `YYYY-MM-DD-HH:00`, from the configured first hour."""
    return dg.HourlyPartitionsDefinition(
        start_date=settings.partitions_start_key, timezone="UTC", end_offset=1
    )


def daily_partitions(settings: LakeSettings) -> dg.DailyPartitionsDefinition:
    """Daily UTC partitions keyed `YYYY-MM-DD`, from the date of the configured first hour."""
    return dg.DailyPartitionsDefinition(
        start_date=f"{settings.partitions_start:%Y-%m-%d}", timezone="UTC", end_offset=1
    )


HOURLY = hourly_partitions(LakeSettings.from_env())
DAILY = daily_partitions(LakeSettings.from_env())


def partition_key_for(timestamp: dt.datetime) -> str:
    """The partition key of the hour holding `timestamp` (built by Dagster, never by hand)."""
    return HOURLY.get_partition_key_for_timestamp(timestamp.timestamp())


def hour_of_partition(partition_key: str) -> dt.datetime:
    """The UTC start of an hourly partition."""
    return HOURLY.time_window_for_partition_key(partition_key).start.astimezone(dt.UTC)


def day_of_partition(partition_key: str) -> dt.datetime:
    """The UTC start (midnight) of a daily partition."""
    return DAILY.time_window_for_partition_key(partition_key).start.astimezone(dt.UTC)


def hours_of_day(day: dt.date) -> tuple[str, str]:
    """The first and last hourly partitions of a UTC date, of those that exist (from the first
    configured hour to the open one); ValueError when the date has none."""
    first = max(f"{day:%Y-%m-%d}-00:00", HOURLY.get_first_partition_key() or "")
    last = min(f"{day:%Y-%m-%d}-23:00", HOURLY.get_last_partition_key() or "")
    if first > last:
        raise ValueError(f"{day} has no hourly partition (they run from {HOURLY.start:%Y-%m-%d})")
    return first, last
