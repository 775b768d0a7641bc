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

import msgspec

from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder, ledger_file

HOUR_NS = 3_600 * 10**9
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


def list_entries(
    store: LakeStore, since_ns: int, until_ns: int, known: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """(entry id, path) of the entries committed from `since_ns` to `until_ns` whose ids are
    not `known`, oldest first; only the commit hours in that span are listed, nothing is read."""
    found = []
    hour_ns = since_ns // HOUR_NS * HOUR_NS
    while hour_ns <= until_ns:
        hour = dt.datetime.fromtimestamp(hour_ns / 1e9, tz=dt.UTC)
        for path in store.list_files(f"_ledger/{hour_folder(hour)}", suffix=".json"):
            entry_id = path.rsplit("/", 1)[-1].removesuffix(".json")
            if not ENTRY_ID.fullmatch(entry_id):
                log.warning("ignoring %s under _ledger/: not a ledger entry's name", path)
                continue
            if entry_id not in known and committed_ns_of(entry_id) >= since_ns:
                found.append((entry_id, path))
        hour_ns += HOUR_NS
    return sorted(found)


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
