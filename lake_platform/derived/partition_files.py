"""Replacing the files of one derived partition (`part-00000.parquet`, …) safely.

Every file is written atomically under its final name, so a concurrent reader sees either the
old or the new file, never a partial one; files the new output no longer has are removed
afterwards. Output is byte-reproducible: eager Polars writes with pinned row groups.
"""

import math
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lake_platform.storage import LakeStore
from lake_platform.storage.paths import numbered_file_name

ROW_GROUP_ROWS = 262_144
MAX_FILE_MEMORY_BYTES = 2 * 1024**3
"""In-memory size above which a partition is split: ~256 MB–1 GB once ZSTD-compressed."""


@dataclass(frozen=True)
class WrittenFile:
    path: str
    rows: int
    bytes: int


def file_slices(frame: pl.DataFrame) -> list[pl.DataFrame]:
    """The frame cut into files of at most MAX_FILE_MEMORY_BYTES in memory (one when smaller)."""
    count = max(1, math.ceil(frame.estimated_size() / MAX_FILE_MEMORY_BYTES))
    rows_per_file = max(1, math.ceil(frame.height / count))
    return list(frame.iter_slices(rows_per_file)) if frame.height else [frame]


def replace_partition(store: LakeStore, folder: str, frame: pl.DataFrame) -> list[WrittenFile]:
    """Write `frame` as the files of `folder`, then remove the folder's other Parquet files."""
    written = []
    for index, part in enumerate(file_slices(frame)):
        path = f"{folder}/{numbered_file_name(index)}"
        size = store.write_parquet(part, path, row_group_size=ROW_GROUP_ROWS)
        written.append(WrittenFile(path, part.height, size))
    keep = {file.path for file in written}
    store.delete([path for path in store.list_files(folder) if path not in keep])
    return written


def read_with_metadata(store: LakeStore, path: str) -> tuple[pl.DataFrame, pq.FileMetaData]:
    """A file's rows and its Parquet footer, from one read."""
    body = store.read_bytes(path)
    return pl.read_parquet(body), pq.ParquetFile(pa.BufferReader(body)).metadata
