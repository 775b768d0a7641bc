"""`Backend`: what the lake needs of a filesystem, one subclass per kind of store.

`LakeStore` (the facade) turns relative lake paths into the backend's full paths, names the
operation in its errors and keeps the lake's rules (Bronze is append-only, hidden files are
never listed); a backend does the filesystem's part: atomic writes, listing, reading,
deleting, sweeping what killed writes left, and telling what an exception means. It raises
the filesystem's own exceptions; the facade turns them into `StorageError`s with the kind
`error_kind` gives.

Listing, reading and deleting go through fsspec the same way on every store (here);
a backend overrides them only where its filesystem needs another way.
"""

import datetime as dt
import posixpath
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import BinaryIO, NamedTuple

import fsspec
import polars as pl

from lake_platform.storage.errors import StorageErrorKind

WriteBody = Callable[[BinaryIO], object]
"""Writes a file's bytes to the handle it is given (a Parquet encoder, one `write`)."""
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class WrittenFile(NamedTuple):
    """A file written atomically, durable once each of `folders_to_sync` is fsynced (the
    folders whose entries the write changed; none on a store without folders)."""

    size: int
    folders_to_sync: frozenset[str]


class Backend(ABC):
    """The files of one lake root on one kind of store, by their full paths."""

    is_local: bool
    """Whether the files are on this machine's filesystem."""
    write_threads: int
    """Files of one ingest commit written at once."""
    temporary_max_age_s: float
    """The age past which `sweep_temporaries` removes a leftover of a killed write."""

    def __init__(self, root: str, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs
        self.root = root

    @property
    @abstractmethod
    def url(self) -> str:
        """The root as a user would type it."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the lake is, for messages."""

    @property
    @abstractmethod
    def error_context(self) -> str:
        """What an error message adds after the failed action to say where it failed."""

    @abstractmethod
    def shown(self, path: str) -> str:
        """A full path as messages show it."""

    def full_path(self, relative: str) -> str:
        """The filesystem path of a relative lake path."""
        return posixpath.join(self.root, relative)

    def relative_path(self, path: str) -> str:
        """The lake path of a full path below the root."""
        return path.removeprefix(self.root.rstrip("/") + "/")

    @abstractmethod
    def check_access(self) -> None:
        """Raise when the lake cannot be used at all (see `access_error_kind`)."""

    @abstractmethod
    def error_kind(self, error: BaseException) -> StorageErrorKind:
        """What an exception of this store means for the caller (see `StorageError`)."""

    def access_error_kind(self, error: BaseException) -> StorageErrorKind:
        """What an exception of `check_access` means (as any other, unless overridden)."""
        return self.error_kind(error)

    @abstractmethod
    def write(self, path: str, body: WriteBody) -> int:
        """Write `path` atomically and durably from what `body` writes; its size."""

    @abstractmethod
    def write_unsynced(self, path: str, body: WriteBody) -> WrittenFile:
        """Write `path` atomically; durable once the caller ran `sync_folder` on each folder
        returned (so that the syncs of many writes overlap)."""

    @abstractmethod
    def write_named(
        self, folder: str, body: WriteBody, name_of: Callable[[], str]
    ) -> tuple[str, int]:
        """Write a file into `folder` whose name `name_of` gives once `body` wrote it (a
        content address); its full path and size. A file already there under that name holds
        the same bytes (the name is their digest) and is kept as it is."""

    @abstractmethod
    def sync_folder(self, folder: str) -> None:
        """Make the entries of a folder returned by `write_unsynced` durable."""

    @abstractmethod
    def sweep_temporaries(self, deadline: float) -> list[str]:
        """Remove what killed writes left before `deadline` (epoch seconds); their relative
        paths, sorted."""

    @abstractmethod
    def read_parquet(self, paths: Sequence[str], columns: list[str] | None) -> pl.DataFrame:
        """The rows of several Parquet files, in the order given (see `LakeStore`)."""

    def find(self, path: str) -> list[str]:
        """Full paths of every file below a folder (hidden ones too); none when it is absent."""
        try:
            return self.fs.find(path)
        except FileNotFoundError:
            return []

    def find_with_mtime(self, path: str) -> dict[str, int | None]:
        """`find`, with the time the store recorded each file (ns since the epoch; None when
        the filesystem tells none): one listing, as `find`."""
        try:
            found: Mapping[str, Mapping[str, object]] = self.fs.find(path, detail=True)
        except FileNotFoundError:
            return {}
        return {name: modified_ns(info) for name, info in found.items()}

    def list_folders(self, path: str) -> list[str]:
        """Names of the folders directly below a folder (empty when it is absent)."""
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return []
        return [
            posixpath.basename(entry["name"].rstrip("/"))
            for entry in entries
            if entry["type"] == "directory"
        ]

    def read_bytes(self, path: str) -> bytes:
        return self.fs.cat_file(path)

    def read_many_bytes(self, paths: Sequence[str]) -> list[bytes]:
        """The raw bytes of several files, in the order given (concurrently where the
        filesystem can)."""
        return self.fs.cat_ranges(list(paths), None, None, on_error="raise")

    def delete_file(self, path: str) -> None:
        """Remove one file by its exact name (fsspec's `rm` would expand `[`, `*` or `?` as a
        glob); a file already gone is no error."""
        with suppress(FileNotFoundError):
            self.fs.rm_file(path)


def protocols_of(fs: fsspec.AbstractFileSystem) -> tuple[str, ...]:
    """The URL schemes of a filesystem, its own first (`("s3", "s3a")`)."""
    return (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)


def modified_ns(info: Mapping[str, object]) -> int | None:
    """When the store recorded a file, from fsspec's listing details: S3's `LastModified`,
    a local file's `mtime`; None for a filesystem that tells neither."""
    modified = info.get("LastModified", info.get("mtime"))
    if isinstance(modified, dt.datetime):
        return (modified - EPOCH) // dt.timedelta(microseconds=1) * 1_000
    if isinstance(modified, int | float):
        return round(modified * 1e9)
    return None
