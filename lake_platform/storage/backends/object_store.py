"""`ObjectStoreBackend`: the lake in a bucket of an object store, through its fsspec
filesystem (S3 in `s3.py`; Google Cloud Storage or Azure Blob Storage are a subclass each).

A write is one streamed upload: one PUT for a file smaller than a part (`PART_BYTES`), else
a multipart upload streamed part by part, which the store makes visible only once it is
completed and which is aborted on any failure. A write never holds the whole file in memory.
"""

import io
import shutil
import tempfile
from collections.abc import Callable, Sequence
from contextlib import suppress

import fsspec
import polars as pl
from fsspec.spec import AbstractBufferedFile

from lake_platform.storage.backends.base import Backend, WriteBody, WrittenFile, protocols_of
from lake_platform.storage.errors import StorageErrorKind, os_error_kind
from lake_platform.storage.parquet import read_parquet_file

UPLOAD_THREADS = 16
"""Concurrent PUTs of one ingest commit."""
PART_BYTES = 32 * 1024**2
"""Part size of a streamed upload: a write holds about two parts in memory whatever the
file's size (a 1 GB file goes up in 32 parts with ~64 MiB held); a smaller file is one PUT.
S3 requires parts of at least 5 MiB (but the last) and at most 10,000 of them (~320 GB)."""
UPLOAD_MAX_AGE_S = 24 * 3_600
"""Age since it started past which a multipart upload never completed is taken for what
a killed writer left, and aborted. S3 does not advance it with each part, so it must exceed
the longest write: a 1 GB file over a slow link takes hours, not a day."""


SPOOL_MEMORY_BYTES = 64 * 1024**2
"""A content-named file is hashed before its upload: held in memory up to this, then on disk."""
COPY_CHUNK_BYTES = 8 * 1024**2


class ObjectStoreBackend(Backend):
    """Objects below `bucket/prefix` (the root, without the URL's scheme) of an fsspec
    object-store filesystem, at `endpoint` (for messages)."""

    is_local = False
    write_threads = UPLOAD_THREADS
    temporary_max_age_s = UPLOAD_MAX_AGE_S

    def __init__(
        self, root: str, fs: fsspec.AbstractFileSystem, endpoint: str | None = None
    ) -> None:
        super().__init__(root.rstrip("/"), fs)
        self.scheme = protocols_of(fs)[0]
        self.endpoint = endpoint
        self.part_bytes = PART_BYTES

    @property
    def bucket(self) -> str:
        return self.root.split("/", 1)[0]

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.root}"

    @property
    def location(self) -> str:
        return f"bucket {self.bucket!r} ({self.url}) at {self.endpoint}"

    @property
    def error_context(self) -> str:
        return f" in {self.location}"

    def shown(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    def check_access(self) -> None:
        self.fs.ls(self.bucket, refresh=True)

    def error_kind(self, error: BaseException) -> StorageErrorKind:
        return os_error_kind(error)

    def access_error_kind(self, error: BaseException) -> StorageErrorKind:
        """A bucket the store refuses (rather than one it cannot reach) denies the lake."""
        kind = self.error_kind(error)
        return "denied" if kind == "rejected" else kind

    def write(self, path: str, body: WriteBody) -> int:
        """One object from what `body` writes, streamed; its size.

        fsspec files commit what they hold when closed, also from `__exit__` and `__del__`
        after an exception: so the file is closed only once `body` succeeded, and on any
        failure the upload is discarded (a started multipart upload aborted) and the file
        marked closed, so that no partial object ever appears.
        """
        handle = self.fs.open(path, "wb", block_size=self.part_bytes)
        try:
            body(handle)
            size = handle.tell()
            handle.close()
        except BaseException:
            _discard(handle)
            raise
        return size

    def write_unsynced(self, path: str, body: WriteBody) -> WrittenFile:
        """`write`: an object is durable once its upload completed."""
        return WrittenFile(self.write(path, body), frozenset())

    def write_named(
        self, folder: str, body: WriteBody, name_of: Callable[[], str]
    ) -> tuple[str, int]:
        """`body` spooled to a local temporary file (memory up to `SPOOL_MEMORY_BYTES`), then
        uploaded under the name `name_of` gives. An object already there holds the same bytes
        and is uploaded again all the same: that renews its time, which maintenance's orphan
        sweep reads (it spares objects younger than a grace period), and an object store has
        no cheaper way to renew it."""
        with tempfile.SpooledTemporaryFile(SPOOL_MEMORY_BYTES) as spool:
            body(spool)
            size = spool.tell()
            path = f"{folder.rstrip('/')}/{name_of()}"
            spool.seek(0)
            self.write(path, lambda handle: shutil.copyfileobj(spool, handle, COPY_CHUNK_BYTES))
        return path, size

    def sync_folder(self, folder: str) -> None:
        """Nothing to do: an object store has no folder entries (`write_unsynced` names none)."""

    def sweep_temporaries(self, deadline: float) -> list[str]:
        """Nothing by default: a store whose unfinished uploads expire on their own (Google
        Cloud Storage after a week, Azure's uncommitted blocks likewise). A store that keeps
        them (S3) overrides this."""
        return []

    def read_parquet(self, paths: Sequence[str], columns: list[str] | None) -> pl.DataFrame:
        """The files fetched concurrently, then decoded one by one (a file that is not valid
        Parquet is a `rejected` error naming it)."""
        bodies = self.read_many_bytes(paths)
        return pl.concat(
            [
                read_parquet_file(io.BytesIO(body), self.shown(path), columns)
                for body, path in zip(bodies, paths, strict=True)
            ]
        )


def _discard(handle: AbstractBufferedFile) -> None:
    """Abort an unfinished upload (best effort: an abort that fails leaves invisible parts
    that the bucket's lifecycle rules expire) and keep the file from committing later."""
    try:
        with suppress(Exception):
            handle.discard()
    finally:
        handle.closed = True
