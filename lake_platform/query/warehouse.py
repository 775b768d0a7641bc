"""The DuckDB warehouse file (LAKE_DUCKDB_PATH): every lake table as a view, plus macros.

Analysts open the file with any DuckDB client (`duckdb -readonly data/lake.duckdb`) and find
`bronze.*`, `silver.*` and `gold.*` views, each Silver/Gold view pinned to the snapshot that
was current when the file was built (`query/views.py`), the table `warehouse_tables` saying
which, and the macros of `MACROS`. The file holds no data: its views read the lake's Parquet
files, so it stays small and a refresh takes the time of a catalog read.

A refresh never touches the file readers have open. It builds the next version in a file
beside it (`building_path`), checkpoints and closes it, then renames it over LAKE_DUCKDB_PATH
(`publish`): a reader opening the path gets the old or the new version, whole, and never
waits on a lock; one that keeps a connection open keeps reading the old version (its inode)
until it reconnects. DuckDB shares one open database per path within a process: to see the
new version, close every connection to the file, then connect again. Refreshes of one
warehouse run one at a time (`refresh_lock`).

Views read the files of the snapshots they pin: maintenance deletes those files only after a
newer snapshot replaced them and LAKE_SNAPSHOT_RETENTION passed, so the file must be
refreshed within that time of each commit (the `serving/duckdb` asset is, within a minute).
The file is rewritten by every refresh: objects an analyst creates in it are lost; keep them
in a database of your own that `ATTACH`es this one read-only.
"""

import datetime as dt
import fcntl
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from lake_platform.query.views import TableView, create_views, lake_views
from lake_platform.settings import LakeSettings
from lake_platform.tables.lake_tables import LakeTables

BUILDING_SUFFIX = ".building"
"""The next version of the warehouse is written to `{LAKE_DUCKDB_PATH}.building`."""
LOCK_SUFFIX = ".lock"
WAL_SUFFIX = ".wal"
TABLES_TABLE = "warehouse_tables"
"""One row per view of the file: which table, snapshot, files and rows (from the catalog; none
for Bronze, read as it is) it reads, and when the file was built."""


@dataclass(frozen=True)
class Macro:
    """A macro of the warehouse, created when every view it reads is in the file."""

    name: str
    reads: tuple[str, ...]
    sql: str
    description: str


MACROS = (
    Macro(
        "bars",
        ("gold.stocks_bars_1m",),
        # DuckDB refuses a macro parameter named like a column of a table it reads
        # ("Conflicting column names"): `sym`, not `symbol`.
        "create macro bars(sym, day) as table "
        "select * from gold.stocks_bars_1m "
        "where symbol = sym and date = cast(day as date) "
        "order by ts_event_ns",
        "The one-minute bars of a symbol on a UTC day, in time order: "
        "`select * from bars('SPY', '2025-12-16')`.",
    ),
    Macro(
        "nbbo_at",
        ("silver.stocks_quotes",),
        # The as-of rule of `gold.stocks_trades_nbbo` with its default age bound (one hour):
        # the last quote in Silver order at or before `ts_ns`; the date filter prunes files.
        "create macro nbbo_at(sym, ts_ns) as table "
        "select * from silver.stocks_quotes "
        "where symbol = sym and ts_event_ns <= ts_ns and ts_event_ns >= ts_ns - 3600000000000 "
        "and date between cast(make_timestamp((ts_ns - 3600000000000) // 1000) as date) "
        "and cast(make_timestamp(ts_ns // 1000) as date) "
        "order by ts_event_ns desc, event_id desc limit 1",
        "The quote of a symbol in force at a time (ns since the epoch): its last Silver quote "
        "at or before it, at most an hour old, as `gold.stocks_trades_nbbo` joins it: "
        "`select * from nbbo_at('SPY', 1765895400123456789)`.",
    ),
)
"""The warehouse's macros."""


@dataclass(frozen=True)
class WarehouseVersion:
    """What one build wrote: the views (with their snapshots), the macros, the file's size."""

    path: str
    views: tuple[TableView, ...]
    macros: tuple[str, ...]
    size_bytes: int


Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]
"""Opens a read-write connection to the build file (`DuckDBResource.get_connection`)."""


def build_warehouse(
    tables: LakeTables, building: str | None = None, connect: Connect | None = None
) -> WarehouseVersion:
    """Build the next version of the lake's warehouse (LAKE_DUCKDB_PATH) in `building`
    (default `building_path`), through `connect` (default: `duckdb.connect(building)`), and
    rename it over the warehouse. The views pin the snapshots current once the refresh lock
    is held, so a refresh that waited for another one still serves what is newest."""
    warehouse = tables.settings.warehouse_path
    building = building or building_path(warehouse)
    check_beside(building, warehouse)
    connect = connect or (lambda: closing(duckdb.connect(building)))
    with refresh_lock(warehouse):
        discard_build(building)
        views = tuple(lake_views(tables))
        with connect() as connection:
            macros = write_warehouse(connection, views, tables.settings)
        size = publish(building, warehouse)
    return WarehouseVersion(warehouse, views, macros, size)


def building_path(warehouse: str) -> str:
    """Where the next version of the warehouse at `warehouse` is written."""
    return f"{warehouse}{BUILDING_SUFFIX}"


def check_beside(building: str, warehouse: str) -> None:
    """Refuse a build file that cannot be renamed over the warehouse atomically: it must be
    another file in the warehouse's folder."""
    built, target = Path(building).resolve(), Path(warehouse).resolve()
    if building == ":memory:" or built == target or built.parent != target.parent:
        raise ValueError(
            f"the warehouse is built in {building!r}, which must be another file in the "
            f"folder of LAKE_DUCKDB_PATH ({warehouse}), such as {building_path(warehouse)}"
        )


@contextmanager
def refresh_lock(warehouse: str) -> Iterator[None]:
    """Hold the warehouse's refresh lock (`{path}.lock`): concurrent refreshes (a scheduled
    one and one launched by hand) would write the same build file. Readers never take it."""
    Path(warehouse).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{warehouse}{LOCK_SUFFIX}", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def discard_build(building: str) -> None:
    """Remove what a failed build left (the file and its write-ahead log)."""
    for path in (building, f"{building}{WAL_SUFFIX}"):
        Path(path).unlink(missing_ok=True)


def write_warehouse(
    connection: duckdb.DuckDBPyConnection,
    views: Sequence[TableView],
    settings: LakeSettings,
    built_at: dt.datetime | None = None,
) -> tuple[str, ...]:
    """The views, the `warehouse_tables` table and the macros whose views exist, written to
    `connection`'s database and checkpointed (the file is whole without its log); the names
    of the macros created."""
    create_views(connection, views, settings)
    built_at = built_at or dt.datetime.now(dt.UTC)
    connection.execute(
        f"create or replace table main.{TABLES_TABLE} (name varchar, tier varchar, "
        "target varchar, snapshot_id bigint, files bigint, rows bigint, built_at timestamptz)"
    )
    if views:
        connection.executemany(
            f"insert into main.{TABLES_TABLE} values (?, ?, ?, ?, ?, ?, ?)",
            [
                [
                    view.name,
                    view.tier,
                    view.target,
                    view.snapshot_id,
                    len(view.files),
                    view.rows,
                    built_at,
                ]
                for view in views
            ],
        )
    present = {view.name for view in views}
    created = tuple(macro.name for macro in MACROS if all(name in present for name in macro.reads))
    for macro in MACROS:
        if macro.name in created:
            connection.execute(macro.sql)
    connection.execute("checkpoint")
    return created


def publish(building: str, warehouse: str) -> int:
    """Rename the closed build file over the warehouse, durably (the file and the rename are
    flushed to disk first), and return its size in bytes."""
    wal = Path(f"{building}{WAL_SUFFIX}")
    if wal.exists():
        raise RuntimeError(f"{building} still has a write-ahead log: its connection is open")
    with open(building, "rb") as built:
        os.fsync(built.fileno())
        size = os.fstat(built.fileno()).st_size
    os.replace(building, warehouse)
    folder = os.open(Path(warehouse).resolve().parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return size
