"""Which partition-value folders one hour of a derived table's input has: from the ledger
when that is cheaper than listing, and complete.

The lake is laid out value first (`{col}={value}/date=…/hour=…`), so finding one hour's files
by listing takes one LIST per value the table has ever seen (an options table with 20k
underlyings: 20k LISTs for an hour with 5 values). The ledger names every Bronze file with
its table, value folder (in its path) and hour, filed by commit hour: a file of hour H is
committed from H − 1 h on (the contract accepts events up to 1 h ahead of the writer's
clock), so the entries committed since then name every value of the hour. A Silver input
(Gold bars) has the values of its Bronze table.

The ledger is used when it covers the hour (it started at least an hour before it: files
written before the ledger have no entry) and reading it costs fewer requests than listing
the table's values: a LIST per commit hour since H − 1 h and a GET per entry, against a LIST
per value (LISTs also cost S3 users 12.5 times a GET). Otherwise, as for an old hour rebuilt
again, every value is listed. Within a value, files are always listed, so a file whose
commit died before its ledger entry (its messages are then written again under the same
value and hour) is read as before.
"""

import datetime as dt
from dataclasses import dataclass

from lake_platform.ingest.ledger import list_entries, read_entry_files
from lake_platform.storage import LakeStore
from lake_platform.timestamps import HOUR_NS

LEDGER = "_ledger"
EARLY_COMMIT_HOURS = 1
"""A file of hour H may be committed from H − 1 h (events up to now + 1 h are accepted)."""
CLOCK_AHEAD_HOURS = 1
"""Commit hours after the current one that are read too: a writer whose clock is ahead files
its entries there."""
COVERAGE_LISTS = 2
"""LISTs that find when the ledger started (its first date, that date's first hour)."""
HOUR_FOLDER = "date=%Y-%m-%d/hour=%H"
"""`hour_folder`'s format, parsed back."""


@dataclass(frozen=True)
class ValueFolders:
    """The value folders (`symbol=SPY`) whose hour a rebuild lists.

    `from_ledger`: only the values the ledger names for the hour; otherwise every value
    folder the input table has, as listed.
    """

    folders: list[str]
    from_ledger: bool


def hour_value_folders(
    store: LakeStore, source: str, hour: dt.datetime, now_ns: int
) -> ValueFolders:
    """The value folders of `source` (`bronze/…` or `silver/…`) to list for `hour`."""
    listed = store.list_folders(source)
    from_ledger = _ledger_value_folders(store, source, hour, now_ns, budget=len(listed))
    if from_ledger is None:
        return ValueFolders(listed, from_ledger=False)
    return ValueFolders(sorted(from_ledger), from_ledger=True)


def _ledger_value_folders(
    store: LakeStore, source: str, hour: dt.datetime, now_ns: int, budget: int
) -> set[str] | None:
    """The value folders the ledger names for `hour` of `source`'s table, or None when it
    cannot tell them for fewer than `budget` requests."""
    hour_ns = int(hour.timestamp()) * 10**9
    since_ns = hour_ns - EARLY_COMMIT_HOURS * HOUR_NS
    until_ns = now_ns + CLOCK_AHEAD_HOURS * HOUR_NS
    commit_hours = max(0, until_ns // HOUR_NS - since_ns // HOUR_NS + 1)
    if commit_hours + COVERAGE_LISTS >= budget:
        return None
    started_ns = _ledger_start_ns(store)
    if started_ns is None or started_ns > since_ns:
        return None
    listed = list_entries(store, since_ns, until_ns)
    if commit_hours + len(listed) >= budget:
        return None
    entries = read_entry_files(store, [path for _, path in listed])
    if len(entries) != len(listed):
        return None  # an entry that is not valid may name files of the hour
    table = source.split("/", 1)[1]
    prefix = f"bronze/{table}/"
    folders = set()
    for entry in entries:
        for file in entry.files:
            if file.table != table:
                continue
            if file.hour_start_ns is None or not file.path.startswith(prefix):
                return None  # an entry of another layout: the files tell
            if file.hour_start_ns == hour_ns:
                folders.add(file.path.removeprefix(prefix).split("/", 1)[0])
    return folders


def _ledger_start_ns(store: LakeStore) -> int | None:
    """The start of the ledger's first commit hour, None when it has no entry folder (a
    folder not named like the ledger's is passed over)."""
    for date_folder in store.list_folders(LEDGER):
        for hour_folder in store.list_folders(f"{LEDGER}/{date_folder}"):
            try:
                start = dt.datetime.strptime(f"{date_folder}/{hour_folder}", HOUR_FOLDER)
            except ValueError:
                continue
            return int(start.replace(tzinfo=dt.UTC).timestamp()) * 10**9
    return None
