"""Reading a table as it was: `--as-of TAG|SNAPSHOT|TIMESTAMP` resolved to a snapshot.

A tag (or branch) name gives its snapshot, a number its snapshot id, an ISO-8601 time (with
`Z` or an offset; a bare date is its midnight UTC) the snapshot that was current then, from
the table's snapshot log. Untagged snapshots expire after `LAKE_SNAPSHOT_RETENTION`, and
pyiceberg then drops their log entries without a trace of when they were current: the log
alone would answer a time inside an expired version with the version before it. A snapshot
whose parent expired has lost its parent id, so a log entry not followed by its own child
marks such a gap, and any time inside it is refused rather than answered wrongly (even one
before the expired version took over: the gap's bounds are lost; a tag still reads it).
"""

import datetime as dt

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

RETENTION_VARIABLE = "LAKE_SNAPSHOT_RETENTION"
FIRST_SEQUENCE_NUMBER = 1
"""The sequence number of a format-2 table's first snapshot."""


class AsOfError(ValueError):
    """An `--as-of` that names no retained snapshot (one line, for a CLI)."""


def parse_as_of(text: str) -> int | dt.datetime | str:
    """What an `--as-of` names: a snapshot id (all digits), a UTC time (ISO-8601 with `Z` or
    an offset, or a date for its midnight UTC), else a tag or branch name (starting with a
    letter). Anything else is an `AsOfError`."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if not text or not text[0].isdigit():
        if not text or not text[0].isalpha():
            raise AsOfError(f"--as-of {text!r} is neither a tag, a snapshot id nor a time")
        return text
    return _parse_time(text)


def _parse_time(text: str) -> dt.datetime:
    try:
        if len(text) == len("2026-12-06"):
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise AsOfError(
            f"--as-of {text!r} is not an ISO-8601 time (2026-12-06T03:00:00Z) or date"
        ) from None
    if moment.utcoffset() is None:
        raise AsOfError(f"--as-of {text!r} needs a time zone: Z or an offset such as +01:00")
    return moment.astimezone(dt.UTC)


def snapshot_as_of(table: Table, as_of: str) -> Snapshot:
    """The snapshot `as_of` names (see the module); `AsOfError` when it names none retained."""
    name = ".".join(table.name())
    by_ref = table.snapshot_by_name(as_of.strip())
    if by_ref is not None:
        return by_ref
    wanted = parse_as_of(as_of)
    if isinstance(wanted, str):
        tags = ", ".join(sorted(table.metadata.refs)) or "none"
        raise AsOfError(f"{name}: no tag or branch {wanted!r} (there are: {tags})")
    if isinstance(wanted, int):
        found = table.snapshot_by_id(wanted)
        if found is None:
            raise AsOfError(
                f"{name}: no snapshot {wanted}: unknown, or expired ({RETENTION_VARIABLE}); "
                "tag a version to keep it"
            )
        return found
    return snapshot_at(table, wanted)


def snapshot_at(table: Table, moment: dt.datetime) -> Snapshot:
    """The snapshot that was the table's current one at `moment` (an aware datetime)."""
    name = ".".join(table.name())
    log = table.history()
    if not log:
        raise AsOfError(f"{name}: the table has no snapshot yet")
    shown = moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    expired = (
        f"{name}: {shown} is older than the retained history ({RETENTION_VARIABLE}); "
        "tag a version to keep it"
    )
    moment_ms = int(moment.timestamp() * 1000)
    before = [index for index, entry in enumerate(log) if entry.timestamp_ms <= moment_ms]
    if not before:
        first = table.snapshot_by_id(log[0].snapshot_id)
        if first is not None and _is_first_ever(first):
            raise AsOfError(f"{name}: the table had no snapshot yet at {shown}")
        raise AsOfError(expired)
    index = before[-1]
    found = table.snapshot_by_id(log[index].snapshot_id)
    following = table.snapshot_by_id(log[index + 1].snapshot_id) if index + 1 < len(log) else None
    if found is None or (
        following is not None and following.parent_snapshot_id != found.snapshot_id
    ):
        raise AsOfError(expired)
    return found


def _is_first_ever(snapshot: Snapshot) -> bool:
    """Whether `snapshot` is the table's first commit (no parent ever, not one that expired)."""
    sequence = snapshot.sequence_number
    return snapshot.parent_snapshot_id is None and (sequence or 0) <= FIRST_SEQUENCE_NUMBER
