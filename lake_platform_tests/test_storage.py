"""The lake store, the same tests on local disk and on a real S3 server."""

import dataclasses
import datetime as dt
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pyarrow.fs import FSSpecHandler, PyFileSystem

from lake_platform.settings import LakeSettings, SettingsError
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.backends.local import WRITE_THREADS
from lake_platform.storage.backends.object_store import UPLOAD_THREADS
from lake_platform.storage.paths import (
    ESCAPED_VALUE_MAX_BYTES,
    LAKE_KEY_MAX_BYTES,
    bounded_folder_name,
    escape_partition_value,
    part_file_name,
    partition_folder,
    quarantine_folder,
    unescape_partition_value,
)
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.status_server import answering

HOUR = dt.datetime(2025, 12, 16, 14, tzinfo=dt.UTC)
HIVE_SPECIAL = "\"#%'*/:=?\\^[]{}<>|\x7f\x01\x1f"
"""Every character Hive escapes in path names (docs/contract.md §3), control characters included."""
AWKWARD_VALUES = [
    "../evil",
    "A/B",
    "a=b",
    ".hidden",
    "%41",
    "ÄPFEL",
    "..",
    'q"<>|*?:\\',
    "x\ny",
    "A[1]",
    "x#y",
    "{a}",
    "a^b",
    "it's",
    "BRK.B",
    *(f"s{char}e" for char in HIVE_SPECIAL),
]


@pytest.mark.parametrize("value", AWKWARD_VALUES)
def test_escaped_values_stay_in_one_folder_and_round_trip(value):
    segment = escape_partition_value(value)
    assert "/" not in segment and "\\" not in segment and "=" not in segment
    assert not segment.startswith(".")
    assert unescape_partition_value(segment) == value


def test_escaping_matches_hive():
    assert escape_partition_value("../evil") == "%2E.%2Fevil"
    assert escape_partition_value("SPY") == "SPY"
    assert escape_partition_value("ÄPFEL") == "ÄPFEL"
    assert escape_partition_value("%41") == "%2541"
    assert escape_partition_value("A[1]") == "A%5B1%5D"
    assert escape_partition_value("BRK.B") == "BRK.B"
    for char in HIVE_SPECIAL:
        assert escape_partition_value(char) == f"%{ord(char):02X}"


@pytest.mark.parametrize(
    ("value", "escaped_bytes"),
    [("SPY", 3), ("/" * 128, 384), ("😀" * 128, 512), (".a[", 7)],
)
def test_escaped_length_is_counted_in_bytes(value, escaped_bytes):
    assert len(escape_partition_value(value).encode()) == escaped_bytes


@pytest.mark.parametrize("value", ["x" * 300, "/" * 300, "😀" * 300, "a%" * 150, "ab" * 99 + "/"])
def test_long_names_are_cut_to_the_budget_without_splitting_an_escape(value):
    name = bounded_folder_name(value)
    assert len(name.encode()) <= ESCAPED_VALUE_MAX_BYTES
    assert re.search(r"%(?![0-9A-F]{2})", name) is None
    assert "/" not in name and not name.startswith(".")
    assert bounded_folder_name(value + "z") != name


def test_names_within_the_budget_are_the_escaped_value():
    assert bounded_folder_name("market.stocks.trades") == "market.stocks.trades"
    value = "y" * ESCAPED_VALUE_MAX_BYTES
    assert bounded_folder_name(value) == value


def write_partitions(lake: LakeStore, values: list[str]) -> None:
    for value in values:
        frame = pl.DataFrame({"v": [value], "n": [len(value)]})
        lake.write_parquet(frame, f"bronze/t/{partition_folder('symbol', value, HOUR)}/x.parquet")


def test_hive_readers_see_the_original_values(lake: LakeStore):
    write_partitions(lake, AWKWARD_VALUES)
    base = lake.full_path("bronze/t")
    filesystem = None if lake.is_local else PyFileSystem(FSSpecHandler(lake.fs))
    table = ds.dataset(base, partitioning="hive", filesystem=filesystem).to_table()
    assert sorted(table.column("symbol").to_pylist()) == sorted(AWKWARD_VALUES)
    assert table.column("symbol").to_pylist() == table.column("v").to_pylist()
    if lake.is_local:
        query = f"select symbol, v from read_parquet('{base}/**/*.parquet', hive_partitioning=1)"
        rows = duckdb.sql(query).fetchall()
        assert sorted(symbol for symbol, _ in rows) == sorted(AWKWARD_VALUES)
        assert all(symbol == v for symbol, v in rows)
        polars_rows = pl.read_parquet(f"{base}/**/*.parquet", hive_partitioning=True)
        assert polars_rows["symbol"].to_list() == polars_rows["v"].to_list()
        assert sorted(polars_rows["symbol"].to_list()) == sorted(AWKWARD_VALUES)


def test_write_is_zstd_3_and_reads_back(lake: LakeStore):
    frame = pl.DataFrame({"ts_event_ns": list(range(10_000)), "s": ["SPY"] * 10_000})
    relative = f"silver/t/{partition_folder('symbol', 'SPY', HOUR)}/part-00000.parquet"
    size = lake.write_parquet(frame, relative)
    body = lake.read_bytes(relative)
    assert size == len(body) > 0
    metadata = pq.ParquetFile(pa.BufferReader(body)).metadata
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert lake.read_parquet([relative]).equals(frame)


def test_listing_files_and_folders(lake: LakeStore):
    write_partitions(lake, ["SPY", "QQQ"])
    assert lake.list_folders("bronze/t") == ["symbol=QQQ", "symbol=SPY"]
    assert lake.list_files("bronze/t") == [
        f"bronze/t/{partition_folder('symbol', value, HOUR)}/x.parquet" for value in ("QQQ", "SPY")
    ]
    assert lake.list_files("bronze/absent") == []
    assert lake.list_folders("bronze/absent") == []


def test_read_many_files_in_order(lake: LakeStore):
    paths = []
    for i in range(3):
        paths.append(f"bronze/t/symbol=SPY/{part_file_name(HOUR)}")
        lake.write_parquet(pl.DataFrame({"i": [i, i]}), paths[-1])
    assert lake.read_parquet(paths[::-1])["i"].to_list() == [2, 2, 1, 1, 0, 0]


def test_bronze_files_can_never_be_deleted(lake: LakeStore):
    write_partitions(lake, ["SPY"])
    (bronze_path,) = lake.list_files("bronze")
    with pytest.raises(PermissionError, match="append-only"):
        lake.delete([bronze_path])
    assert lake.list_files("bronze") == [bronze_path]
    lake.write_parquet(pl.DataFrame({"a": [1]}), "silver/t/x.parquet")
    lake.delete(["silver/t/x.parquet"])
    assert lake.list_files("silver") == []


def test_part_file_names_are_unique_within_a_microsecond():
    names = {part_file_name(HOUR) for _ in range(1_000)}
    assert len(names) == 1_000
    assert next(iter(names)).startswith("part-140000_000000-")


def test_quarantine_folder_escapes_the_subject():
    folder = quarantine_folder("market.stocks.trades/../x", HOUR.date())
    assert folder == "_quarantine/market.stocks.trades%2F..%2Fx/date=2025-12-16"


def test_interrupted_write_keeps_the_previous_file_and_leaves_no_partial(lake, monkeypatch):
    relative = "silver/t/part-00000.parquet"
    lake.write_parquet(pl.DataFrame({"a": [1]}), relative)

    def crash_midway(self, target, **options):
        target.write(b"PAR1 partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", crash_midway)
    with pytest.raises(StorageError, match="disk full"):
        lake.write_parquet(pl.DataFrame({"a": [2]}), relative)
    monkeypatch.undo()
    assert lake.fs.find(lake.full_path("silver")) == [lake.full_path(relative)]
    assert lake.read_parquet([relative])["a"].to_list() == [1]


def test_paths_with_glob_characters_are_read_literally(lake: LakeStore):
    lake.write_parquet(pl.DataFrame({"v": ["A[1]"]}), "bronze/t/symbol=A[1]/x.parquet")
    lake.write_parquet(pl.DataFrame({"v": ["A1"]}), "bronze/t/symbol=A1/x.parquet")
    lake.write_parquet(pl.DataFrame({"v": ["A*"]}), "bronze/t/symbol=A*/x.parquet")
    assert lake.read_parquet(["bronze/t/symbol=A[1]/x.parquet"])["v"].to_list() == ["A[1]"]
    assert lake.read_parquet(["bronze/t/symbol=A*/x.parquet"])["v"].to_list() == ["A*"]


@pytest.mark.parametrize("path", ["./bronze/t/x.parquet", "silver/../bronze/t/x.parquet"])
def test_the_bronze_guard_sees_through_unnormalized_paths(lake: LakeStore, path):
    lake.write_parquet(pl.DataFrame({"a": [1]}), "bronze/t/x.parquet")
    with pytest.raises(PermissionError, match="append-only"):
        lake.delete([path])
    assert lake.list_files("bronze") == ["bronze/t/x.parquet"]


def test_nothing_outside_the_lake_can_be_deleted(lake: LakeStore):
    with pytest.raises(PermissionError, match="outside the lake"):
        lake.delete(["../elsewhere/x.parquet"])


@pytest.fixture(params=["closed port", 503])
def failing_endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    """An S3 endpoint where nothing listens, or a server answering 503 to everything."""
    if request.param == "closed port":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        return
    with answering(request.param) as server:
        yield server.endpoint
        assert server.requests >= 7  # each operation reached the server


def test_an_unreachable_or_failing_s3_store_raises_transient_storage_errors(failing_endpoint):
    """Every operation against a closed port or a 5xx endpoint is a transient `StorageError`,
    never botocore's, and never shows the secret key."""
    settings = LakeSettings(
        data_root="s3://lake/x",
        use_s3=True,
        s3_endpoint=failing_endpoint,
        s3_access_key="key",
        s3_secret_key="not-shown-secret",
        s3_region="us-east-1",
    )
    lake = LakeStore.from_settings(settings)
    operations = [
        lambda: lake.write_parquet(pl.DataFrame({"a": [1]}), "silver/x.parquet"),
        lambda: lake.write_bytes(b"{}", "_ledger/x.json"),
        lambda: lake.read_bytes("silver/x.parquet"),
        lambda: lake.read_parquet(["silver/x.parquet"]),
        lambda: lake.list_files("silver"),
        lambda: lake.list_folders("silver"),
        lambda: lake.delete(["silver/x.parquet"]),
    ]
    with ThreadPoolExecutor(len(operations)) as pool:  # each waits out the client's retries
        errors = list(pool.map(storage_error, operations))
    for error in errors:
        assert error.kind == "transient", error
        assert failing_endpoint in str(error)
        assert "not-shown-secret" not in str(error)
    lake.check_access()


def storage_error(operation: Callable[[], object]) -> StorageError:
    """The `StorageError` that `operation` raises (the test fails if it raises none)."""
    with pytest.raises(StorageError) as raised:
        operation()
    return raised.value


@pytest.mark.parametrize("problem", ["wrong secret", "missing bucket"])
def test_wrong_credentials_or_bucket_fail_access_in_one_clear_line(s3_server, problem):
    bucket = f"lake-{secrets.token_hex(4)}"
    if problem == "wrong secret":
        s3_server.create_bucket(bucket)
    settings = s3_settings(s3_server, bucket)
    if problem == "wrong secret":
        settings = dataclasses.replace(settings, s3_secret_key="wrong-secret-value")
    lake = LakeStore.from_settings(settings)
    with pytest.raises(StorageError) as raised:
        lake.check_access()
    message = str(raised.value)
    assert raised.value.kind == "denied"
    assert bucket in message and s3_server.endpoint in message
    assert "\n" not in message
    assert settings.s3_secret_key not in message and s3_server.secret_key not in message
    if problem == "wrong secret":  # SeaweedFS creates a missing bucket on the first PUT
        with pytest.raises(StorageError) as on_write:
            lake.write_bytes(b"x", "_ledger/x.json")
        assert on_write.value.kind == "denied"


def test_access_check_passes_on_a_working_lake(lake: LakeStore):
    lake.check_access()


def test_the_longest_lake_key_stays_within_its_bound():
    longest_value = "%" * (ESCAPED_VALUE_MAX_BYTES // 3)
    folder = partition_folder("underlying", longest_value, HOUR)
    key = f"bronze/options/greeks_snapshots/{folder}/{part_file_name(HOUR)}"
    assert len(key.encode()) <= LAKE_KEY_MAX_BYTES


def test_an_s3_root_too_long_for_the_key_limit_is_refused():
    with pytest.raises(SettingsError, match="1024-byte limit"):
        LakeStore.from_settings(
            LakeSettings(data_root=f"s3://lake/{'p' * 700}", use_s3=True, s3_endpoint="http://x")
        )


def test_delete_takes_names_literally_and_a_missing_file_is_no_error(lake: LakeStore):
    for value in ("A[1]", "A1", "A*", "AB"):
        lake.write_parquet(pl.DataFrame({"v": [value]}), f"silver/t/symbol={value}/x.parquet")
    lake.delete(["silver/t/symbol=A[1]/x.parquet", "silver/t/symbol=A*/x.parquet"])
    lake.delete(["silver/t/symbol=gone/x.parquet"])
    assert lake.list_files("silver") == [
        "silver/t/symbol=A1/x.parquet",
        "silver/t/symbol=AB/x.parquet",
    ]


def test_an_invalid_bucket_name_is_denied(s3_server):
    lake = LakeStore.from_settings(s3_settings(s3_server, "Not_A:Valid!Bucket"))
    with pytest.raises(StorageError) as raised:
        lake.check_access()
    assert raised.value.kind == "denied"


def many_files(count: int) -> list[tuple[pl.DataFrame, str]]:
    return [
        (
            pl.DataFrame({"v": [index] * (index + 1)}),
            f"bronze/t/{partition_folder('symbol', f'S{index:03d}', HOUR)}/part-0.parquet",
        )
        for index in range(count)
    ]


def test_many_files_written_at_once_each_land_whole(lake: LakeStore):
    """An ingest commit's files (`write_parquet_files`): every one readable, none hidden left."""
    files = many_files(120)
    assert lake.write_parquet_files(files) == [
        len(lake.read_bytes(relative)) for _, relative in files
    ]
    for frame, relative in files:
        assert lake.read_parquet([relative]).equals(frame)
    assert len(lake.list_files("bronze")) == 120
    assert not [path for path in lake.fs.find(lake.full_path("bronze")) if "/." in path]


def test_a_rejected_file_among_many_fails_alone_and_a_transient_one_stops_the_rest(tmp_path):
    """A name the filesystem refuses (rejected) fails alone; a file where a folder should be
    (transient) stops the files not yet started; what landed is whole, no temporary left."""
    lake = LakeStore.from_settings(LakeSettings(data_root=str(tmp_path / "lake")))
    lake.write_bytes(b"a file where a folder should be", "bronze/t/symbol=BLOCKED")
    files = many_files(30)
    files[3] = (files[3][0], f"bronze/t/symbol={'x' * 300}/part-0.parquet")
    results = lake.write_parquet_files(files)
    assert [index for index, r in enumerate(results) if not isinstance(r, int)] == [3]
    assert results[3].kind == "rejected"

    files = many_files(300)[30:]
    files[0] = (files[0][0], "bronze/t/symbol=BLOCKED/date=2025-12-16/hour=14/part-0.parquet")
    results = lake.write_parquet_files(files)
    assert results[0].kind == "transient" and "NotADirectoryError" in str(results[0])
    untried = [r for r in results if isinstance(r, StorageError) and "not tried" in str(r)]
    assert len(untried) >= len(files) - WRITE_THREADS
    landed = [
        relative for (_, relative), r in zip(files, results, strict=True) if isinstance(r, int)
    ]
    for frame, relative in files:
        if relative in landed:
            assert lake.read_parquet([relative]).equals(frame)
    assert len(lake.list_files("bronze")) == 29 + len(landed)
    assert not [path for path in (tmp_path / "lake").rglob(".*")]


def test_a_failing_store_costs_a_commit_a_few_writes_not_one_per_file():
    """An S3 endpoint answering 503: once a write of a commit fails, no further file is tried
    (each fails "not tried"), so a store that is down costs the writes in flight, not
    thousands of timed-out PUTs."""
    with answering(503) as server:
        settings = LakeSettings(
            data_root="s3://lake/x",
            use_s3=True,
            s3_endpoint=server.endpoint,
            s3_access_key="key",
            s3_secret_key="secret",
            s3_region="us-east-1",
        )
        results = LakeStore.from_settings(settings).write_parquet_files(many_files(400))
        requests = server.requests
    assert all(isinstance(r, StorageError) and r.kind == "transient" for r in results)
    assert sum("not tried" in str(r) for r in results) >= 400 - UPLOAD_THREADS
    assert requests <= UPLOAD_THREADS * 4  # the writes in flight, each tried by botocore


def test_files_are_listed_with_the_stores_modification_time(lake: LakeStore):
    """`list_files_with_mtime`: what `list_files` lists, each with the time the store recorded
    it (S3's LastModified has whole seconds, so the bounds are widened by one)."""
    before_ns = (time.time_ns() // 10**9 - 1) * 10**9
    write_partitions(lake, ["SPY", "QQQ"])
    lake.write_bytes(b"{}", "bronze/t/notes.json")
    after_ns = (time.time_ns() // 10**9 + 2) * 10**9
    listed = lake.list_files_with_mtime("bronze/t")
    assert list(listed) == lake.list_files("bronze/t")
    assert all(before_ns <= modified_ns <= after_ns for modified_ns in listed.values()), listed
    assert list(lake.list_files_with_mtime("bronze/t", ".json")) == ["bronze/t/notes.json"]
    assert lake.list_files_with_mtime("bronze/absent") == {}
