"""How the lake encodes and decodes Parquet, whatever the backend holding the bytes."""

import hashlib
import io
from typing import BinaryIO

import polars as pl

from lake_platform.storage.errors import StorageError

PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 3,
    "statistics": True,
}


class HashingWriter:
    """A binary file-like object that hashes what it forwards to `handle`."""

    def __init__(self, handle: BinaryIO, digest: "hashlib._Hash") -> None:
        self._handle = handle
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


def read_parquet_file(
    source: str | io.BytesIO, shown: str, columns: list[str] | None
) -> pl.DataFrame:
    """One file's rows, or a `rejected` error naming the file (`shown`) when it is not valid
    Parquet (truncated, corrupt): retrying cannot help, and the name says which file to repair."""
    try:
        return pl.read_parquet(source, columns=columns, glob=False)
    except pl.exceptions.PolarsError as error:
        message = f"cannot read {shown}: not a readable Parquet file: {error}"
        raise StorageError(message, "rejected") from error
