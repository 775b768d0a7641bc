"""Large S3 writes stream in multipart parts: never a whole file in memory, still atomic.

On a real SeaweedFS. The store's part size is set to S3's minimum (5 MiB) so that a ~60 MB
file spans a dozen parts; what Python allocates while writing it (tracemalloc: the part
buffers and the client's copies of a part, not the Parquet encoder's own memory) must stay
within a few parts, far below the file's size.
"""

import hashlib
import io
import secrets
import tracemalloc

import polars as pl
import pytest

from lake_platform.derived.partition_files import ROW_GROUP_ROWS
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.store import PARQUET_OPTIONS
from lake_platform_tests.conftest import s3_settings

MIN_S3_PART_BYTES = 5 * 1024**2
LARGE_ROWS = 4_000_000
"""Two columns of hashed integers: ~62 MB of Parquet that ZSTD cannot shrink, 12 parts."""
HELD_PARTS = 5
"""What a streamed write may hold: the part being filled, its copy for the request, the
HTTP client's copies (the old write held the file twice, ~2.3 times its size)."""
RELATIVE = "silver/t/symbol=SPY/date=2025-12-16/hour=14/part-00000.parquet"


def incompressible_frame(rows: int) -> pl.DataFrame:
    return pl.select(a=pl.int_range(rows).hash(1), b=pl.int_range(rows).hash(2))


def expected_bytes(frame: pl.DataFrame) -> bytes:
    """The file the store must write: the frame as the store's Parquet options encode it."""
    body = io.BytesIO()
    frame.write_parquet(body, **PARQUET_OPTIONS, row_group_size=ROW_GROUP_ROWS)
    return body.getvalue()


def s3_lake(s3_server) -> LakeStore:
    bucket = f"lake-{secrets.token_hex(4)}"
    s3_server.create_bucket(bucket)
    lake = LakeStore.from_settings(s3_settings(s3_server, bucket))
    lake.backend.part_bytes = MIN_S3_PART_BYTES
    return lake


@pytest.mark.slow
def test_a_large_s3_write_never_holds_the_whole_file_in_memory(s3_server):
    lake = s3_lake(s3_server)
    frame = incompressible_frame(LARGE_ROWS)
    expected = expected_bytes(frame)
    lake.list_files("silver")  # the S3 client and its service model exist before measuring
    tracemalloc.start()
    try:
        size, digest = lake.write_parquet_digest(frame, RELATIVE, row_group_size=ROW_GROUP_ROWS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size == len(expected) > 2 * HELD_PARTS * MIN_S3_PART_BYTES
    assert peak < HELD_PARTS * MIN_S3_PART_BYTES, f"peak allocation {peak} B, a {size} B file"
    assert lake.read_bytes(RELATIVE) == expected  # byte-identical to an in-memory write
    assert digest == hashlib.sha256(expected).hexdigest()


@pytest.mark.slow
def test_a_multipart_write_failing_midway_keeps_the_old_file_and_no_upload(s3_server, monkeypatch):
    """Parts already uploaded never become the object: the upload is aborted."""
    lake = s3_lake(s3_server)
    lake.write_parquet(pl.DataFrame({"a": [1]}), RELATIVE)
    frame = incompressible_frame(LARGE_ROWS)
    original = pl.DataFrame.write_parquet

    def crash_after_three_parts(self, target, **options):
        original(self.head(LARGE_ROWS // 2), target, **options)  # several parts uploaded
        raise OSError("encoder crashed")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash_after_three_parts)
    with pytest.raises(StorageError, match="encoder crashed"):
        lake.write_parquet(frame, RELATIVE)
    monkeypatch.undo()
    assert lake.read_parquet([RELATIVE])["a"].to_list() == [1]
    bucket = lake.root.split("/", 1)[0]
    uploads = lake.fs.call_s3("list_multipart_uploads", Bucket=bucket)
    assert not uploads.get("Uploads"), uploads
