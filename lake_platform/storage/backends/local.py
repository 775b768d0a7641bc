"""`LocalBackend`: the lake on this machine's filesystem.

A write goes through a hidden temporary file in the same folder: written, fsynced, renamed
into place, then the folder (and the parent of every folder the write created) fsynced. A
killed writer leaves only the hidden temporary, which `sweep_temporaries` removes once it
is old.
"""

import errno
import os
import re
import secrets
from collections.abc import Callable, Sequence
from contextlib import suppress

import fsspec
import polars as pl

from lake_platform.storage.backends.base import Backend, WriteBody, WrittenFile
from lake_platform.storage.errors import StorageErrorKind, os_error_kind
from lake_platform.storage.parquet import read_parquet_file

WRITE_THREADS = 16
"""Threads writing the files of one ingest commit to local disk: Parquet encoding, file
creation and fsync release the GIL, and concurrent fsyncs share the journal's commits."""
TEMPORARY_MAX_AGE_S = 3_600
"""Age since its last write past which a local write's hidden temporary file is taken for
what a killed writer (SIGKILL, power loss) left, and `sweep_temporaries` removes it. A live
write touches its temporary with every block it writes, so an hour is far from it."""
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")
"""Names of the temporary files of local writes (`_temporary_path`)."""


class LocalBackend(Backend):
    """Files below an absolute folder of the local filesystem."""

    is_local = True
    write_threads = WRITE_THREADS
    temporary_max_age_s = TEMPORARY_MAX_AGE_S

    def __init__(self, root: str, fs: fsspec.AbstractFileSystem) -> None:
        super().__init__(os.path.abspath(root), fs)

    @property
    def url(self) -> str:
        return self.root

    @property
    def location(self) -> str:
        return self.root

    @property
    def error_context(self) -> str:
        return ""  # the paths in the message say it all

    def shown(self, path: str) -> str:
        return path

    def check_access(self) -> None:
        os.makedirs(self.root, exist_ok=True)

    def error_kind(self, error: BaseException) -> StorageErrorKind:
        return os_error_kind(error)

    def write(self, path: str, body: WriteBody) -> int:
        size, folders = self.write_unsynced(path, body)
        for folder in sorted(folders):
            _fsync_path(folder)
        return size

    def write_unsynced(self, path: str, body: WriteBody) -> WrittenFile:
        """A hidden, fsynced temporary file renamed into place; the folders to sync are its
        own and the parent of every folder it created."""
        folder, name = os.path.split(path)
        return _write_through_temporary(folder, name, body, lambda: name)[1]

    def write_named(
        self, folder: str, body: WriteBody, name_of: Callable[[], str]
    ) -> tuple[str, int]:
        """`write_unsynced` to the name `name_of` gives after the write, synced. An existing
        file of that name holds the same bytes: it is kept (not rewritten) and its time
        renewed, so that maintenance sees it as just written (its orphan sweep spares files
        younger than a grace period)."""
        path, written = _write_through_temporary(folder, "part", body, name_of, keep_existing=True)
        for synced in sorted(written.folders_to_sync):
            _fsync_path(synced)
        return path, written.size

    def sync_folder(self, folder: str) -> None:
        _fsync_path(folder)

    def sweep_temporaries(self, deadline: float) -> list[str]:
        """Remove the temporary files below the root last written before `deadline`, every
        folder of the lake scanned (a start-up or maintenance task). One removed meanwhile
        (a concurrent sweep) is no error."""
        swept = []
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(folder, name)
                if not TEMPORARY_NAME.fullmatch(name):
                    continue
                with suppress(FileNotFoundError):
                    if os.stat(path).st_mtime < deadline:
                        os.remove(path)
                        swept.append(os.path.relpath(path, self.root))
        return sorted(swept)

    def read_parquet(self, paths: Sequence[str], columns: list[str] | None) -> pl.DataFrame:
        """All files in one Polars read, paths taken literally (`glob=False`); when that
        fails on a file that is not valid Parquet, the files are read again one by one (only
        on this path) to name it in a `rejected` error."""
        try:
            if columns is None:
                return pl.read_parquet(list(paths), glob=False)
            scan = pl.scan_parquet(list(paths), glob=False, extra_columns="ignore")
            return scan.select(columns).collect()
        except pl.exceptions.PolarsError:
            for path in paths:
                read_parquet_file(path, path, columns)
            raise


def _write_through_temporary(
    folder: str,
    name: str,
    body: WriteBody,
    name_of: Callable[[], str],
    *,
    keep_existing: bool = False,
) -> tuple[str, WrittenFile]:
    """Write a hidden, fsynced temporary file for `name`, then rename it to `name_of()` in
    `folder` (or, with `keep_existing`, drop it and touch a file already there under that
    name): the final path and the written file.

    A writer that loses the file's `ENOSPC` (Polars' Parquet writer reports "Invalid
    thrift: transport error") is reported as the `ENOSPC` it was, when the filesystem is
    full.
    """
    created = _missing_folders(folder)
    os.makedirs(folder, exist_ok=True)
    temporary = _temporary_path(folder, name)
    try:
        with open(temporary, "wb") as handle:
            body(handle)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        path = os.path.join(folder, name_of())
        if keep_existing and os.path.exists(path):
            os.utime(path)
            os.remove(temporary)
        else:
            os.replace(temporary, path)
    except BaseException as error:
        full = not isinstance(error, OSError) and _disk_full(folder)
        if os.path.exists(temporary):
            os.remove(temporary)
        if full:
            detail = f"{os.strerror(errno.ENOSPC)} ({type(error).__name__}: {error})"
            raise OSError(errno.ENOSPC, detail) from error
        raise
    folders = frozenset({folder, *(os.path.dirname(new) for new in created)})
    return path, WrittenFile(size, folders)


def _disk_full(folder: str) -> bool:
    with suppress(OSError):
        return os.statvfs(folder).f_bavail == 0
    return False


def _missing_folders(folder: str) -> list[str]:
    """`folder` and its ancestors that do not exist yet, innermost first."""
    missing = []
    while folder and not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _temporary_path(folder: str, name: str) -> str:
    """The hidden file a local write of `name` goes through (its name fits `TEMPORARY_NAME`)."""
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")


def _fsync_path(path: str) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
