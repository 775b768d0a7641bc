"""`lake-platform catalog recover`: rebuild a lost Iceberg catalog from Bronze
(`derived/recovery.py`)."""

import datetime as dt
import sys
from collections.abc import Sequence

from lake_platform.derived.recovery import recover
from lake_platform.settings import LakeSettings
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.lake_tables import open_lake_tables


def run_catalog_recover(dates: Sequence[dt.date] | None) -> int:
    """Recover the hours of `dates` (every date Bronze has when None); one line per table.
    Exit 1 when a date asked for has no Bronze hour (the others are recovered)."""
    tables = open_lake_tables(LakeSettings.from_env())
    recovery = recover(tables, set(dates) if dates else None)
    for table in recovery.tables:
        print(
            f"{table_identifier(table.table)}: {table.hours} hours rebuilt, {table.commits} "
            f"committed, {table.files} files registered, {table.rows:,} rows"
        )
    found = recovery.dates
    span = f" ({found[0]} … {found[-1]})" if found else ""
    print(f"recovered {len(found)} dates from Bronze{span}")
    if dates:
        print(
            "note: the catalog holds only the hours of the dates recovered and those it kept; "
            "the other dates' files stay on disk (older than the tables, maintenance never "
            "sweeps them) but no reader sees them: recover them too (without --date: every date)"
        )
    missing = sorted(set(dates or ()) - set(found))
    if missing:
        shown = ", ".join(str(day) for day in missing)
        print(f"lake-platform: error: no Bronze hour on {shown}", file=sys.stderr)
        return 1
    return 0
