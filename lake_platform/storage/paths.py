"""Where every file of the lake lives (docs/contract.md §3), and Hive escaping of partition values.

Producers choose partition values and subjects, so their escaped form is bounded in *bytes*
(`ESCAPED_VALUE_MAX_BYTES`): with it, every folder name stays under the 255-byte file-name
limit and every object key far under S3's 1,024 bytes (`LAKE_KEY_MAX_BYTES` is what the
longest key below a lake root may take; the rest is left to the root's own prefix).
"""

import datetime as dt
import hashlib
import re
import secrets
from urllib.parse import unquote

HIVE_ESCAPED = re.compile(r"[\x00-\x1f\x7f\"#%'*/:=?\\^\[\]{}<>|]|^\.")
"""Every character Hive/Spark escape in path names (`FileUtils.escapePathName`, including the
ones escaped on Windows), and a leading `.` so a value is never `..` or a hidden file."""
ESCAPED_VALUE_MAX_BYTES = 200
"""Budget of an escaped partition value or quarantine subject folder, in UTF-8 bytes."""
LAKE_KEY_MAX_BYTES = 320
"""Upper bound of any key below the lake root (the longest table path, an escaped value at
its budget, `date=…/hour=…` and a part-file name); the root may use the rest of 1,024."""
CUT_HASH_CHARS = 16


def escape_partition_value(value: str) -> str:
    """Percent-encode a partition value as Hive/Spark do for path names.

    Every character of `HIVE_ESCAPED` becomes `%XX`, so `..` or `a/b` never leave their
    folder and `[`/`{` are never taken for globs; other characters (non-ASCII included) are kept.
    """
    return HIVE_ESCAPED.sub(lambda match: f"%{ord(match.group()):02X}", value)


def unescape_partition_value(segment: str) -> str:
    """The partition value a Hive-aware reader sees for an escaped path segment."""
    return unquote(segment)


def folder_partition_value(folder: str) -> str:
    """The partition value of a `{col}={escaped value}` folder name, as it was published."""
    return unescape_partition_value(folder.partition("=")[2])


def hour_folder(hour: dt.datetime) -> str:
    """`date=YYYY-MM-DD/hour=HH` of a UTC hour."""
    return f"date={hour:%Y-%m-%d}/hour={hour:%H}"


def partition_folder(column: str, value: str, hour: dt.datetime) -> str:
    """`{col}={value}/date=…/hour=…`, with the value escaped (callers keep it in budget)."""
    return f"{column}={escape_partition_value(value)}/{hour_folder(hour)}"


def part_file_name(written_at: dt.datetime) -> str:
    """`part-{HHMMSS}_{ffffff}-{unique}.parquet` (Bronze, quarantine): write time, 64 random bits.

    The random part keeps names unique for two writers in the same microsecond.
    """
    return f"part-{written_at:%H%M%S}_{written_at:%f}-{secrets.token_hex(8)}.parquet"


def bounded_folder_name(value: str) -> str:
    """The escaped value, or when over budget its cut form with a hash of the whole value.

    The cut never splits a character or a `%XX` escape; `~` plus 16 hex digits of the
    value's SHA-256 keep two long values that share a prefix in different folders.
    """
    escaped = escape_partition_value(value)
    if len(escaped.encode()) <= ESCAPED_VALUE_MAX_BYTES:
        return escaped
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:CUT_HASH_CHARS]
    budget = ESCAPED_VALUE_MAX_BYTES - 1 - CUT_HASH_CHARS
    cut = escaped.encode()[:budget].decode("utf-8", "ignore")
    cut = re.sub(r"%.?$", "", cut)
    return f"{cut}~{digest}"


def quarantine_folder(subject: str, day: dt.date) -> str:
    """`_quarantine/{subject}/date=YYYY-MM-DD`, relative to the lake root (subject bounded)."""
    return f"_quarantine/{bounded_folder_name(subject)}/date={day:%Y-%m-%d}"


def ledger_file(committed: dt.datetime, entry_id: str) -> str:
    """`_ledger/date=…/hour=…/{entry_id}.json`, filed under the hour of the commit."""
    return f"_ledger/{hour_folder(committed)}/{entry_id}.json"
