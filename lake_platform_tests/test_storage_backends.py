"""What each storage backend does its own way, on both (local disk, a real S3 server):
sweeping what killed writes left, refusing a name, reading a corrupt file, telling what an
exception means, and which backend a filesystem gets."""

import errno
import os
import time

import fsspec
import polars as pl
import pytest
import s3fs
from botocore.exceptions import ClientError, NoCredentialsError
from fsspec.implementations.local import LocalFileSystem
from s3fs.errors import translate_boto_error

from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.backends import LocalBackend, ObjectStoreBackend, S3Backend

RELATIVE = "silver/t/symbol=SPY/date=2025-12-16/hour=14/part-00000.parquet"


def leave_unfinished_write(lake: LakeStore, relative: str) -> str:
    """What a writer of `relative` killed mid-write leaves (locally a hidden temporary file
    written a second ago, on S3 a multipart upload with one part); its path as swept."""
    if lake.is_local:
        folder, name = os.path.split(lake.full_path(relative))
        os.makedirs(folder, exist_ok=True)
        temporary = os.path.join(folder, f".{name}.0123456789ab.tmp")
        with open(temporary, "wb") as handle:
            handle.write(b"PAR1 the first bytes")
        then = time.time() - 1
        os.utime(temporary, (then, then))
        return os.path.relpath(temporary, lake.root)
    bucket, key = lake.full_path(relative).split("/", 1)
    upload = lake.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    part = {"PartNumber": 1, "Body": b"x" * 1024, "UploadId": upload["UploadId"]}
    lake.fs.call_s3("upload_part", Bucket=bucket, Key=key, **part)
    return relative


def test_only_leftovers_older_than_the_bound_are_swept(lake: LakeStore):
    lake.write_parquet(pl.DataFrame({"a": [1]}), RELATIVE)
    left = leave_unfinished_write(lake, RELATIVE)
    assert lake.sweep_temporaries() == []  # younger than the bound: may be a write in flight
    assert lake.sweep_temporaries(older_than_s=0) == [left]
    assert lake.sweep_temporaries(older_than_s=0) == []
    assert lake.list_files("silver") == [RELATIVE]
    assert lake.read_parquet([RELATIVE])["a"].to_list() == [1]


def test_a_name_the_store_refuses_is_rejected_and_nothing_is_left(lake: LakeStore):
    """Too long for a local file name (255 bytes) and for an S3 key (1,024 bytes)."""
    relative = f"silver/t/symbol={'x' * 1_100}/p.parquet"
    with pytest.raises(StorageError) as raised:
        lake.write_parquet(pl.DataFrame({"a": [1]}), relative)
    assert raised.value.kind == "rejected"
    assert lake.url in str(raised.value)
    assert lake.list_files("silver") == []


def test_a_missing_or_corrupt_file_is_rejected_naming_it(lake: LakeStore):
    for read in (lake.read_bytes, lambda relative: lake.read_parquet([relative])):
        with pytest.raises(StorageError) as missing:
            read("silver/absent.parquet")
        assert missing.value.kind == "rejected"
    lake.write_parquet(pl.DataFrame({"a": [1]}), RELATIVE)
    lake.write_bytes(b"not Parquet at all", "silver/t/bad.parquet")
    with pytest.raises(StorageError, match=r"bad\.parquet: not a readable Parquet file") as corrupt:
        lake.read_parquet([RELATIVE, "silver/t/bad.parquet"])
    assert corrupt.value.kind == "rejected"


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def s3_error(code: str) -> BaseException:
    """What s3fs raises for an S3 error response with `code` (botocore's error as its cause)."""
    client_error = ClientError({"Error": {"Code": code, "Message": code}}, "PutObject")
    try:
        raise translate_boto_error(client_error) from client_error
    except Exception as raised:
        return raised


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (oserror(errno.ENAMETOOLONG), "rejected"),
        (oserror(errno.EACCES), "denied"),
        (oserror(errno.EPERM), "denied"),
        (oserror(errno.EROFS), "denied"),
        (oserror(errno.ENOSPC), "transient"),
        (oserror(errno.ENOENT), "transient"),
        (ValueError("anything else"), "transient"),
    ],
)
def test_local_errors_are_classified_by_errno(tmp_path, error, kind):
    """Permissions and read-only mounts, which a test running as root cannot provoke."""
    assert LocalBackend(str(tmp_path), fsspec.filesystem("file")).error_kind(error) == kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (s3_error("KeyTooLongError"), "rejected"),
        (s3_error("NoSuchKey"), "rejected"),
        (s3_error("AccessDenied"), "denied"),
        (s3_error("InvalidAccessKeyId"), "denied"),
        (s3_error("NoSuchBucket"), "denied"),
        (s3_error("SlowDown"), "transient"),
        (s3_error("InternalError"), "transient"),
        (NoCredentialsError(), "denied"),
        (oserror(errno.ENOSPC), "transient"),
    ],
)
def test_s3_errors_are_classified_by_their_code(error, kind):
    backend = S3Backend("lake/x", s3fs.S3FileSystem(anon=True, skip_instance_cache=True))
    assert backend.error_kind(error) == kind


class OwnLocalFileSystem(LocalFileSystem):
    """A subclass of the local filesystem (as `test_listing_cost` counts listings with)."""

    cachable = False


@pytest.mark.parametrize(
    ("fs", "backend"),
    [
        (fsspec.filesystem("file"), LocalBackend),
        (OwnLocalFileSystem(), LocalBackend),
        (s3fs.S3FileSystem(anon=True, skip_instance_cache=True), S3Backend),
        (fsspec.filesystem("memory"), ObjectStoreBackend),
    ],
)
def test_each_filesystem_gets_its_backend(tmp_path, fs, backend):
    assert type(LakeStore(str(tmp_path / "lake"), fs).backend) is backend
