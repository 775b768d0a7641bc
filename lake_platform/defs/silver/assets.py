"""Silver assets: `silver/<table>` for the six market tables, rebuilt from Bronze per hour."""

from lake_platform.defs.derived import build_derived_asset
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.schemas import BY_TABLE, TableSchema


def silver_description(schema: TableSchema) -> str:
    """The registry's description of a row, and how Silver is made from Bronze."""
    return (
        f"{schema.description} `{schema.name}` from Bronze: one row per `event_id` (the "
        f"earliest received), sorted by `ts_event_ns`, `event_id`; files per "
        f"`{schema.partition_column}` and hour."
    )


SILVER_ASSETS = [
    build_derived_asset(
        derived,
        group_name="silver",
        description=silver_description(BY_TABLE[table]),
    )
    for table, derived in SILVER_TABLES.items()
]
