"""The Parquet files of one hour of a table, by partition-value folder: where a value-hour's
files are, listing them, and naming an exact set of them."""

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping, Sequence

from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder

HourFiles = Mapping[str, Sequence[str]]
"""Parquet files of one hour of a table, by partition-value folder (`symbol=SPY`), by name."""


def value_hour_folder(base: str, value_folder: str, hour: dt.datetime) -> str:
    """The folder of one value-hour's files under `base` (`silver/stocks/trades`)."""
    return f"{base}/{value_folder}/{hour_folder(hour)}"


def hour_files(
    store: LakeStore, base: str, hour: dt.datetime, value_folders: Iterable[str] | None = None
) -> dict[str, list[str]]:
    """Parquet files of the hour under `base`, by partition-value folder (`symbol=SPY`): of
    `value_folders`, or of every value folder there is."""
    found = {}
    if value_folders is None:
        value_folders = store.list_folders(base)
    for value_folder in value_folders:
        files = store.list_files(value_hour_folder(base, value_folder, hour))
        if files:
            found[value_folder] = files
    return found


def files_digest(files: HourFiles) -> str:
    """SHA-256 of the sorted relative paths of `files`: names an exact set of input files."""
    paths = sorted(path for paths in files.values() for path in paths)
    return hashlib.sha256("\n".join(paths).encode()).hexdigest()
