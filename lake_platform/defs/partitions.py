"""The one partitioning of every asset: UTC hours from LAKE_PARTITIONS_START.

`end_offset=1` makes the open hour a partition too, so Bronze can report it while it fills
and Silver can follow it before the hour closes.
"""

import datetime as dt

import dagster as dg

from lake_platform.settings import LakeSettings


def hourly_partitions(settings: LakeSettings) -> dg.HourlyPartitionsDefinition:
    """Hourly UTC partitions keyed `YYYY-MM-DD-HH:00`, from the configured first hour."""
    return dg.HourlyPartitionsDefinition(
        start_date=settings.partitions_start_key, timezone="UTC", end_offset=1
    )


HOURLY = hourly_partitions(LakeSettings.from_env())


def partition_key_for(timestamp: dt.datetime) -> str:
    """The partition key of the hour holding `timestamp` (built by Dagster, never by hand)."""
    return HOURLY.get_partition_key_for_timestamp(timestamp.timestamp())


def hour_of_partition(partition_key: str) -> dt.datetime:
    """The UTC start of an hourly partition."""
    return HOURLY.time_window_for_partition_key(partition_key).start.astimezone(dt.UTC)
