"""Silver assets: `silver/<table>` for the six market tables, rebuilt from Bronze per hour."""

from lake_platform.defs.derived import build_derived_asset
from lake_platform.defs.keys import bronze_key, silver_key
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.schemas import BY_TABLE

CHECK_DESCRIPTIONS = {
    "sorted_by_ts_event_ns": "Every file is sorted by ts_event_ns, then event_id.",
    "event_id_unique": "No event_id appears twice in a file.",
    "reconciles_with_bronze": "Silver rows = distinct event_id in the Bronze hour.",
    "within_partition_hour": "Every ts_event_ns lies in the partition's UTC hour.",
    "matches_declared_schema": "Columns and types are exactly the registry's.",
    "zstd_compressed": "Every column chunk is ZSTD-compressed.",
}

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
        check_descriptions=CHECK_DESCRIPTIONS,
    )
    for table, derived in SILVER_TABLES.items()
]
