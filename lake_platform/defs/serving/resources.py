"""The `warehouse_duckdb` resource: a `dagster_duckdb.DuckDBResource` on the warehouse's build
file, beside LAKE_DUCKDB_PATH (`lake.duckdb.building`); the `serving/duckdb` asset writes the
next version through it, then renames it over the warehouse (`query/warehouse.py`)."""

from dagster_duckdb import DuckDBResource

from lake_platform.query.warehouse import building_path
from lake_platform.settings import LakeSettings, SettingsError

WAREHOUSE_RESOURCE = "warehouse_duckdb"
NO_WAREHOUSE = ":memory:"
"""The database of the resource when the lake has no warehouse path (a lake on S3 without
LAKE_DUCKDB_PATH): the code location still loads, and the asset fails naming the variable."""


def warehouse_duckdb(settings: LakeSettings | None = None) -> DuckDBResource:
    """The resource building the warehouse of `settings` (default: the environment's)."""
    settings = settings or LakeSettings.from_env()
    try:
        database = building_path(settings.warehouse_path)
    except SettingsError:
        database = NO_WAREHOUSE
    return DuckDBResource(database=database)
