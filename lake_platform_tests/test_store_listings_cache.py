"""A `LakeStore` on S3 sees the files other processes wrote after it listed their folder.

s3fs keeps every listing it makes (`use_listings_cache`, no expiry) and answers `ls` and
`info` from it; `cat_file` asks `info` for the size first. So a store that listed a Bronze
folder once (a Silver run, the sensor of the long-lived code server) neither lists a value
folder created since nor reads a file written since: FileNotFoundError. Found by the
topology test: Silver runs failing with "cannot read N files below s3://lake/market:
FileNotFoundError" for Bronze files the ingest had just written. The store turns the cache
off.
"""

import pytest

from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.servers import S3Server

pytestmark = pytest.mark.slow

FIRST, SECOND, OTHER_VALUE = (
    "bronze/t/v=A/part-1.parquet",
    "bronze/t/v=A/part-2.parquet",
    "bronze/t/v=B/part-1.parquet",
)


def test_a_store_lists_and_reads_what_another_wrote_after_it_listed(s3_server: S3Server) -> None:
    s3_server.create_bucket("listings-cache")
    settings = s3_settings(s3_server, "listings-cache")
    reader, writer = LakeStore.from_settings(settings), LakeStore.from_settings(settings)
    writer.write_bytes(b"first", FIRST)
    assert reader.list_files("bronze/t") == [FIRST]
    assert reader.list_folders("bronze/t") == ["v=A"]

    writer.write_bytes(b"second", SECOND)
    writer.write_bytes(b"other", OTHER_VALUE)
    assert reader.read_bytes(SECOND) == b"second"
    assert reader.read_many_bytes([FIRST, SECOND]) == [b"first", b"second"]
    assert reader.list_folders("bronze/t") == ["v=A", "v=B"]
    assert reader.list_files("bronze/t") == [FIRST, SECOND, OTHER_VALUE]
