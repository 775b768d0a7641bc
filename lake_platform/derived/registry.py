"""Every table the lake derives and keeps in its Iceberg catalog, in one place: the hourly
Silver and Gold tables (`tables.py`) and the daily SQL Gold tables (`sql_tables.py`).

What acts on every catalog table (init, maintenance, tags, recovery, the query views) takes
them from here; `chosen_tables` is what a command's `--table` selects among them.
"""

from collections.abc import Sequence

from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
from lake_platform.derived.tables import DERIVED_TABLES

CATALOG_TABLES: tuple[DerivedTable, ...] = (*DERIVED_TABLES, *SQL_GOLD_TABLES)
"""Every Silver and Gold table, hourly then daily."""


def chosen_tables(
    table: str | None, among: Sequence[DerivedTable] = CATALOG_TABLES
) -> list[DerivedTable]:
    """Every table of `among`, or the one named by its lake path (`silver/stocks/trades`,
    `gold/stocks/bars_1m`) or by its registry table (`stocks/trades`: its Silver)."""
    if table is None:
        return list(among)
    for derived in among:
        if table in (derived.target, derived.target.removeprefix("silver/")):
            return [derived]
    known = ", ".join(derived.target for derived in among)
    raise ValueError(f"no derived table {table!r}; known: {known}")
