"""Replacing the files of one derived partition (`part-00000.parquet`, …).

Every file is written atomically under its final (contract) name, so a reader never sees a
partial file; files the new output no longer has are removed afterwards. A replacement of
several files is not atomic as a whole: see `replace_partition`. Output is byte-reproducible:
eager Polars writes with pinned row groups, the store's Parquet options. A file is streamed to
storage (locally) and hashed as it is written, never held whole in memory.
"""

import hashlib
import math
from dataclasses import dataclass

import polars as pl

from lake_platform.storage import LakeStore
from lake_platform.storage.paths import numbered_file_name

ROW_GROUP_ROWS = 262_144
MAX_FILE_MEMORY_BYTES = 2 * 1024**3
"""In-memory size above which a partition is split: ~256 MB–1 GB once ZSTD-compressed."""


@dataclass(frozen=True)
class WrittenFile:
    """A file as written: `sha256` is the digest of its bytes, so a file in storage with the
    same digest holds exactly the rows that were written (see `check_hour`)."""

    path: str
    rows: int
    bytes: int
    sha256: str


def sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def file_slices(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """The frame cut into files of at most MAX_FILE_MEMORY_BYTES in memory (one when smaller)."""
    count = max(1, math.ceil(frame.estimated_size() / MAX_FILE_MEMORY_BYTES))
    rows_per_file = max(1, math.ceil(frame.height / count))
    return list(frame.iter_slices(rows_per_file)) if frame.height else [frame]


def replace_partition(store: LakeStore, folder: str, frame: pl.DataFrame) -> list[WrittenFile]:
    """Write `frame` as the files of `folder`, then remove the folder's other Parquet files.

    What a concurrent reader can see: each file is written atomically under its final name
    (`part-00000.parquet`, `part-00001.parquet`, … overwritten in place), so every file it reads
    is a whole old or a whole new file. A partition of one file before and after is therefore
    seen entirely old or entirely new. With several files there is no such guarantee: a reader
    listing or reading mid-replacement can see new files next to old ones (new `part-00000`,
    old `part-00001`), and old files beyond the new count until they are removed at the end;
    such a mixed set can repeat or miss rows. Only after this returns does the folder hold
    exactly the new files.
    """
    written = []
    for index, part in enumerate(file_slices(frame)):
        path = f"{folder}/{numbered_file_name(index)}"
        size, digest = store.write_parquet_digest(part, path, row_group_size=ROW_GROUP_ROWS)
        written.append(WrittenFile(path, part.height, size, digest))
    keep = {file.path for file in written}
    store.delete([path for path in store.list_files(folder) if path not in keep])
    return written
