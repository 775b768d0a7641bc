"""An hour of a table in a snapshot, and replacing it in one commit.

**One commit per (table, hour)**, covering every partition value of the hour: a rebuild
derives all the hour's values (the ledger names them all, `derived/inputs.py`), so the hour
is replaced whole — values that lost their input lose their files in the same snapshot — and
a reader of the hour sees it entirely old or entirely new. One commit per value would cost a
commit (tens of ms, a snapshot, a manifest) per value and let a reader see the hour half
rebuilt.

The commit removes the hour's files that the new set lacks and adds the new files it lacks
(content-addressed names: a file in both is the same bytes and stays), so an unchanged
rebuild commits nothing and leaves no empty snapshot. Its conflict predicate is the hour's
partition *and* its `ts_event_ns` range: pyiceberg's conflict check evaluates column
statistics only, and the folder columns have none in the files, so without the range every
concurrent commit of another hour would conflict. A concurrent commit of the same hour makes
this one fail with `HourConflict` (never two versions live): the caller rebuilds, bounded.
Commits that only lost the race for the catalog's row are retried by pyiceberg
(`commit.retry.num-retries`).
"""

import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from pyiceberg.exceptions import ValidationException
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from lake_platform.tables.data_files import NewFile, data_files, file_uri, lake_path
from lake_platform.tables.schema import DATE_COLUMN, HOUR_COLUMN, LAKE_PATH_PROPERTY
from lake_platform.timestamps import HOUR_NS

HOUR_PROPERTY = "lake.hour"
RUN_ID_PROPERTY = "lake.dagster_run_id"
INPUTS_PROPERTY = "lake.inputs_sha256"
HOUR_FORMAT = "%Y-%m-%dT%H:00:00Z"
TIME_COLUMN = "ts_event_ns"


class HourConflict(RuntimeError):
    """Another commit changed the hour since its files were read: rebuild the hour."""


def hour_predicate(hour: dt.datetime) -> BooleanExpression:
    """The hour's partition: `date` and `hour` equal to the hour's."""
    return And(EqualTo(DATE_COLUMN, hour.date().isoformat()), EqualTo(HOUR_COLUMN, hour.hour))


def conflict_predicate(hour: dt.datetime) -> BooleanExpression:
    """The hour's partition and its `ts_event_ns` range (see the module docstring)."""
    start = int(hour.timestamp()) * 1_000_000_000
    return And(
        hour_predicate(hour),
        And(GreaterThanOrEqual(TIME_COLUMN, start), LessThan(TIME_COLUMN, start + HOUR_NS)),
    )


def hour_files(table: Table, hour: dt.datetime, snapshot_id: int | None = None) -> list[DataFile]:
    """The data files of the hour in a snapshot (the table's current one by default), by
    path: what the checks of a committed hour read."""
    scan = table.scan(row_filter=hour_predicate(hour), snapshot_id=snapshot_id)
    return sorted((task.file for task in scan.plan_files()), key=lambda file: file.file_path)


def hour_paths(
    table: Table, hour: dt.datetime, snapshot_id: int | None = None
) -> dict[str, list[str]]:
    """The lake paths of the hour's files in a snapshot (the current one by default), by
    partition-value folder (`symbol=SPY`), each folder's in name order."""
    found: dict[str, list[str]] = {}
    prefix = f"{table.metadata.properties[LAKE_PATH_PROPERTY]}/"
    for file in hour_files(table, hour, snapshot_id):
        path = lake_path(table, file)
        found.setdefault(path.removeprefix(prefix).split("/", 1)[0], []).append(path)
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class HourCommit:
    """What replacing an hour did: the snapshot made (None when the hour already held
    exactly the new files) and the files it added and removed."""

    snapshot_id: int | None
    files_added: int
    files_removed: int


def snapshot_properties(hour: dt.datetime, run_id: str, inputs_sha256: str) -> dict[str, str]:
    """The summary properties of an hour's commit: the hour, the Dagster run, the inputs."""
    return {
        HOUR_PROPERTY: hour.strftime(HOUR_FORMAT),
        RUN_ID_PROPERTY: run_id,
        INPUTS_PROPERTY: inputs_sha256,
    }


def replace_hour(
    table: Table,
    hour: dt.datetime,
    new_files: Sequence[NewFile],
    properties: Mapping[str, str],
    expected: Collection[str] | None = None,
) -> HourCommit:
    """Make `new_files` the hour's files in one snapshot (none when the hour already holds
    exactly these files).

    `expected`: the lake paths of the hour's files when the rebuild read its inputs. When the
    hour holds other files now, another run committed it meanwhile, from inputs this run may
    not have seen: `HourConflict` (the caller rebuilds) rather than replacing a newer version
    with an older one. Without `expected`, the hour's files now are replaced. A concurrent
    commit between reading the hour and committing is a `HourConflict` too, unless it left
    exactly these files.
    """
    if hour.utcoffset() is None or hour.utcoffset() != dt.timedelta(0) or hour.minute:
        raise ValueError(f"an hour is a whole UTC datetime, got {hour!r}")
    table.refresh()
    wanted = {file_uri(table, file.path): file for file in new_files}
    current = hour_files(table, hour)
    current_paths = {file.file_path for file in current}
    if current_paths == set(wanted):
        return HourCommit(None, 0, 0)
    if expected is not None and current_paths != {file_uri(table, path) for path in expected}:
        raise _conflict(table, hour, "another run committed the hour since this one read it")
    removed = [file for file in current if file.file_path not in wanted]
    added = [file for uri, file in wanted.items() if uri not in current_paths]
    try:
        _commit(table, hour, removed, data_files(table, hour, added), properties)
    except ValidationException as error:
        table.refresh()
        if {file.file_path for file in hour_files(table, hour)} == set(wanted):
            return HourCommit(None, 0, 0)
        raise _conflict(table, hour, f"another commit changed the hour ({error})") from error
    snapshot = table.current_snapshot()
    return HourCommit(None if snapshot is None else snapshot.snapshot_id, len(added), len(removed))


def _conflict(table: Table, hour: dt.datetime, why: str) -> HourConflict:
    return HourConflict(
        f"{'.'.join(table.name())} hour {hour.strftime(HOUR_FORMAT)}: {why}; rebuild the hour"
    )


def _commit(
    table: Table,
    hour: dt.datetime,
    removed: Sequence[DataFile],
    added: Sequence[DataFile],
    properties: Mapping[str, str],
) -> None:
    """One overwrite snapshot: `removed` out, `added` in, conflicts scoped to the hour."""
    with table.transaction() as transaction:
        update = transaction.update_snapshot(snapshot_properties=dict(properties))
        with update.overwrite() as overwrite:
            overwrite.delete_by_predicate(conflict_predicate(hour))
            for file in removed:
                overwrite.delete_data_file(file)
            for file in added:
                overwrite.append_data_file(file)
