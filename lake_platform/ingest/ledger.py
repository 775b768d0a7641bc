"""The ledger: one small JSON file per committed batch, written after its Parquet files
and before its messages are acked.

It is what makes Bronze observable without trusting any process's memory: the Dagster
sensor reports materializations from it (so batches of a tick that timed out, or of the
standalone service, are still reported), and it records which files hold which stream
sequences. Entries are filed by commit hour: `_ledger/date=YYYY-MM-DD/hour=HH/{id}.json`.
"""

import datetime as dt
import logging
import re
import secrets
from collections.abc import Iterator
from typing import NamedTuple

import msgspec

from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder, ledger_file
from lake_platform.timestamps import HOUR_NS

ENTRY_ID = re.compile(r"[0-9]{19}-[0-9a-zA-Z]+")
"""The shape of an entry's id (`new_entry_id`: commit time, a unique suffix); a file under
`_ledger/` named otherwise is not an entry."""

log = logging.getLogger(__name__)


class CommittedFile(msgspec.Struct, frozen=True):
    """One file of a commit: a Bronze partition file or a quarantine file."""

    path: str
    table: str | None
    stream: str
    rows: int
    bytes: int
    first_seq: int | None
    last_seq: int | None
    partition_value: str | None = None
    hour_start_ns: int | None = None
    subject: str | None = None


class LedgerEntry(msgspec.Struct, frozen=True):
    """A committed batch. `reported` is true when its writer already recorded it in Dagster."""

    entry_id: str
    committed_ns: int
    writer: str
    reported: bool
    files: tuple[CommittedFile, ...]
    quarantine: tuple[CommittedFile, ...]
    unknown_field_messages: dict[str, int] = {}

    @property
    def committed(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.committed_ns / 1e9, tz=dt.UTC)


def new_entry_id(committed_ns: int) -> str:
    """Sortable by commit time, unique across writers."""
    return f"{committed_ns:019d}-{secrets.token_hex(6)}"


def write_entry(store: LakeStore, entry: LedgerEntry) -> str:
    """Write the entry atomically; returns its path."""
    path = ledger_file(entry.committed, entry.entry_id)
    store.write_bytes(msgspec.json.encode(entry), path)
    return path


def committed_ns_of(entry_id: str) -> int:
    """An entry's commit time, the first part of its id."""
    return int(entry_id.split("-", 1)[0])


class StoredEntry(NamedTuple):
    """A listed ledger entry and when the store recorded it (the store's clock, one clock
    for every writer, unlike the commit time in the entry's id)."""

    entry_id: str
    path: str
    stored_ns: int


def _listed_hours(
    store: LakeStore, since_ns: int, until_ns: int, *, with_times: bool
) -> Iterator[tuple[str, str, int | None]]:
    """(entry id, relative path, when the store recorded it) of every entry filed under the
    commit hours from `since_ns` to `until_ns` (that time is listed only `with_times`, else
    None); a file under `_ledger/` not named like an entry is skipped with a warning."""
    hour_ns = since_ns // HOUR_NS * HOUR_NS
    while hour_ns <= until_ns:
        hour = dt.datetime.fromtimestamp(hour_ns / 1e9, tz=dt.UTC)
        folder = f"_ledger/{hour_folder(hour)}"
        listed = (
            store.list_files_with_mtime(folder, suffix=".json")
            if with_times
            else dict.fromkeys(store.list_files(folder, suffix=".json"))
        )
        for path, stored_ns in listed.items():
            entry_id = path.rsplit("/", 1)[-1].removesuffix(".json")
            if not ENTRY_ID.fullmatch(entry_id):
                log.warning("ignoring %s under _ledger/: not a ledger entry's name", path)
                continue
            yield entry_id, path, stored_ns
        hour_ns += HOUR_NS


def list_entries(
    store: LakeStore, since_ns: int, until_ns: int, known: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """(entry id, path) of the entries committed from `since_ns` to `until_ns` whose ids are
    not `known`, oldest first; only the commit hours in that span are listed, nothing is read."""
    found = [
        (entry_id, path)
        for entry_id, path, _ in _listed_hours(store, since_ns, until_ns, with_times=False)
        if entry_id not in known and committed_ns_of(entry_id) >= since_ns
    ]
    return sorted(found)


def list_stored_entries(store: LakeStore, since_ns: int, until_ns: int) -> list[StoredEntry]:
    """Every entry filed under the commit hours from `since_ns` to `until_ns`, with the time
    the store recorded it (its commit time on a store that tells none), in the order they
    were stored (ties by id); nothing is read."""
    found = [
        StoredEntry(entry_id, path, committed_ns_of(entry_id) if stored_ns is None else stored_ns)
        for entry_id, path, stored_ns in _listed_hours(store, since_ns, until_ns, with_times=True)
    ]
    return sorted(found, key=lambda entry: (entry.stored_ns, entry.entry_id))


def read_entry_files(store: LakeStore, paths: list[str]) -> list[LedgerEntry]:
    """The entries stored at `paths`, in that order (read concurrently on S3); a file that
    is not a valid entry is skipped with a warning, so one stray file never stops reporting."""
    entries = []
    for path, body in zip(paths, store.read_many_bytes(paths), strict=True):
        try:
            entries.append(msgspec.json.decode(body, type=LedgerEntry))
        except msgspec.DecodeError as error:  # ValidationError is a DecodeError
            log.warning("skipping %s: not a valid ledger entry: %s", path, error)
    return entries


def read_entries(
    store: LakeStore, since_ns: int, until_ns: int, known: frozenset[str] = frozenset()
) -> list[LedgerEntry]:
    """Entries committed from `since_ns` to `until_ns` whose ids are not `known`, oldest first."""
    listed = list_entries(store, since_ns, until_ns, known)
    return read_entry_files(store, [path for _, path in listed])
