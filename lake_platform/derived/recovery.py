"""Recovering a lost catalog from Bronze: every Silver and Gold hour rebuilt and committed.

Bronze is the archive, and a rebuild is deterministic with content-addressed file names: the
rebuild of an hour produces the names (and bytes) its lost commit registered, so recovery
re-registers the files already in the lake rather than adding new ones (an object store
keeps an object of that name and size; a local disk renames identical bytes over it). A
catalog that was not lost loses nothing either: an hour whose files are already committed
commits nothing.

Which hours: those Bronze holds, found by listing the Bronze folder of each table's chain
of inputs (`{col}=…/date=…/hour=…`), of the dates asked for or of every date. Silver is
recovered before Gold, which reads Silver through the catalog.

Only the hours recovered are in the catalog afterwards: the files of other dates are no
snapshot's, so no reader sees them until they are recovered too; written before the
recreated tables (`lake.created-ms`), they are never swept as orphans by maintenance.
"""

import datetime as dt
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.derived.sql_rebuild import rebuild_day
from lake_platform.derived.sql_tables import SqlGoldTable
from lake_platform.storage import LakeStore
from lake_platform.storage.store import APPEND_ONLY_TIER
from lake_platform.tables.lake_tables import LakeTables

RUN_ID = "catalog-recover"
"""The `lake.dagster_run_id` of the snapshots a recovery commits."""
DATE_FOLDER = "date="
HOUR_FOLDER = "hour="

T = TypeVar("T")


@dataclass(frozen=True)
class TableRecovery:
    """What recovery did to one table: the hours rebuilt, those committed (a snapshot made;
    an hour already holding its files commits nothing), the files the commits registered and
    the rows of the hours rebuilt."""

    table: str
    hours: int
    commits: int
    files: int
    rows: int


@dataclass(frozen=True)
class Recovery:
    """What `recover` did: the dates whose Bronze hours were rebuilt, each table's outcome
    (Silver first, in recovery order)."""

    dates: tuple[dt.date, ...]
    tables: tuple[TableRecovery, ...]


def recover(
    tables: LakeTables,
    dates: Collection[dt.date] | None = None,
    derived_tables: Sequence[DerivedTable] = CATALOG_TABLES,
) -> Recovery:
    """Create the tables the catalog lacks, then rebuild and commit every hour Bronze holds
    on `dates` (every date when None) of each table, inputs before the tables derived from
    them, with the run id `RUN_ID`."""
    ordered = in_dependency_order(derived_tables)
    for table in ordered:
        tables.table(table)
    roots = {table.target: bronze_root(table, derived_tables) for table in ordered}
    hours_by_root = {root: bronze_hours(tables.store, root, dates) for root in set(roots.values())}
    outcomes = tuple(
        _recover_table(tables, table, hours_by_root[roots[table.target]]) for table in ordered
    )
    found = sorted({hour.date() for hours in hours_by_root.values() for hour in hours})
    return Recovery(tuple(found), outcomes)


def _recover_table(
    tables: LakeTables, table: DerivedTable, hours: Iterable[dt.datetime]
) -> TableRecovery:
    rebuilt = commits = files = rows = 0
    for hour in _periods(table, hours):
        result = (
            rebuild_day(tables, table, hour, run_id=RUN_ID)
            if isinstance(table, SqlGoldTable)
            else rebuild_hour(tables, table, hour, RUN_ID)
        )
        rebuilt += 1
        rows += result.rows_written
        if result.commit is not None and result.commit.snapshot_id is not None:
            commits += 1
            files += result.commit.files_added
    return TableRecovery(table.target, rebuilt, commits, files, rows)


def _periods(table: DerivedTable, hours: Iterable[dt.datetime]) -> list[dt.datetime]:
    """What `table` is rebuilt by: its hours, or for a daily SQL Gold table the days (their
    starts) of those hours."""
    if not isinstance(table, SqlGoldTable):
        return list(hours)
    days = {hour.replace(hour=0) for hour in hours}
    return sorted(days)


def in_dependency_order(derived_tables: Sequence[DerivedTable]) -> list[DerivedTable]:
    """`derived_tables` with each one after the derived tables it reads, its source and its
    lookups (stable otherwise)."""
    by_target = {derived.target: derived for derived in derived_tables}

    def depth(table: DerivedTable) -> int:
        inputs = [by_target[path] for path in _inputs(table) if path in by_target]
        return 1 + max(map(depth, inputs)) if inputs else 0

    return sorted(derived_tables, key=depth)


def _inputs(table: DerivedTable) -> list[str]:
    """The lake paths `table` reads: its source and its lookups' tables."""
    return [table.source, *(lookup.source for lookup in table.lookups)]


def bronze_root(table: DerivedTable, derived_tables: Sequence[DerivedTable]) -> str:
    """The Bronze folder at the start of `table`'s chain of inputs (Gold bars: Bronze trades)."""
    by_target = {derived.target: derived for derived in derived_tables}
    source = table.source
    while source in by_target:
        source = by_target[source].source
    if source.split("/", 1)[0] != APPEND_ONLY_TIER:
        raise ValueError(f"{table.target} is not derived from Bronze (its input is {source})")
    return source


def bronze_hours(
    store: LakeStore, root: str, dates: Collection[dt.date] | None = None
) -> list[dt.datetime]:
    """The UTC hours that hold files in the Bronze folder `root`, on `dates` (every date
    when None), in order: one LIST per value folder, and one per value and date kept."""
    found: set[dt.datetime] = set()
    for value_folder in store.list_folders(root):
        value_path = f"{root}/{value_folder}"
        for date_folder in store.list_folders(value_path):
            day = _parsed(date_folder, DATE_FOLDER, dt.date.fromisoformat)
            if day is None or (dates is not None and day not in dates):
                continue
            for hour_folder in store.list_folders(f"{value_path}/{date_folder}"):
                hour = _parsed(hour_folder, HOUR_FOLDER, int)
                if hour is not None and 0 <= hour < 24:
                    found.add(dt.datetime.combine(day, dt.time(hour), dt.UTC))
    return sorted(found)


def _parsed(folder: str, prefix: str, parse: Callable[[str], T]) -> T | None:
    """The value of a `{prefix}{value}` folder name, None for any other folder."""
    if not folder.startswith(prefix):
        return None
    try:
        return parse(folder.removeprefix(prefix))
    except ValueError:
        return None
