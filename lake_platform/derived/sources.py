"""The input files of one hour of a derived table, by partition-value folder.

A Bronze input (Hive, append-only) is listed, the value folders planned from the ledger when
that is cheaper (`inputs.py`). A Silver input (Gold bars, the as-of tables' trades, quotes and
greeks) is an Iceberg table: its hour is the files of one snapshot, pinned when the rebuild
starts, never a folder listing (which would also see the files of retained older versions).
A table read for several inputs (trades of the hour and of the hour before) is pinned once.
"""

import datetime as dt
import time
from dataclasses import dataclass, field

import polars as pl

from lake_platform.derived.declaration import DerivedTable, with_partition_value
from lake_platform.derived.hour_files import hour_files, value_hour_folder
from lake_platform.derived.inputs import hour_value_folders
from lake_platform.storage import LakeStore
from lake_platform.storage.store import APPEND_ONLY_TIER
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.tables.time_travel import snapshot_as_of


@dataclass(frozen=True)
class HourInputs:
    """An hour's input files by value folder (`symbol=SPY`), each folder's in name order.

    `values`: the value folders whose hour was listed when the ledger named them (else None:
    every folder); `snapshot_id`: the snapshot of a Silver input the files are of. `lookups`:
    each of the table's lookups' files (by lookup name, then value folder), and
    `lookup_snapshots` the snapshot of each lookup's table they are of (by lake path).
    """

    files: dict[str, list[str]]
    values: list[str] | None = None
    snapshot_id: int | None = None
    lookups: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    lookup_snapshots: dict[str, int | None] = field(default_factory=dict)


def hour_inputs(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, as_of: str | None = None
) -> HourInputs:
    """The files of `table`'s inputs for `hour`, as they are now; a Silver input's as of
    `as_of` (a tag, snapshot id or time: `time_travel.snapshot_as_of`) when given. Each Silver
    table read is pinned to one snapshot for the source and every lookup of it."""
    snapshots = {
        path: _pinned_snapshot(tables, path, as_of)
        for path in dict.fromkeys(lookup.source for lookup in table.lookups)
    }
    lookups = {
        lookup.name: _snapshot_hour(tables, lookup.source, lookup.hour(hour), snapshots)
        for lookup in table.lookups
    }
    if is_listed(table):
        planned = hour_value_folders(tables.store, table.source, hour, time.time_ns())
        files = hour_files(tables.store, table.source, hour, planned.folders)
        values = planned.folders if planned.from_ledger else None
        return HourInputs(files, values, lookups=lookups, lookup_snapshots=snapshots)
    snapshots.setdefault(table.source, _pinned_snapshot(tables, table.source, as_of))
    files = _snapshot_hour(tables, table.source, hour, snapshots)
    snapshot_id = snapshots[table.source]
    return HourInputs(files, None, snapshot_id, lookups, snapshots)


def _pinned_snapshot(tables: LakeTables, path: str, as_of: str | None) -> int | None:
    """The snapshot of a Silver table (`path`) read now, or as of `as_of`; None when it has
    none (or no table yet)."""
    source = tables.existing(path)
    if source is None or source.current_snapshot() is None:
        return None
    snapshot = source.current_snapshot() if as_of is None else snapshot_as_of(source, as_of)
    return None if snapshot is None else snapshot.snapshot_id


def _snapshot_hour(
    tables: LakeTables, path: str, hour: dt.datetime, snapshots: dict[str, int | None]
) -> dict[str, list[str]]:
    """The files of `hour` of a Silver table in its pinned snapshot, by value folder."""
    snapshot_id, source = snapshots[path], tables.existing(path)
    if snapshot_id is None or source is None:
        return {}
    return hour_paths(source, hour, snapshot_id)


def is_listed(table: DerivedTable) -> bool:
    """Whether the table's input is Bronze, whose value-hours are listed (else a Silver table
    read through the catalog)."""
    return table.source.split("/", 1)[0] == APPEND_ONLY_TIER


def listed_value_inputs(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, value_folder: str
) -> list[str]:
    """The Bronze input files of one value-hour now (to tell whether they grew meanwhile)."""
    return tables.store.list_files(value_hour_folder(table.source, value_folder, hour))


def catalog_inputs_changed(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, inputs: HourInputs
) -> bool:
    """Whether an hour read from a Silver table (the source's, a lookup's) holds other files
    now than in `inputs` (read from the snapshots then current): a Silver rebuild committed
    it meanwhile."""
    read = [
        (lookup.source, lookup.hour(hour), inputs.lookups[lookup.name]) for lookup in table.lookups
    ]
    pinned = dict(inputs.lookup_snapshots)
    if not is_listed(table):
        read.append((table.source, hour, inputs.files))
        pinned[table.source] = inputs.snapshot_id
    for path, read_hour, files in read:
        source = tables.existing(path)
        current = None if source is None else source.current_snapshot()
        if current is None or current.snapshot_id == pinned.get(path):
            continue
        if hour_paths(source, read_hour) != files:
            return True
    return False


def lookup_frames(
    store: LakeStore,
    table: DerivedTable,
    value_folder: str,
    lookups: dict[str, dict[str, list[str]]],
) -> dict[str, pl.DataFrame]:
    """Each lookup's rows for the source's `value_folder` (its files in `lookups`, the pinned
    ones), with the lookup's partition column from its folder; empty of its schema when it
    has none."""
    frames = {}
    for lookup in table.lookups:
        folder = lookup.value_folder(value_folder)
        files = lookups.get(lookup.name, {}).get(folder)
        if not files:
            frames[lookup.name] = pl.DataFrame(schema=lookup.schema)
            continue
        rows = store.read_parquet(files, lookup.columns)
        frames[lookup.name] = with_partition_value(rows, lookup.partition_column, folder)
    return frames
