"""Where every file of the lake lives (INTERFACES §3), and Hive escaping of partition values."""

import datetime as dt
import re
import secrets
from urllib.parse import unquote

_ESCAPED = re.compile(r'[\x00-\x1f\x7f/\\=%:*?"<>|]|^\.')


def escape_partition_value(value: str) -> str:
    """Percent-encode a partition value as Hive/Spark do for path names.

    `/ \\ = % : * ? " < > |`, control characters and a leading `.` become `%XX`, so `..`
    or `a/b` never leave their folder; every other character (non-ASCII included) is kept.
    """
    return _ESCAPED.sub(lambda match: f"%{ord(match.group()):02X}", value)


def unescape_partition_value(segment: str) -> str:
    """The partition value a Hive-aware reader sees for an escaped path segment."""
    return unquote(segment)


def hour_folder(hour: dt.datetime) -> str:
    """`date=YYYY-MM-DD/hour=HH` of a UTC hour."""
    return f"date={hour:%Y-%m-%d}/hour={hour:%H}"


def partition_folder(column: str, value: str, hour: dt.datetime) -> str:
    """`{col}={value}/date=…/hour=…`, with the value escaped."""
    return f"{column}={escape_partition_value(value)}/{hour_folder(hour)}"


def part_file_name(written_at: dt.datetime) -> str:
    """`part-{HHMMSS}_{ffffff}-{unique}.parquet` (Bronze, quarantine): write time, 64 random bits.

    The random part keeps names unique for two writers in the same microsecond.
    """
    return f"part-{written_at:%H%M%S}_{written_at:%f}-{secrets.token_hex(8)}.parquet"


def numbered_file_name(index: int) -> str:
    """`part-{NNNNN}.parquet`, the names of Silver and Gold files."""
    return f"part-{index:05d}.parquet"


def quarantine_folder(subject: str, day: dt.date) -> str:
    """`_quarantine/{subject}/date=YYYY-MM-DD`, relative to the lake root."""
    return f"_quarantine/{escape_partition_value(subject)}/date={day:%Y-%m-%d}"


def ledger_file(committed: dt.datetime, entry_id: str) -> str:
    """`_ledger/date=…/hour=…/{entry_id}.json`, filed under the hour of the commit."""
    return f"_ledger/{hour_folder(committed)}/{entry_id}.json"
