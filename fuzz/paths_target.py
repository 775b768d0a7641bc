"""Fuzz target: Hive escaping and the partition and quarantine folder names of storage/paths.py.

Input: any bytes, read as one Unicode string without lone surrogates (partition values come
from msgspec, subjects from nats-py: both decode strict UTF-8, so neither can hold one).
Checked for each: the escaped value round-trips, stays one path segment (no `/` or `\\`, never
`.`/`..`/hidden, nothing Hive escapes left bare), its byte length is what the decoder's Polars
expression predicts; the bounded folder name fits its byte budget without a dangling `%`;
a partition folder is exactly three segments and its longest key fits `LAKE_KEY_MAX_BYTES`.
Run: `python fuzz/paths_target.py fuzz/corpus/paths -atheris_runs=N` (on a copy of the corpus).
"""

import datetime as dt
import re
import sys

import atheris

with atheris.instrument_imports(include=["lake_platform"]):
    import polars as pl

    from lake_platform.schemas import SCHEMAS
    from lake_platform.schemas.decode import _escaped_bytes
    from lake_platform.storage.paths import (
        ESCAPED_VALUE_MAX_BYTES,
        HIVE_ESCAPED,
        LAKE_KEY_MAX_BYTES,
        bounded_folder_name,
        escape_partition_value,
        part_file_name,
        partition_folder,
        unescape_partition_value,
    )

HOUR = dt.datetime(2025, 12, 16, 14, tzinfo=dt.UTC)
LONGEST_TABLE = max((schema.table for schema in SCHEMAS), key=len)
DANGLING_ESCAPE = re.compile(r"%(?![0-9A-F]{2})")
MAX_CHARS = 400


def check_escaped(value: str) -> str:
    segment = escape_partition_value(value)
    assert unescape_partition_value(segment) == value, (value, segment)
    assert "/" not in segment and "\\" not in segment, segment
    assert not segment.startswith("."), segment
    assert DANGLING_ESCAPE.search(segment) is None, segment
    assert HIVE_ESCAPED.search(segment.replace("%", "")) is None, segment
    predicted = pl.DataFrame({"v": [value]}).select(_escaped_bytes("v")).item()
    assert predicted == len(segment.encode()), (value, predicted)
    return segment


def check_bounded(value: str, segment: str) -> None:
    name = bounded_folder_name(value)
    size = len(name.encode())
    assert size <= ESCAPED_VALUE_MAX_BYTES, (value, size)
    assert "/" not in name and not name.startswith(".") and name not in (".", "..")
    assert bool(name) == bool(value), name
    assert DANGLING_ESCAPE.search(name) is None, name
    if len(segment.encode()) <= ESCAPED_VALUE_MAX_BYTES:
        assert name == segment
    else:
        assert bounded_folder_name(value + "x") != name


def check_partition_folder(value: str, segment: str) -> None:
    folder = partition_folder("symbol", value, HOUR)
    parts = folder.split("/")
    assert parts == [f"symbol={segment}", "date=2025-12-16", "hour=14"], parts
    if value and len(segment.encode()) <= ESCAPED_VALUE_MAX_BYTES:
        key = f"bronze/{LONGEST_TABLE}/{folder}/{part_file_name(HOUR)}"
        assert len(key.encode()) <= LAKE_KEY_MAX_BYTES, key


def test_one_input(data: bytes) -> None:
    value = atheris.FuzzedDataProvider(data).ConsumeUnicodeNoSurrogates(MAX_CHARS)
    segment = check_escaped(value)
    check_bounded(value, segment)
    check_partition_folder(value, segment)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
