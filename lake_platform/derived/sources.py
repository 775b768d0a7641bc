"""The input files of one hour of a derived table, by partition-value folder.

A Bronze input (Hive, append-only) is listed, the value folders planned from the ledger when
that is cheaper (`inputs.py`). A Silver input (Gold bars) is an Iceberg table: its hour is the
files of one snapshot, pinned when the rebuild starts, never a folder listing (which would
also see the files of retained older versions).
"""

import datetime as dt
import time
from dataclasses import dataclass

from pyiceberg.table import Table

from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.hour_files import hour_files, value_hour_folder
from lake_platform.derived.inputs import hour_value_folders
from lake_platform.storage.store import APPEND_ONLY_TIER
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.tables.time_travel import snapshot_as_of


@dataclass(frozen=True)
class HourInputs:
    """An hour's input files by value folder (`symbol=SPY`), each folder's in name order.

    `values`: the value folders whose hour was listed when the ledger named them (else None:
    every folder); `snapshot_id`: the snapshot of a Silver input the files are of.
    """

    files: dict[str, list[str]]
    values: list[str] | None = None
    snapshot_id: int | None = None


def hour_inputs(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, as_of: str | None = None
) -> HourInputs:
    """The files of `table`'s input for `hour`, as they are now; a Silver input's as of
    `as_of` (a tag, snapshot id or time: `time_travel.snapshot_as_of`) when given."""
    source = _source_table(tables, table)
    if source is None:
        planned = hour_value_folders(tables.store, table.source, hour, time.time_ns())
        files = hour_files(tables.store, table.source, hour, planned.folders)
        return HourInputs(files, planned.folders if planned.from_ledger else None)
    if source is _NOT_CREATED or source.current_snapshot() is None:
        return HourInputs({})
    snapshot = source.current_snapshot() if as_of is None else snapshot_as_of(source, as_of)
    snapshot_id = snapshot.snapshot_id
    return HourInputs(hour_paths(source, hour, snapshot_id), snapshot_id=snapshot_id)


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
    """Whether the hour of a Silver input holds other files now than `inputs` (read from the
    snapshot then current): a Silver rebuild committed it meanwhile."""
    source = _source_table(tables, table)
    if source is None or source is _NOT_CREATED or source.current_snapshot() is None:
        return False
    if source.current_snapshot().snapshot_id == inputs.snapshot_id:
        return False
    return hour_paths(source, hour) != inputs.files


_NOT_CREATED = object()
"""A derived input that has no table in the catalog yet: it has no files."""


def _source_table(tables: LakeTables, table: DerivedTable) -> Table | object | None:
    """The Iceberg table of a derived input as it is now (`_NOT_CREATED` when the catalog has
    none); None for a Bronze input."""
    if is_listed(table):
        return None
    return tables.existing(table.source) or _NOT_CREATED
