"""Writing the files of one derived value-hour under content-addressed names.

Each file is `part-{NNNNN}-{first 16 hex of its SHA-256}.parquet` (`tables.naming`), written
atomically, never overwritten with other bytes: files of older versions of the hour stay for
the snapshots that still reference them, and which files *are* the hour is the catalog's
answer (one commit per (table, hour): `tables.hours.replace_hour`), not a listing's. Output
is byte-reproducible: eager Polars writes with pinned row groups, the store's Parquet
options, so the same rows give the same names. A file is streamed to storage and hashed as it
is written, never held whole in memory.
"""

import hashlib
import math
from dataclasses import dataclass

import polars as pl

from lake_platform.storage import LakeStore
from lake_platform.tables.naming import content_name_for_digest

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


def write_partition(store: LakeStore, folder: str, frame: pl.DataFrame) -> list[WrittenFile]:
    """Write `frame` as the content-named files of `folder` (one per `file_slices` slice)."""
    written = []
    for index, part in enumerate(file_slices(frame)):
        path, size, digest = store.write_parquet_named(
            part,
            folder,
            lambda digest, index=index: content_name_for_digest(digest, index),
            row_group_size=ROW_GROUP_ROWS,
        )
        written.append(WrittenFile(path, part.height, size, digest))
    return written
