"""`LakeStore`: the lake's files on local disk or S3, through fsspec.

Every Parquet file is ZSTD level 3 and written atomically: on local disk a hidden temporary
file in the same folder, fsync, rename, fsync of the folder; on S3 a single PUT (s3fs turns a
large body into one multipart upload, which S3 also makes visible only once complete).
Bronze files can be written but never deleted through this class.
"""

import io
import os
import posixpath
import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import BinaryIO

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from lake_platform.settings import LakeSettings

PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 3,
    "statistics": True,
}
APPEND_ONLY_TIER = "bronze"


class StorageError(RuntimeError):
    """The lake's storage failed (unreachable, denied, full): nothing was committed."""


class LakeStore:
    """Files under one lake root; every path given to or returned by it is relative to it."""

    def __init__(self, root: str, fs: fsspec.AbstractFileSystem) -> None:
        self.fs = fs
        self.is_local = isinstance(fs, LocalFileSystem)
        self.root = os.path.abspath(root) if self.is_local else root.rstrip("/")

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> "LakeStore":
        """The store at `DATA_ROOT`, local or S3 (credentials from the settings)."""
        if not settings.use_s3:
            return cls(settings.data_root, fsspec.filesystem("file"))
        import s3fs

        client_kwargs = {"region_name": settings.s3_region} if settings.s3_region else {}
        fs = s3fs.S3FileSystem(
            key=settings.s3_access_key,
            secret=settings.s3_secret_key,
            endpoint_url=settings.s3_endpoint,
            client_kwargs=client_kwargs,
            skip_instance_cache=True,
        )
        return cls(settings.data_root.removeprefix("s3://"), fs)

    @property
    def url(self) -> str:
        """The root as a user would type it: an absolute path or `s3://bucket/prefix`."""
        return self.root if self.is_local else f"s3://{self.root}"

    def full_path(self, relative: str) -> str:
        """The filesystem path of a relative lake path."""
        return posixpath.join(self.root, relative)

    def write_parquet(
        self, frame: pl.DataFrame, relative: str, *, row_group_size: int | None = None
    ) -> int:
        """Write `frame` atomically as ZSTD-3 Parquet; returns the file's size in bytes."""
        options = dict(PARQUET_OPTIONS, row_group_size=row_group_size)
        return self._write(relative, lambda handle: frame.write_parquet(handle, **options))

    def write_bytes(self, body: bytes, relative: str) -> int:
        """Write `body` atomically; returns its size."""
        return self._write(relative, lambda handle: handle.write(body))

    def _write(self, relative: str, write: Callable[[BinaryIO], object]) -> int:
        path = self.full_path(relative)
        try:
            if self.is_local:
                return _write_local_atomically(path, write)
            body = io.BytesIO()
            write(body)
            self.fs.pipe_file(path, body.getvalue())
            return body.tell()
        except OSError as error:
            raise StorageError(f"cannot write {self._shown(path)}: {error}") from error

    def list_files(self, relative_dir: str, suffix: str = ".parquet") -> list[str]:
        """Relative paths of the files below a folder ending with `suffix`, sorted.

        Hidden files (temporary files of unfinished writes) are never listed.
        """
        base = self.full_path(relative_dir)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StorageError(f"cannot list {self._shown(base)}: {error}") from error
        root = self.root.rstrip("/") + "/"
        return sorted(
            path.removeprefix(root)
            for path in found
            if path.endswith(suffix) and not posixpath.basename(path).startswith(".")
        )

    def list_folders(self, relative_dir: str) -> list[str]:
        """Names of the folders directly below a folder, sorted (empty when it is absent)."""
        base = self.full_path(relative_dir)
        try:
            entries = self.fs.ls(base, detail=True)
        except FileNotFoundError:
            return []
        except OSError as error:
            raise StorageError(f"cannot list {self._shown(base)}: {error}") from error
        return sorted(
            posixpath.basename(entry["name"].rstrip("/"))
            for entry in entries
            if entry["type"] == "directory"
        )

    def read_parquet(
        self, relatives: Sequence[str], columns: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """The rows of several Parquet files (all with the same schema), in the order given."""
        paths = [self.full_path(relative) for relative in relatives]
        if not paths:
            raise ValueError("read_parquet needs at least one file")
        selected = list(columns) if columns is not None else None
        try:
            if self.is_local:
                return pl.read_parquet(paths, columns=selected)
            bodies = self.fs.cat(paths)
        except OSError as error:
            raise StorageError(f"cannot read {len(paths)} files: {error}") from error
        return pl.concat(
            [pl.read_parquet(io.BytesIO(bodies[path]), columns=selected) for path in paths]
        )

    def read_bytes(self, relative: str) -> bytes:
        """The raw bytes of one file."""
        return self.fs.cat_file(self.full_path(relative))

    def delete(self, relatives: Iterable[str]) -> None:
        """Remove files of the derived tiers; Bronze files can never be removed."""
        paths = []
        for relative in relatives:
            if relative.split("/", 1)[0] == APPEND_ONLY_TIER:
                raise PermissionError(f"Bronze is append-only: refusing to delete {relative}")
            paths.append(self.full_path(relative))
        if paths:
            self.fs.rm(paths)

    def _shown(self, path: str) -> str:
        return path if self.is_local else f"s3://{path}"


def _write_local_atomically(path: str, write: Callable[[BinaryIO], object]) -> int:
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    folder_handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_handle)
    finally:
        os.close(folder_handle)
    return size
