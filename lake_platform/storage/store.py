"""`LakeStore`: the lake's files on local disk or S3, through fsspec.

Every Parquet file is ZSTD level 3 and written atomically: on local disk a hidden temporary
file in the same folder, fsync, rename, fsync of the folder (and of the parent of every folder
the write created); on S3 one PUT, or for a file larger than a part (`S3_PART_BYTES`) one
multipart upload streamed part by part, which S3 makes visible only once it is completed and
which is aborted on any failure. A write never holds the whole file in memory.
Bronze files can be written but never deleted through this class.

Every failure of the underlying filesystem (OSError, botocore's connection and client errors,
anything s3fs raises) leaves as a `StorageError` whose `kind` tells the caller what to do.
"""

import errno
import functools
import hashlib
import io
import os
import posixpath
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import BinaryIO, Literal

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

from lake_platform.settings import LakeSettings, SettingsError, redact_url
from lake_platform.storage.paths import LAKE_KEY_MAX_BYTES

PARQUET_OPTIONS: dict[str, object] = {
    "compression": "zstd",
    "compression_level": 3,
    "statistics": True,
}
APPEND_ONLY_TIER = "bronze"

StorageErrorKind = Literal["transient", "rejected", "denied"]

S3_REJECTED_CODES = frozenset(
    {
        "KeyTooLongError",
        "InvalidArgument",
        "InvalidObjectName",
        "InvalidURI",
        "EntityTooLarge",
        "MetadataTooLarge",
        "NoSuchKey",
    }
)
"""S3 error codes that refuse one object: retrying the same write or read never helps."""
S3_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidToken",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
    }
)
"""S3 error codes that need an operator: credentials, permissions, a missing bucket."""
LOCAL_REJECTED_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})
"""A name the local filesystem refuses; a vanished folder or mount is transient, not this."""
LOCAL_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
BOTO_DENIED_ERRORS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "ParamValidationError"}
)
"""botocore errors raised before any request: missing credentials, an invalid bucket name."""
S3_KEY_MAX_BYTES = 1_024
WRITE_THREADS = 16
"""Threads writing the files of one ingest commit to local disk: Parquet encoding, file
creation and fsync release the GIL, and concurrent fsyncs share the journal's commits."""
S3_WRITE_THREADS = 16
"""Concurrent PUTs of one ingest commit on S3."""
S3_PART_BYTES = 32 * 1024**2
"""Part size of a streamed S3 upload: a write holds about two parts in memory whatever the
file's size (a 1 GB file goes up in 32 parts with ~64 MiB held); a smaller file is one PUT.
S3 requires parts of at least 5 MiB (but the last) and at most 10,000 of them (~320 GB)."""
TEMPORARY_MAX_AGE_S = 3_600
"""Age since its last write past which a local write's hidden temporary file is taken for
what a killed writer (SIGKILL, power loss) left, and `sweep_temporaries` removes it. A live
write touches its temporary with every block it writes, so an hour is far from it."""
UPLOAD_MAX_AGE_S = 24 * 3_600
"""Age since it started past which an S3 multipart upload never completed is taken for what
a killed writer left, and aborted. S3 does not advance it with each part, so it must exceed
the longest write: a 1 GB file over a slow link takes hours, not a day."""
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")
"""Names of the temporary files of local writes (`_temporary_path`)."""
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}}
"""Bounded waits: a store that stopped answering fails a call in seconds, and the caller's
own retry (with backoff) takes over, instead of one call hanging for minutes."""


class StorageError(RuntimeError):
    """The lake's storage failed; nothing of the failed operation was committed.

    `kind` is `transient` (unreachable, timeout, 5xx, slow down, disk full: retry later),
    `rejected` (the store refuses this object, e.g. a name too long: retrying never helps), or
    `denied` (credentials, permissions or a missing bucket: an operator must act).
    """

    def __init__(self, message: str, kind: StorageErrorKind = "transient") -> None:
        super().__init__(message)
        self.kind: StorageErrorKind = kind


def _s3_error_code(error: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError in the exception's cause chain."""
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
        seen = seen.__cause__ or seen.__context__
    return None


def storage_error_kind(error: BaseException) -> StorageErrorKind:
    """What a filesystem exception means for the caller (see `StorageError`)."""
    code = _s3_error_code(error)
    if code in S3_REJECTED_CODES:
        return "rejected"
    if code in S3_DENIED_CODES:
        return "denied"
    if code is not None:
        return "transient"
    if type(error).__name__ in BOTO_DENIED_ERRORS:
        return "denied"
    if isinstance(error, OSError) and error.errno in LOCAL_REJECTED_ERRNOS:
        return "rejected"
    if isinstance(error, OSError) and error.errno in LOCAL_DENIED_ERRNOS:
        return "denied"
    return "transient"


class LakeStore:
    """Files under one lake root; every path given to or returned by it is relative to it."""

    def __init__(
        self,
        root: str,
        fs: fsspec.AbstractFileSystem,
        *,
        endpoint: str | None = None,
        secrets_to_hide: Sequence[str] = (),
    ) -> None:
        self.fs = fs
        self.is_local = isinstance(fs, LocalFileSystem)
        self.root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        self.endpoint = redact_url(endpoint) if endpoint else None
        self.s3_part_bytes = S3_PART_BYTES
        self._secrets = tuple(value for value in secrets_to_hide if value)

    @classmethod
    def from_settings(cls, settings: LakeSettings) -> "LakeStore":
        """The store at `DATA_ROOT`, local or S3 (credentials from the settings)."""
        if not settings.use_s3:
            return cls(settings.data_root, fsspec.filesystem("file"))
        import s3fs

        prefix_bytes = len(settings.data_root.removeprefix("s3://").encode()) + 1
        if prefix_bytes + LAKE_KEY_MAX_BYTES >= S3_KEY_MAX_BYTES:
            raise SettingsError(
                f"DATA_ROOT is {prefix_bytes} bytes long: with the lake's own keys (up to "
                f"{LAKE_KEY_MAX_BYTES} bytes) it would exceed S3's {S3_KEY_MAX_BYTES}-byte limit"
            )
        client_kwargs = {"region_name": settings.s3_region} if settings.s3_region else {}
        fs = s3fs.S3FileSystem(
            key=settings.s3_access_key,
            secret=settings.s3_secret_key,
            endpoint_url=settings.s3_endpoint,
            client_kwargs=client_kwargs,
            config_kwargs=S3_CONFIG,
            skip_instance_cache=True,
        )
        return cls(
            settings.data_root.removeprefix("s3://"),
            fs,
            endpoint=settings.s3_endpoint or "AWS S3",
            secrets_to_hide=(settings.s3_secret_key or "", settings.s3_access_key or ""),
        )

    @property
    def url(self) -> str:
        """The root as a user would type it: an absolute path or `s3://bucket/prefix`."""
        return self.root if self.is_local else f"s3://{self.root}"

    @property
    def location(self) -> str:
        """Where the lake is, for messages: the path, or bucket and endpoint on S3."""
        if self.is_local:
            return self.root
        bucket = self.root.split("/", 1)[0]
        return f"bucket {bucket!r} ({self.url}) at {self.endpoint}"

    def full_path(self, relative: str) -> str:
        """The filesystem path of a relative lake path."""
        return posixpath.join(self.root, relative)

    @contextmanager
    def _failures(self, action: str, *, reading: bool = False) -> Iterator[None]:
        """Turn any exception of the block into a `StorageError` naming `action`.

        Exceptions nobody classified are `transient`: the ingest then keeps the messages and
        retries rather than losing them. Reading a file that does not exist is `rejected`.
        """
        try:
            yield
        except StorageError:
            raise
        except Exception as error:
            kind = storage_error_kind(error)
            if reading and isinstance(error, FileNotFoundError):
                kind = "rejected"
            detail = str(error) or type(error).__name__
            for hidden in self._secrets:
                detail = detail.replace(hidden, "***")
            where = "" if self.is_local else f" in {self.location}"
            message = f"cannot {action}{where}: {type(error).__name__}: {detail}"
            raise StorageError(message, kind) from error

    def check_access(self) -> None:
        """Fail with one clear `denied` error when the lake cannot be used at all.

        Credentials, permissions or a missing bucket raise; a store that is only unreachable
        right now passes (the callers retry their writes with backoff).
        """
        try:
            with self._failures("open the lake"):
                if self.is_local:
                    os.makedirs(self.root, exist_ok=True)
                else:
                    self.fs.ls(self.root.split("/", 1)[0], refresh=True)
        except StorageError as error:
            if error.kind == "denied":
                raise
            if error.kind == "rejected" and not self.is_local:
                raise StorageError(str(error), "denied") from error

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
        the writer emits them, so the file is never held whole in memory (locally)."""
        options = dict(PARQUET_OPTIONS, row_group_size=row_group_size)
        digest = hashlib.sha256()

        def write(handle: BinaryIO) -> None:
            frame.write_parquet(_HashingWriter(handle, digest), **options)

        return self._write(relative, write), digest.hexdigest()

    def write_parquet_files(
        self, files: Sequence[tuple[pl.DataFrame, str]]
    ) -> list[int | StorageError]:
        """Write many small Parquet files at once, each atomically: for each file its size,
        or the `StorageError` that file failed with.

        `WRITE_THREADS` threads (on S3 `S3_WRITE_THREADS` concurrent PUTs) write the files;
        locally each through an fsynced hidden temporary file renamed into place, then every
        folder whose entries changed is fsynced, again at once (the fsyncs of one commit
        overlap and the filesystem's journal takes them together). A file the store rejects
        fails alone; after a transient or denied failure no further file is tried (they fail
        with "not tried"), so a store that is down costs a few failed writes, not one per file.
        """
        stop = threading.Event()

        def write_one(frame: pl.DataFrame, relative: str) -> tuple[int, set[str]] | StorageError:
            path = self.full_path(relative)
            if stop.is_set():
                message = f"cannot write {self._shown(path)}: not tried after an earlier failure"
                return StorageError(message)
            try:
                with self._failures(f"write {self._shown(path)}"):
                    write = functools.partial(frame.write_parquet, **PARQUET_OPTIONS)
                    if self.is_local:
                        return _write_local(path, write)
                    return self._put(path, write), set()
            except StorageError as error:
                if error.kind != "rejected":
                    stop.set()
                return error

        threads = WRITE_THREADS if self.is_local else S3_WRITE_THREADS
        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(write_one, *zip(*files, strict=True))) if files else []
            folders = sorted(
                {folder for done in outcomes if isinstance(done, tuple) for folder in done[1]}
            )
            failed_syncs = [error for error in pool.map(self._sync_folder, folders) if error]
        return [
            done if isinstance(done, StorageError) else failed_syncs[0] if failed_syncs else done[0]
            for done in outcomes
        ]

    def _sync_folder(self, folder: str) -> StorageError | None:
        """None once the folder's new entries are durable; else the failure (the files exist:
        a retry overwrites the same names)."""
        try:
            with self._failures(f"sync {folder}"):
                _fsync_path(folder)
        except StorageError as error:
            return error
        return None

    def write_bytes(self, body: bytes, relative: str) -> int:
        """Write `body` atomically; returns its size."""
        return self._write(relative, lambda handle: handle.write(body))

    def _write(self, relative: str, write: Callable[[BinaryIO], object]) -> int:
        path = self.full_path(relative)
        with self._failures(f"write {self._shown(path)}"):
            if self.is_local:
                return _write_local_atomically(path, write)
            return self._put(path, write)

    def _put(self, path: str, write: Callable[[BinaryIO], object]) -> int:
        """One S3 object from what `write` writes, streamed; its size.

        fsspec files commit what they hold when closed, also from `__exit__` and `__del__`
        after an exception: so the file is closed only once `write` succeeded, and on any
        failure the upload is discarded (a started multipart upload aborted) and the file
        marked closed, so that no partial object ever appears.
        """
        handle = self.fs.open(path, "wb", block_size=self.s3_part_bytes)
        try:
            write(handle)
            size = handle.tell()
            handle.close()
        except BaseException:
            _discard(handle)
            raise
        return size

    @property
    def temporary_max_age_s(self) -> float:
        """The age past which `sweep_temporaries` removes a leftover of this store's writes."""
        return TEMPORARY_MAX_AGE_S if self.is_local else UPLOAD_MAX_AGE_S

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
            if self.is_local:
                return _sweep_local(self.root, deadline)
            return self._abort_uploads(deadline)

    def _abort_uploads(self, deadline: float) -> list[str]:
        """Abort the multipart uploads below the root started before `deadline`."""
        bucket, _, prefix = self.root.partition("/")
        prefix = f"{prefix}/" if prefix else ""
        aborted = []
        markers: dict[str, str] = {}
        while True:
            page = self.fs.call_s3(
                "list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers
            )
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < deadline:
                    self.fs.call_s3(
                        "abort_multipart_upload",
                        Bucket=bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    aborted.append(upload["Key"].removeprefix(prefix))
            if not page.get("IsTruncated"):
                return sorted(aborted)
            markers = {
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }

    def list_files(self, relative_dir: str, suffix: str = ".parquet") -> list[str]:
        """Relative paths of the files below a folder ending with `suffix`, sorted.

        Hidden files (temporary files of unfinished writes) are never listed.
        """
        base = self.full_path(relative_dir)
        with self._failures(f"list {self._shown(base)}"):
            try:
                found = self.fs.find(base)
            except FileNotFoundError:
                return []
        root = self.root.rstrip("/") + "/"
        return sorted(
            path.removeprefix(root)
            for path in found
            if path.endswith(suffix) and not posixpath.basename(path).startswith(".")
        )

    def list_folders(self, relative_dir: str) -> list[str]:
        """Names of the folders directly below a folder, sorted (empty when it is absent)."""
        base = self.full_path(relative_dir)
        with self._failures(f"list {self._shown(base)}"):
            try:
                entries = self.fs.ls(base, detail=True)
            except FileNotFoundError:
                return []
        return sorted(
            posixpath.basename(entry["name"].rstrip("/"))
            for entry in entries
            if entry["type"] == "directory"
        )

    def read_parquet(
        self, relatives: Sequence[str], columns: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """The rows of several Parquet files, in the order given.

        Without `columns` every file must have the same schema; with them, a file may hold
        other columns too (Bronze files written before the partition column moved out of the
        files still hold it), which are not read. Paths are taken literally: `[`, `*` or `?`
        in a partition value is never a glob.
        """
        paths = [self.full_path(relative) for relative in relatives]
        if not paths:
            raise ValueError("read_parquet needs at least one file")
        selected = list(columns) if columns is not None else None
        if self.is_local:
            action = f"read {len(paths)} files below {self._shown(self.root)}"
            try:
                with self._failures(action, reading=True):
                    if selected is None:
                        return pl.read_parquet(paths, glob=False)
                    scan = pl.scan_parquet(paths, glob=False, extra_columns="ignore")
                    return scan.select(selected).collect()
            except StorageError as error:
                if isinstance(error.__cause__, pl.exceptions.PolarsError):
                    for path in paths:  # which one: read again one by one, only on this path
                        self._parquet(path, path, selected)
                raise
        bodies = self.read_many_bytes(relatives)
        return pl.concat(
            [
                self._parquet(io.BytesIO(body), path, selected)
                for body, path in zip(bodies, paths, strict=True)
            ]
        )

    def _parquet(
        self, source: str | io.BytesIO, path: str, columns: list[str] | None
    ) -> pl.DataFrame:
        """One file's rows, or a `rejected` error naming the file when it is not valid Parquet
        (truncated, corrupt): retrying cannot help, and the name says which file to repair."""
        try:
            return pl.read_parquet(source, columns=columns, glob=False)
        except pl.exceptions.PolarsError as error:
            message = f"cannot read {self._shown(path)}: not a readable Parquet file: {error}"
            raise StorageError(message, "rejected") from error

    def read_bytes(self, relative: str) -> bytes:
        """The raw bytes of one file."""
        path = self.full_path(relative)
        with self._failures(f"read {self._shown(path)}", reading=True):
            return self.fs.cat_file(path)

    def read_many_bytes(self, relatives: Sequence[str]) -> list[bytes]:
        """The raw bytes of several files, in the order given (concurrent GETs on S3)."""
        paths = [self.full_path(relative) for relative in relatives]
        if not paths:
            return []
        action = f"read {len(paths)} files below {self._shown(self.root)}"
        with self._failures(action, reading=True):
            return self.fs.cat_ranges(paths, None, None, on_error="raise")

    def delete(self, relatives: Iterable[str]) -> None:
        """Remove files of the derived tiers, one by one by their exact names (fsspec's `rm`
        would expand `[`, `*` or `?` in a path as a glob); a file already gone is no error.
        Bronze files can never be removed."""
        paths = [self.full_path(_deletable(relative)) for relative in relatives]
        for path in paths:
            with self._failures(f"delete {self._shown(path)}"), suppress(FileNotFoundError):
                self.fs.rm_file(path)

    def _shown(self, path: str) -> str:
        return path if self.is_local else f"s3://{path}"


class _HashingWriter:
    """A binary file-like object that hashes what it forwards to `handle`."""

    def __init__(self, handle: BinaryIO, digest: "hashlib._Hash") -> None:
        self._handle = handle
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


def _discard(handle: AbstractBufferedFile) -> None:
    """Abort an unfinished S3 upload (best effort: an abort that fails leaves invisible parts
    that the bucket's lifecycle rules expire) and keep the file from committing later."""
    try:
        with suppress(Exception):
            handle.discard()
    finally:
        handle.closed = True


def _deletable(relative: str) -> str:
    """`relative` normalized, refusing Bronze and anything outside the lake root."""
    normalized = posixpath.normpath(relative)
    first = normalized.split("/", 1)[0]
    if normalized.startswith("/") or first == "..":
        raise PermissionError(f"refusing to delete {relative}: outside the lake root")
    if first == APPEND_ONLY_TIER:
        raise PermissionError(f"Bronze is append-only: refusing to delete {relative}")
    return normalized


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


def _write_local(path: str, write: Callable[[BinaryIO], object]) -> tuple[int, set[str]]:
    """Write `path` through a hidden, fsynced temporary file renamed into place; its size and
    the folders whose entries changed (its own, and the parent of every folder it created),
    for the caller to fsync.

    A writer that loses the file's `ENOSPC` (Polars' Parquet writer reports "Invalid thrift:
    transport error") is reported as the `ENOSPC` it was, when the filesystem is full.
    """
    folder, name = os.path.split(path)
    created = _missing_folders(folder)
    os.makedirs(folder, exist_ok=True)
    temporary = _temporary_path(folder, name)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
            size = handle.tell()
        os.replace(temporary, path)
    except BaseException as error:
        full = not isinstance(error, OSError) and _disk_full(folder)
        if os.path.exists(temporary):
            os.remove(temporary)
        if full:
            detail = f"{os.strerror(errno.ENOSPC)} ({type(error).__name__}: {error})"
            raise OSError(errno.ENOSPC, detail) from error
        raise
    return size, {folder, *(os.path.dirname(new) for new in created)}


def _temporary_path(folder: str, name: str) -> str:
    """The hidden file a local write of `name` goes through (its name fits `TEMPORARY_NAME`)."""
    return os.path.join(folder, f".{name}.{secrets.token_hex(6)}.tmp")


def _sweep_local(root: str, deadline: float) -> list[str]:
    """Remove the temporary files below `root` last written before `deadline`; their paths
    relative to `root`. One removed meanwhile (a concurrent sweep) is no error."""
    swept = []
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if not TEMPORARY_NAME.fullmatch(name):
                continue
            with suppress(FileNotFoundError):
                if os.stat(path).st_mtime < deadline:
                    os.remove(path)
                    swept.append(os.path.relpath(path, root))
    return sorted(swept)


def _fsync_path(path: str) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _write_local_atomically(path: str, write: Callable[[BinaryIO], object]) -> int:
    """`_write_local`, then an fsync of every folder whose entries it changed."""
    size, folders = _write_local(path, write)
    for folder in sorted(folders):
        _fsync_path(folder)
    return size
