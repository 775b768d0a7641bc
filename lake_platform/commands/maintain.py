"""`lake-platform maintain`: the `lake_maintenance` job's work, once (`defs/maintenance.py`).

The day tags need the Dagster instance's materializations: those of `DAGSTER_HOME`; without
it none is made (a note says so) and the rest is done.
"""

import os
import sys

from lake_platform.commands.dagster_runs import command_instance
from lake_platform.defs.maintenance import run_maintenance
from lake_platform.derived.registry import chosen_tables
from lake_platform.settings import LakeSettings
from lake_platform.tables.lake_tables import open_lake_tables


def run_maintain(table: str | None) -> int:
    """Maintain every Silver and Gold table (or one); one line per table, then the totals."""
    chosen = chosen_tables(table)
    settings = LakeSettings.from_env()
    tables = open_lake_tables(settings)
    if os.environ.get("DAGSTER_HOME", "").strip():
        instance = command_instance()
    else:
        instance = None
        print(
            "DAGSTER_HOME is not set: no day tags (they need its materializations)", file=sys.stderr
        )
    done = run_maintenance(tables, chosen, instance)
    for maintained in done.tables.values():
        print(maintained.line())
    totals = done.metadata()
    deleted = sum(
        totals[name]
        for name in (
            "data_files_deleted",
            "manifests_deleted",
            "manifest_lists_deleted",
            "orphans_deleted",
        )
    )
    print(
        f"maintained {totals['tables']} tables: {totals['snapshots_expired']} snapshots expired, "
        f"{deleted} files and {totals['temporaries_deleted']} temporaries deleted, "
        f"{totals['day_tags_made']} day tags made"
    )
    return 0
