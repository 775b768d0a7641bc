"""`LakeStore`: the lake's files, on local disk or in an object store, through a backend.

Every Parquet file is ZSTD level 3 and written atomically, as its backend makes a write
atomic (`backends/local.py`: a hidden temporary file renamed into place and fsynced;
`backends/object_store.py`: one streamed upload, aborted on any failure). A write never
holds the whole file in memory. Bronze files can be written but never deleted through this
class.

Every failure of the underlying filesystem (OSError, botocore's connection and client errors,
anything s3fs raises) leaves as a `StorageError` whose `kind` (from the backend) tells the
caller what to do.
"""

import functools
import hashlib
import posixpath
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import BinaryIO

import fsspec
import polars as pl

from lake_platform.settings import LakeSettings, redact_url
from lake_platform.storage.backends import Backend, WriteBody, WrittenFile, backend_for
from lake_platform.storage.backends.local import TEMPORARY_MAX_AGE_S
from lake_platform.storage.backends.s3 import s3_error_kind, s3_filesystem
from lake_platform.storage.errors import StorageError, StorageErrorKind
from lake_platform.storage.parquet import PARQUET_OPTIONS, HashingWriter

APPEND_ONLY_TIER = "bronze"

__all__ = [
    "APPEND_ONLY_TIER",
    "PARQUET_OPTIONS",
    "TEMPORARY_MAX_AGE_S",
    "LakeStore",
    "StorageError",
    "StorageErrorKind",
    "storage_error_kind",
]


def storage_error_kind(error: BaseException) -> StorageErrorKind:
    """What an exception of any filesystem the lake uses means (see `StorageError`), for a
    caller using a filesystem beside a store (creating a bucket): S3's error code, botocore's
    error class, else the errno."""
    return s3_error_kind(error)


class LakeStore:
    """Files under one lake root; every path given to or returned by it is relative to it.

    `fs` chooses the backend (`backends.backend_for`); `endpoint` names an object store's
    server in messages, and no message ever shows one of `secrets_to_hide`.
    """

    def __init__(
        self,
        root: str,
        fs: fsspec.AbstractFileSystem,
        *,
        endpoint: str | None = None,
        secrets_to_hide: Sequence[str] = (),
    ) -> None:
        self.endpoint = redact_url(endpoint) if endpoint else None
        self.backend: Backend = backend_for(root, fs, self.endpoint)
        self.fs = fs
        self.root = self.backend.root
        self._secrets = tuple(value for value in secrets_to_hide if value)

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> "LakeStore":
        """The store at `DATA_ROOT`, local or S3 (credentials from the settings)."""
        if not settings.use_s3:
            return cls(settings.data_root, fsspec.filesystem("file"))
        return cls(
            settings.data_root.removeprefix("s3://"),
            s3_filesystem(settings),
            endpoint=settings.s3_endpoint or "AWS S3",
            secrets_to_hide=(settings.s3_secret_key or "", settings.s3_access_key or ""),
        )

    @property
    def is_local(self) -> bool:
        """Whether the lake is on this machine's filesystem."""
        return self.backend.is_local

    @property
    def url(self) -> str:
        """The root as a user would type it: an absolute path or `s3://bucket/prefix`."""
        return self.backend.url

    @property
    def location(self) -> str:
        """Where the lake is, for messages: the path, or bucket and endpoint on S3."""
        return self.backend.location

    @property
    def temporary_max_age_s(self) -> float:
        """The age past which `sweep_temporaries` removes a leftover of this store's writes."""
        return self.backend.temporary_max_age_s

    def full_path(self, relative: str) -> str:
        """The filesystem path of a relative lake path."""
        return self.backend.full_path(relative)

    @contextmanager
    def _failures(
        self,
        action: str,
        *,
        reading: bool = False,
        classify: Callable[[BaseException], StorageErrorKind] | None = None,
    ) -> Iterator[None]:
        """Turn any exception of the block into a `StorageError` naming `action`, of the kind
        `classify` (the backend's `error_kind` by default) gives.

        Exceptions nobody classified are `transient`: the ingest then keeps the messages and
        retries rather than losing them. Reading a file that does not exist is `rejected`.
        """
        try:
            yield
        except StorageError:
            raise
        except Exception as error:
            kind = (classify or self.backend.error_kind)(error)
            if reading and isinstance(error, FileNotFoundError):
                kind = "rejected"
            detail = str(error) or type(error).__name__
            for hidden in self._secrets:
                detail = detail.replace(hidden, "***")
            where = self.backend.error_context
            message = f"cannot {action}{where}: {type(error).__name__}: {detail}"
            raise StorageError(message, kind) from error

    def check_access(self) -> None:
        """Fail with one clear `denied` error when the lake cannot be used at all.

        Credentials, permissions or a missing bucket raise; a store that is only unreachable
        right now passes (the callers retry their writes with backoff).
        """
        try:
            with self._failures("open the lake", classify=self.backend.access_error_kind):
                self.backend.check_access()
        except StorageError as error:
            if error.kind == "denied":
                raise

    def write_parquet(
        self, frame: pl.DataFrame, relative: str, *, row_group_size: int | None = None
    ) -> int:
        """Write `frame` atomically as ZSTD-3 Parquet; returns the file's size in bytes."""
        options = dict(PARQUET_OPTIONS, row_group_size=row_group_size)
        return self._write(relative, lambda handle: frame.write_parquet(handle, **options))

    def write_parquet_digest(
        self, frame: pl.DataFrame, relative: str, *, row_group_size: int | None = None
    ) -> tuple[int, str]:
        """`write_parquet`, also returning the SHA-256 (hex) of the bytes written: hashed as
        the writer emits them, so the file is never held whole in memory."""
        options = dict(PARQUET_OPTIONS, row_group_size=row_group_size)
        digest = hashlib.sha256()

        def write(handle: BinaryIO) -> None:
            frame.write_parquet(HashingWriter(handle, digest), **options)

        return self._write(relative, write), digest.hexdigest()

    def write_parquet_named(
        self,
        frame: pl.DataFrame,
        relative_folder: str,
        name_of: Callable[[str], str],
        *,
        row_group_size: int | None = None,
    ) -> tuple[str, int, str]:
        """Write `frame` as a Parquet file of `relative_folder` named by `name_of(its SHA-256
        in hex)`: its relative path, size and digest. Same rows, same bytes, same name: a file
        already stored under it is kept (see the backends' `write_named`)."""
        options = dict(PARQUET_OPTIONS, row_group_size=row_group_size)
        digest = hashlib.sha256()

        def write(handle: BinaryIO) -> None:
            frame.write_parquet(HashingWriter(handle, digest), **options)

        folder = self.full_path(relative_folder)
        with self._failures(f"write a file into {self._shown(folder)}"):
            path, size = self.backend.write_named(
                folder, write, lambda: name_of(digest.hexdigest())
            )
        return self.backend.relative_path(path), size, digest.hexdigest()

    def write_parquet_files(
        self, files: Sequence[tuple[pl.DataFrame, str]]
    ) -> list[int | StorageError]:
        """Write many small Parquet files at once, each atomically: for each file its size,
        or the `StorageError` that file failed with.

        The backend's `write_threads` threads write the files (16 concurrent PUTs on S3);
        locally each through an fsynced hidden temporary file renamed into place, then every
        folder whose entries changed is fsynced, again at once (the fsyncs of one commit
        overlap and the filesystem's journal takes them together). A file the store rejects
        fails alone; after a transient or denied failure no further file is tried (they fail
        with "not tried"), so a store that is down costs a few failed writes, not one per file.
        """
        stop = threading.Event()

        def write_one(frame: pl.DataFrame, relative: str) -> WrittenFile | StorageError:
            path = self.full_path(relative)
            if stop.is_set():
                message = f"cannot write {self._shown(path)}: not tried after an earlier failure"
                return StorageError(message)
            try:
                with self._failures(f"write {self._shown(path)}"):
                    write = functools.partial(frame.write_parquet, **PARQUET_OPTIONS)
                    return self.backend.write_unsynced(path, write)
            except StorageError as error:
                if error.kind != "rejected":
                    stop.set()
                return error

        with ThreadPoolExecutor(self.backend.write_threads) as pool:
            outcomes = list(pool.map(write_one, *zip(*files, strict=True))) if files else []
            folders = sorted(
                {
                    folder
                    for done in outcomes
                    if isinstance(done, WrittenFile)
                    for folder in done.folders_to_sync
                }
            )
            failed_syncs = [error for error in pool.map(self._sync_folder, folders) if error]
        # a file in place but not durable failed too (with the first failed sync)
        return [
            done
            if isinstance(done, StorageError)
            else (failed_syncs[0] if failed_syncs else done.size)
            for done in outcomes
        ]

    def _sync_folder(self, folder: str) -> StorageError | None:
        """None once the folder's new entries are durable; else the failure (the files exist:
        a retry overwrites the same names)."""
        try:
            with self._failures(f"sync {folder}"):
                self.backend.sync_folder(folder)
        except StorageError as error:
            return error
        return None

    def write_bytes(self, body: bytes, relative: str) -> int:
        """Write `body` atomically; returns its size."""
        return self._write(relative, lambda handle: handle.write(body))

    def _write(self, relative: str, write: WriteBody) -> int:
        path = self.full_path(relative)
        with self._failures(f"write {self._shown(path)}"):
            return self.backend.write(path, write)

    def sweep_temporaries(self, older_than_s: float | None = None) -> list[str]:
        """Remove what writes that were killed left, older than `older_than_s` seconds
        (`temporary_max_age_s` by default): locally the hidden temporary files
        (`.part-00000.parquet.1a2b3c4d5e6f.tmp`) by their last write, on S3 the multipart
        uploads never completed (their parts are stored, and billed, until aborted) by their
        start. Returns the relative paths swept, sorted. Younger ones may be writes in
        flight: kept.

        Locally every folder of the lake is scanned (a start-up or maintenance task).
        """
        deadline = time.time() - (
            self.temporary_max_age_s if older_than_s is None else older_than_s
        )
        with self._failures(f"sweep temporaries below {self._shown(self.root)}"):
            return self.backend.sweep_temporaries(deadline)

    def list_files(self, relative_dir: str, suffix: str = ".parquet") -> list[str]:
        """Relative paths of the files below a folder ending with `suffix`, sorted.

        Hidden files (temporary files of unfinished writes) are never listed.
        """
        base = self.full_path(relative_dir)
        with self._failures(f"list {self._shown(base)}"):
            found = self.backend.find(base)
        return sorted(relative for relative, _ in self._listed(found, suffix))

    def list_files_with_mtime(
        self, relative_dir: str, suffix: str = ".parquet"
    ) -> dict[str, int | None]:
        """`list_files`, each with the time the store recorded the file (ns since the epoch:
        S3's `LastModified`, a local file's mtime; None where the store tells neither), in
        one listing as `list_files`. The store's clock is one for every writer."""
        base = self.full_path(relative_dir)
        with self._failures(f"list {self._shown(base)}"):
            found = self.backend.find_with_mtime(base)
        return {relative: found[path] for relative, path in sorted(self._listed(found, suffix))}

    def _listed(self, paths: Iterable[str], suffix: str) -> Iterator[tuple[str, str]]:
        """(relative path, full path) of the files of `paths` ending with `suffix` that are
        not hidden."""
        for path in paths:
            if path.endswith(suffix) and not posixpath.basename(path).startswith("."):
                yield self.backend.relative_path(path), path

    def list_folders(self, relative_dir: str) -> list[str]:
        """Names of the folders directly below a folder, sorted (empty when it is absent)."""
        base = self.full_path(relative_dir)
        with self._failures(f"list {self._shown(base)}"):
            return sorted(self.backend.list_folders(base))

    def read_parquet(
        self, relatives: Sequence[str], columns: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """The rows of several Parquet files, in the order given.

        Without `columns` every file must have the same schema; with them, a file may hold
        other columns too (Bronze files written before the partition column moved out of the
        files still hold it), which are not read. Paths are taken literally: `[`, `*` or `?`
        in a partition value is never a glob. A file that is not valid Parquet is a
        `rejected` error naming it.
        """
        paths = [self.full_path(relative) for relative in relatives]
        if not paths:
            raise ValueError("read_parquet needs at least one file")
        selected = list(columns) if columns is not None else None
        action = f"read {len(paths)} files below {self._shown(self.root)}"
        with self._failures(action, reading=True):
            return self.backend.read_parquet(paths, selected)

    def read_bytes(self, relative: str) -> bytes:
        """The raw bytes of one file."""
        path = self.full_path(relative)
        with self._failures(f"read {self._shown(path)}", reading=True):
            return self.backend.read_bytes(path)

    def read_many_bytes(self, relatives: Sequence[str]) -> list[bytes]:
        """The raw bytes of several files, in the order given (concurrent GETs on S3)."""
        paths = [self.full_path(relative) for relative in relatives]
        if not paths:
            return []
        action = f"read {len(paths)} files below {self._shown(self.root)}"
        with self._failures(action, reading=True):
            return self.backend.read_many_bytes(paths)

    def delete(self, relatives: Iterable[str]) -> None:
        """Remove files of the derived tiers, one by one by their exact names; a file
        already gone is no error. Bronze files can never be removed."""
        paths = [self.full_path(_deletable(relative)) for relative in relatives]
        for path in paths:
            with self._failures(f"delete {self._shown(path)}"):
                self.backend.delete_file(path)

    def _shown(self, path: str) -> str:
        return self.backend.shown(path)


def _deletable(relative: str) -> str:
    """`relative` normalized, refusing Bronze and anything outside the lake root."""
    normalized = posixpath.normpath(relative)
    first = normalized.split("/", 1)[0]
    if normalized.startswith("/") or first == "..":
        raise PermissionError(f"refusing to delete {relative}: outside the lake root")
    if first == APPEND_ONLY_TIER:
        raise PermissionError(f"Bronze is append-only: refusing to delete {relative}")
    return normalized
