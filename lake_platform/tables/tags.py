"""Tags: named snapshots that expiry never removes (restore points, pinned training sets).

`tag_current` tags a table's current snapshot (`lake-platform tag NAME`); `tag_day` keeps
the automatic `day-YYYY-MM-DD` tags, one per UTC day whose hours are all materialized, the
newest `LAKE_DAILY_TAGS` of them (pyiceberg does not enforce a tag's `max_ref_age_ms`, so the
older ones are removed here, in the same commit).

Tag commits change only the table's metadata; pyiceberg retries only commits that add a
snapshot, so one that lost the race for the catalog row to a concurrent hour commit is
retried here (`retry_metadata_commit`), against the refreshed table.
"""

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType

DAY_TAG_PREFIX = "day-"
DAY_TAG = re.compile(r"day-\d{4}-\d{2}-\d{2}")
TAG_NAME = re.compile(r"[A-Za-z][^\s\x00-\x1f\x7f]{0,199}")
"""A tag name: a letter first (so no tag reads as a snapshot id or a time in `--as-of`), no
whitespace or control character, at most 200 characters."""
METADATA_COMMIT_ATTEMPTS = 5

T = TypeVar("T")


class TagError(ValueError):
    """A tag name that is invalid, taken, or unknown (one line, for a CLI)."""


@dataclass(frozen=True)
class TagResult:
    """What `tag_day` did: the tag made (None when none) on which snapshot, the day tags
    removed."""

    tag: str | None
    snapshot_id: int | None
    removed: tuple[str, ...]


def check_tag_name(name: str) -> None:
    """Refuse a name that is not a valid tag name (see `TAG_NAME`) or is the main branch."""
    if name == MAIN_BRANCH:
        raise TagError(f"{name!r} is the table's main branch, not a tag name")
    if not TAG_NAME.fullmatch(name):
        raise TagError(
            f"invalid tag name {name!r}: it starts with a letter and has no whitespace "
            "(at most 200 characters)"
        )


def day_tag(day: dt.date) -> str:
    """The automatic tag of a UTC day: `day-2026-12-06`."""
    return f"{DAY_TAG_PREFIX}{day.isoformat()}"


def tags(table: Table) -> dict[str, int]:
    """The table's tags and their snapshot ids."""
    return {
        name: ref.snapshot_id
        for name, ref in table.metadata.refs.items()
        if ref.snapshot_ref_type == SnapshotRefType.TAG
    }


def tag_current(table: Table, name: str, *, replace: bool = False) -> int | None:
    """Tag the table's current snapshot `name`; its id, or None when the table has none.

    A tag of that name already on another snapshot is an error unless `replace` (then it
    moves); one already on the current snapshot is left as it is.
    """
    check_tag_name(name)

    def attempt() -> int | None:
        snapshot = table.current_snapshot()
        if snapshot is None:
            return None
        ref = table.metadata.refs.get(name)
        if ref is not None and ref.snapshot_ref_type != SnapshotRefType.TAG:
            raise TagError(f"{_table_name(table)}: {name!r} is a branch, not a tag")
        if ref is not None and ref.snapshot_id != snapshot.snapshot_id and not replace:
            raise TagError(
                f"{_table_name(table)}: tag {name!r} already names snapshot "
                f"{ref.snapshot_id}; replace it to move it to the current snapshot"
            )
        if ref is None or ref.snapshot_id != snapshot.snapshot_id:
            table.manage_snapshots().create_tag(snapshot.snapshot_id, name).commit()
        return snapshot.snapshot_id

    return retry_metadata_commit(table, attempt)


def tag_day(table: Table, day: dt.date, keep: int) -> TagResult:
    """Tag the current snapshot `day-YYYY-MM-DD` (moved there if the day had one) and remove
    the day tags beyond the newest `keep` days, in one commit. `keep=0` makes no tag and
    removes every day tag; a day older than the newest `keep` gets none."""
    if keep < 0:
        raise ValueError(f"keep is a number of day tags, 0 or more, got {keep}")
    name = day_tag(day)

    def attempt() -> TagResult:
        snapshot = table.current_snapshot()
        current = tags(table)
        existing = sorted(tag for tag in current if DAY_TAG.fullmatch(tag))
        candidates = sorted({*existing, name}) if snapshot is not None else existing
        kept = set(candidates[-keep:]) if keep else set()
        removed = tuple(tag for tag in existing if tag not in kept)
        made = snapshot.snapshot_id if snapshot is not None and name in kept else None
        moves = made is not None and current.get(name) != made
        if removed or moves:
            with table.manage_snapshots() as manage:
                for tag in removed:
                    manage.remove_tag(tag)
                if made is not None and moves:
                    manage.create_tag(made, name)
        return TagResult(name if made is not None else None, made, removed)

    return retry_metadata_commit(table, attempt)


def remove_tag(table: Table, name: str) -> int:
    """Remove the tag `name`; the id of the snapshot it named (which may now expire)."""

    def attempt() -> int:
        found = tags(table).get(name)
        if found is None:
            raise TagError(f"{_table_name(table)}: no tag {name!r}")
        table.manage_snapshots().remove_tag(name).commit()
        return found

    return retry_metadata_commit(table, attempt)


def retry_metadata_commit(table: Table, attempt: Callable[[], T]) -> T:
    """Run `attempt` (which reads `table` and commits a metadata change) until it commits:
    after a commit that lost the catalog row to a concurrent one, the table is refreshed and
    `attempt` decides again, at most `METADATA_COMMIT_ATTEMPTS` times."""
    for _ in range(METADATA_COMMIT_ATTEMPTS - 1):
        try:
            return attempt()
        except CommitFailedException:
            table.refresh()
    return attempt()


def _table_name(table: Table) -> str:
    return ".".join(table.name())
