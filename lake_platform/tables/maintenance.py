"""Maintenance of the Iceberg tables: expire old snapshots, delete the files nothing needs.

`expire_snapshots()` removes snapshots from the metadata only; the files are ours to delete.
Per table, in this order:

1. **Expire** every snapshot that is neither current nor tagged (nor a branch head) and
   stopped being current more than the retention ago (`LAKE_SNAPSHOT_RETENTION`): the time it
   was *superseded*, from the snapshot log, not its commit time, so a read that started on it
   just before a commit still has the retention to finish.
2. **Read what the kept snapshots reference** (the table refreshed, so commits that landed
   meanwhile count): their manifest lists, manifests and *live* data files (a manifest
   entry marked deleted is not part of its snapshot: pyiceberg carries delete-only manifests
   forward indefinitely), the current metadata.json and those of its metadata log, and
   statistics files.
3. **List** the table's data folder and its metadata folder (`_iceberg/{target}/metadata`),
   with the store's modification times, and delete what step 2 does not name:
   - manifest lists and manifests of expired snapshots, at once (uuid names: never written
     again);
   - data files live only in expired snapshots, unless written after the expiry cut-off: a
     content-addressed path is written again by a rebuild that produces the same bytes, and
     that rebuild may be about to commit it; such a file waits for the orphan rule;
   - any other file (a run that died between writing and committing, a failed commit's
     metadata, a file of a snapshot expired by an earlier run that stopped midway) once it
     is older than the grace period, which must exceed the longest rebuild: the files of a
     rebuild in flight are referenced by no snapshot yet.

The kept set is read before the listing, so a file committed after the read is either one
a kept snapshot already referenced or one written recently (younger than the grace); a last
refresh just before deleting spares the files of any snapshot committed meanwhile (a rerun
reusing a file that looked orphaned). What remains is the instant between that refresh and
the deletion: a writer that finds its content-addressed file already there renews its
modification time (locally it touches it, on S3 it uploads it again), so such a file is never
older than the grace period while a rerun may still commit it. In the data folder only files
of the table's own layout and names (`{col}=…/date=…/hour=…/part-NNNNN-{16 hex}.parquet`),
written after the table was created (`lake.created-ms`), are candidates, and only once the
table has a snapshot: files an older writer left, or those of a catalog that was lost and
recovered for some dates only, are never taken for orphans.

Manifests are not compacted here (`manifests.py`).
"""

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import pairwise

from pyiceberg.manifest import ManifestFile
from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import (
    RemoveSnapshotsUpdate,
    UpdatesAndRequirements,
    UpdateTableMetadata,
)

from lake_platform.derived.declaration import DerivedTable
from lake_platform.tables.data_files import lake_path
from lake_platform.tables.identifiers import metadata_location
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.tables.naming import DIGEST_CHARS
from lake_platform.tables.schema import CREATED_PROPERTY
from lake_platform.tables.tags import retry_metadata_commit, tags

GRACE_S = 6 * 3_600.0
"""Age past which a file no snapshot references is deleted: longer than the longest rebuild
(its files are referenced by no snapshot until it commits)."""
MANIFEST_READ_THREADS = 16
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
DATA_FILE = re.compile(
    rf"[^/]+=[^/]+/date=\d{{4}}-\d{{2}}-\d{{2}}/hour=\d{{2}}/part-\d{{5}}-[0-9a-f]{{{DIGEST_CHARS}}}"
    r"\.parquet"
)
"""A data file of a table, relative to its folder: the only names the data sweep deletes."""


@dataclass(frozen=True)
class MaintenanceReport:
    """What maintenance did to one table (lake paths of the files deleted)."""

    table: str
    snapshots_expired: tuple[int, ...]
    data_files: tuple[str, ...]
    """Data files that only expired snapshots referenced."""
    manifests: tuple[str, ...]
    manifest_lists: tuple[str, ...]
    orphans: tuple[str, ...]
    """Files no snapshot references, older than the grace period (data or metadata)."""
    snapshots_kept: int
    tags: int

    @property
    def deleted(self) -> tuple[str, ...]:
        """Every file deleted."""
        return (*self.data_files, *self.manifests, *self.manifest_lists, *self.orphans)

    def metadata(self) -> dict[str, int]:
        """Counts for a Dagster materialization or log."""
        return {
            "snapshots_expired": len(self.snapshots_expired),
            "data_files_deleted": len(self.data_files),
            "manifests_deleted": len(self.manifests),
            "manifest_lists_deleted": len(self.manifest_lists),
            "orphans_deleted": len(self.orphans),
            "snapshots_kept": self.snapshots_kept,
            "tags": self.tags,
        }


@dataclass(frozen=True)
class LakeMaintenance:
    """What `maintain` did: a report per table (by lake path) and the leftover temporary
    files of killed writes swept from the whole lake (the store sweeps them lake-wide)."""

    tables: dict[str, MaintenanceReport]
    temporaries: tuple[str, ...]

    def metadata(self) -> dict[str, int]:
        """The tables' counts summed (`snapshots_kept`, `tags` too), and the temporaries."""
        totals = {"tables": len(self.tables), "temporaries_deleted": len(self.temporaries)}
        for report in self.tables.values():
            for name, count in report.metadata().items():
                totals[name] = totals.get(name, 0) + count
        return totals


@dataclass(frozen=True)
class _References:
    """The files some snapshots reference, as lake paths."""

    manifest_lists: frozenset[str]
    manifests: frozenset[str]
    data_files: frozenset[str]


def maintain(
    tables: LakeTables,
    derived_tables: Iterable[DerivedTable],
    *,
    now: dt.datetime | None = None,
    retention_s: float | None = None,
    grace_s: float = GRACE_S,
) -> LakeMaintenance:
    """`maintain_table` for each table, then the lake's leftover temporaries swept."""
    now = now or dt.datetime.now(dt.UTC)
    reports = {
        table.target: maintain_table(
            tables, table, now=now, retention_s=retention_s, grace_s=grace_s
        )
        for table in derived_tables
    }
    return LakeMaintenance(reports, tuple(tables.store.sweep_temporaries()))


def maintain_table(
    tables: LakeTables,
    table: DerivedTable,
    *,
    now: dt.datetime | None = None,
    retention_s: float | None = None,
    grace_s: float = GRACE_S,
) -> MaintenanceReport:
    """Expire the table's old untagged snapshots and delete the files nothing kept needs
    (see the module). `retention_s` defaults to `LAKE_SNAPSHOT_RETENTION`; `now` (aware) to
    the present."""
    now = now or dt.datetime.now(dt.UTC)
    if now.utcoffset() is None:
        raise ValueError(f"now must be an aware datetime, got {now!r}")
    retention_s = tables.settings.snapshot_retention_s if retention_s is None else retention_s
    expiry_cutoff_ns = _ns(now) - int(retention_s * 1e9)
    grace_cutoff_ns = _ns(now) - int(grace_s * 1e9)
    root = tables.root_url
    iceberg = tables.table(table)
    expired = _expire(iceberg, expiry_cutoff_ns // 1_000_000)

    iceberg.refresh()
    kept_snapshots = iceberg.snapshots()
    kept = _references(root, iceberg, kept_snapshots, frozenset())
    gone = _references(root, iceberg, expired, kept.manifests)
    kept_metadata = kept.manifest_lists | kept.manifests | _metadata_files(root, iceberg)

    listed_metadata, listed_data = _listed(tables, table, with_data=bool(kept_snapshots))
    data_files = _deletable(listed_data, kept.data_files, gone.data_files, expiry_cutoff_ns)
    manifest_lists = _deletable(listed_metadata, kept_metadata, gone.manifest_lists, None)
    manifests = _deletable(listed_metadata, kept_metadata, gone.manifests, None)
    accounted = (
        kept_metadata | kept.data_files | gone.data_files | gone.manifests | gone.manifest_lists
    )
    listed = {**listed_data, **listed_metadata}
    created_ns = int(iceberg.metadata.properties.get(CREATED_PROPERTY, "0")) * 1_000_000
    orphans = [
        path
        for path in _deletable(listed, accounted, frozenset(listed), grace_cutoff_ns)
        if (listed[path] or 0) >= created_ns
    ]

    recommitted = _committed_since(root, iceberg, kept_snapshots, kept.manifests)
    data_files, manifests, manifest_lists, orphans = (
        [path for path in paths if path not in recommitted]
        for paths in (data_files, manifests, manifest_lists, orphans)
    )
    tables.store.delete([*manifest_lists, *manifests, *data_files, *orphans])
    return MaintenanceReport(
        table=table.target,
        snapshots_expired=tuple(snapshot.snapshot_id for snapshot in expired),
        data_files=tuple(data_files),
        manifests=tuple(manifests),
        manifest_lists=tuple(manifest_lists),
        orphans=tuple(orphans),
        snapshots_kept=len(kept_snapshots),
        tags=len(tags(iceberg)),
    )


def _listed(
    tables: LakeTables, table: DerivedTable, *, with_data: bool
) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """The files of the table's metadata folder and (`with_data`) the data files of its
    folder that have its layout and names (`DATA_FILE`), each with its modification time."""
    root = tables.root_url
    metadata_folder = metadata_location(root, table.target).removeprefix(f"{root}/")
    metadata = tables.store.list_files_with_mtime(metadata_folder, "")
    if not with_data:
        return metadata, {}
    data = tables.store.list_files_with_mtime(table.target)
    prefix = f"{table.target}/"
    return metadata, {
        path: modified
        for path, modified in data.items()
        if DATA_FILE.fullmatch(path.removeprefix(prefix))
    }


def _deletable(
    listed: dict[str, int | None],
    kept: frozenset[str],
    candidates: frozenset[str],
    written_before_ns: int | None,
) -> list[str]:
    """The listed `candidates` not in `kept`, last written before `written_before_ns` (any
    time when None; never when the store tells no time), sorted."""
    return sorted(
        path
        for path, modified in listed.items()
        if path in candidates
        and path not in kept
        and (written_before_ns is None or (modified is not None and modified <= written_before_ns))
    )


def _committed_since(
    root_url: str, table: Table, known: Sequence[Snapshot], known_manifests: frozenset[str]
) -> frozenset[str]:
    """Every file the snapshots committed since `known` was read reference (the table
    refreshed), with the table's metadata files now: the last look before deleting, so a
    commit that landed while the files were read and listed (a rebuild reusing a file that
    looked orphaned) keeps its files."""
    table.refresh()
    seen = {snapshot.snapshot_id for snapshot in known}
    new = [snapshot for snapshot in table.snapshots() if snapshot.snapshot_id not in seen]
    found = _references(root_url, table, new, known_manifests)
    return (
        found.data_files | found.manifests | found.manifest_lists | _metadata_files(root_url, table)
    )


def expirable(metadata: TableMetadata, cutoff_ms: int) -> list[int]:
    """Ids of the snapshots that are neither current nor referenced by a tag or branch and
    stopped being current before `cutoff_ms` (a snapshot never current: its commit time)."""
    protected = {ref.snapshot_id for ref in metadata.refs.values()}
    if metadata.current_snapshot_id is not None:
        protected.add(metadata.current_snapshot_id)
    log = metadata.snapshot_log
    superseded = {entry.snapshot_id: following.timestamp_ms for entry, following in pairwise(log)}
    return [
        snapshot.snapshot_id
        for snapshot in metadata.snapshots
        if snapshot.snapshot_id not in protected
        and superseded.get(snapshot.snapshot_id, snapshot.timestamp_ms) < cutoff_ms
    ]


def _expire(table: Table, cutoff_ms: int) -> list[Snapshot]:
    """Expire the expirable snapshots in one commit (retried against the refreshed table
    when a concurrent commit took the catalog row); the snapshots expired."""

    def attempt() -> list[Snapshot]:
        metadata = table.metadata
        ids = expirable(metadata, cutoff_ms)
        if ids:
            _ExpireByIds(Transaction(table, autocommit=True), ids).commit()
        expired = set(ids)
        return [snapshot for snapshot in metadata.snapshots if snapshot.snapshot_id in expired]

    return retry_metadata_commit(table, attempt)


class _ExpireByIds(UpdateTableMetadata["_ExpireByIds"]):
    """Remove the snapshots `ids` in one metadata update: what pyiceberg's `ExpireSnapshots`
    commits, without its `by_ids`, which copies the whole table metadata once per id (9 s
    for 150 snapshots). The ids come from `expirable`, which skips every protected one."""

    def __init__(self, transaction: Transaction, ids: Sequence[int]) -> None:
        super().__init__(transaction)
        self._ids = list(ids)

    def _commit(self) -> UpdatesAndRequirements:
        return (RemoveSnapshotsUpdate(snapshot_ids=self._ids),), ()


def _references(
    root_url: str, table: Table, snapshots: Sequence[Snapshot], skip: frozenset[str]
) -> _References:
    """The manifest lists and manifests of `snapshots`, and the live data files of those
    manifests not in `skip` (lake paths of manifests whose files are counted elsewhere).
    Manifest lists and manifests are read concurrently."""
    with ThreadPoolExecutor(MANIFEST_READ_THREADS) as pool:
        listed = list(pool.map(lambda snapshot: snapshot.manifests(table.io), snapshots))
        manifests: dict[str, ManifestFile] = {}
        for manifest in (manifest for found in listed for manifest in found):
            path = _relative(root_url, manifest.manifest_path)
            if path is not None:
                manifests[path] = manifest
        to_read = [manifest for path, manifest in manifests.items() if path not in skip]
        entries = pool.map(lambda manifest: manifest.fetch_manifest_entry(table.io), to_read)
        data_files = frozenset(
            lake_path(table, entry.data_file) for found in entries for entry in found
        )
    manifest_lists = (_relative(root_url, snapshot.manifest_list) for snapshot in snapshots)
    return _References(
        manifest_lists=frozenset(path for path in manifest_lists if path is not None),
        manifests=frozenset(manifests),
        data_files=data_files,
    )


def _metadata_files(root_url: str, table: Table) -> frozenset[str]:
    """The table's current metadata.json, those of its metadata log, its statistics files."""
    metadata = table.metadata
    uris = [
        table.metadata_location,
        *(entry.metadata_file for entry in metadata.metadata_log),
        *(statistics.statistics_path for statistics in metadata.statistics),
        *(statistics.statistics_path for statistics in metadata.partition_statistics),
    ]
    paths = (_relative(root_url, uri) for uri in uris)
    return frozenset(path for path in paths if path is not None)


def _relative(root_url: str, uri: str) -> str | None:
    """The lake path of a file below the lake root, None for a file elsewhere."""
    prefix = f"{root_url.rstrip('/')}/"
    return uri.removeprefix(prefix) if uri.startswith(prefix) else None


def _ns(moment: dt.datetime) -> int:
    """Nanoseconds since the epoch, as the store's modification times."""
    return (moment - EPOCH) // dt.timedelta(microseconds=1) * 1_000
