"""The Dagster code location: `lake_platform.definitions:defs`."""

import dagster as dg

from lake_platform.defs.automation import automation_sensor
from lake_platform.defs.bronze.assets import (
    BRONZE_ASSETS,
    BRONZE_FRESHNESS_CHECKS,
    bronze_freshness_sensor,
)
from lake_platform.defs.bronze.sensor import bronze_ingest_sensor
from lake_platform.defs.executor import DERIVED_EXECUTOR
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.gold.sql_assets import SQL_DUCKDB_RESOURCE, SQL_GOLD_ASSETS, sql_gold_duckdb
from lake_platform.defs.maintenance import lake_maintenance_hourly, lake_maintenance_job
from lake_platform.defs.replay import replay_job
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.serving.assets import serving_duckdb
from lake_platform.defs.serving.refresh import warehouse_refresh_sensor
from lake_platform.defs.serving.resources import WAREHOUSE_RESOURCE, warehouse_duckdb
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.defs.verification import VERIFY_CHECKS, verify_job

defs = dg.Definitions(
    assets=[*BRONZE_ASSETS, *SILVER_ASSETS, *GOLD_ASSETS, *SQL_GOLD_ASSETS, serving_duckdb],
    asset_checks=[*BRONZE_FRESHNESS_CHECKS, *VERIFY_CHECKS],
    jobs=[verify_job, lake_maintenance_job, replay_job],
    schedules=[lake_maintenance_hourly],
    sensors=[
        bronze_ingest_sensor,
        automation_sensor,
        bronze_freshness_sensor,
        warehouse_refresh_sensor,
    ],
    resources={
        "lake": LakeResource(),
        WAREHOUSE_RESOURCE: warehouse_duckdb(),
        SQL_DUCKDB_RESOURCE: sql_gold_duckdb(),
    },
    executor=DERIVED_EXECUTOR,
)
