"""Silver assets: `silver/<table>` for the six market tables, rebuilt from Bronze per hour."""

from lake_platform.defs.derived import build_derived_asset
from lake_platform.defs.keys import bronze_key, silver_key
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.schemas import BY_TABLE

SILVER_ASSETS = [
    build_derived_asset(
        silver_key(BY_TABLE[table]),
        [bronze_key(BY_TABLE[table])],
        derived,
        group_name="silver",
        description=(
            f"`{BY_TABLE[table].name}` from Bronze: one row per `event_id` (the earliest "
            f"received), sorted by `ts_event_ns`, `event_id`; files per "
            f"`{BY_TABLE[table].partition_column}` and hour."
        ),
    )
    for table, derived in SILVER_TABLES.items()
]
