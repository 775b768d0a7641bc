"""`lake-platform compact`: rebuild Silver for every hour of a date, through Dagster.

First it sweeps what killed writes left in the lake (old temporaries, unfinished uploads).
The run goes through the Dagster instance of `DAGSTER_HOME` (an ephemeral one when it is unset)
so lineage and check results are recorded as for a backfill from the UI.
"""

import datetime as dt

import dagster as dg

from lake_platform.commands.dagster_runs import command_instance, materialize_hours
from lake_platform.commands.init import sweep_leftovers
from lake_platform.defs.partitions import hours_of_day
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.schemas import BY_TABLE, SCHEMAS
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore


def _silver_assets(table: str | None) -> list[dg.AssetsDefinition]:
    if table is not None and (table not in BY_TABLE or not BY_TABLE[table].silver):
        known = ", ".join(schema.table for schema in SCHEMAS if schema.silver)
        raise ValueError(f"no Silver table {table!r}; known: {known}")
    wanted = {table} if table else {schema.table for schema in SCHEMAS if schema.silver}
    return [asset for asset in SILVER_ASSETS if "/".join(asset.key.path[1:]) in wanted]


def run_compact(day: dt.date, table: str | None) -> int:
    """Materialize Silver for the date's hours; prints a summary per table."""
    assets = _silver_assets(table)
    first, last = hours_of_day(day)
    settings = LakeSettings.from_env()
    sweep_leftovers(LakeStore.from_settings(settings), print)
    result = materialize_hours(assets, command_instance(), settings, first, last)
    checks_by_table: dict[str, list[dg.AssetCheckEvaluation]] = {}
    for evaluation in result.get_asset_check_evaluations():
        table_path = "/".join(evaluation.asset_key.path[1:])
        checks_by_table.setdefault(table_path, []).append(evaluation)
    print(f"Silver {day} ({first} … {last}), run {result.run_id}")
    print(
        f"{'table':<26}{'status':<10}{'rows_read':>12}{'rows_written':>14}{'duplicates_removed':>20}"
    )
    all_passed = result.success
    for asset in assets:
        table_path = "/".join(asset.key.path[1:])
        events = result.asset_materializations_for_node(asset.node_def.name)
        checks = checks_by_table.get(table_path, [])
        ok = bool(events) and bool(checks) and all(check.passed for check in checks)
        all_passed = all_passed and ok
        metadata = events[0].metadata if events else {}

        def count(name: str, found: dict = metadata) -> str:
            return str(found[name].value) if name in found else "-"

        print(
            f"{table_path:<26}{'success' if ok else 'failed':<10}{count('rows_read'):>12}"
            f"{count('rows_written'):>14}{count('duplicates_removed'):>20}"
        )
        for check in checks:
            if not check.passed:
                print(f"  check {check.check_name} failed: {check.description}")
    return 0 if all_passed else 1
