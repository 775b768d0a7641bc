"""`tables_of(store)`: the `LakeTables` (store + Iceberg catalog) of a test's lake store, and
the files an hour of a derived table holds in its current snapshot.

A local store's catalog is its lake's default SQLite file; an S3 store needs the settings it
was made from (`conftest.s3_settings` gives every test bucket a catalog). One `LakeTables` per
store, so its tables are loaded once.
"""

import datetime as dt
import weakref

from lake_platform.derived.declaration import DerivedTable
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables

_OPENED: "weakref.WeakKeyDictionary[LakeStore, LakeTables]" = weakref.WeakKeyDictionary()


def tables_of(store: LakeStore, settings: LakeSettings | None = None) -> LakeTables:
    """The store's lake with its catalog (`settings` required for a store not on local disk)."""
    opened = _OPENED.get(store)
    if opened is None:
        if settings is None:
            if not store.is_local:
                raise ValueError("a store on S3 needs its settings to find its catalog")
            settings = LakeSettings(data_root=store.root)
        opened = _OPENED[store] = open_lake_tables(settings, store)
    return opened


def committed_files(
    store: LakeStore, table: DerivedTable, hour: dt.datetime
) -> dict[str, list[str]]:
    """The lake paths of `table`'s hour in its current snapshot, by value folder."""
    iceberg = tables_of(store).existing(table.target)
    return {} if iceberg is None else hour_paths(iceberg, hour)


def committed_file(store: LakeStore, table: DerivedTable, hour: dt.datetime, value: str) -> str:
    """The one file of a value-hour (`value` = `symbol=SPY`) in the current snapshot."""
    (path,) = committed_files(store, table, hour)[value]
    return path
