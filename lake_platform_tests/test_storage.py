"""The lake store, the same tests on local disk and on a real S3 server."""

import datetime as dt

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pyarrow.fs import FSSpecHandler, PyFileSystem

from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.paths import (
    escape_partition_value,
    part_file_name,
    partition_folder,
    quarantine_folder,
    unescape_partition_value,
)

HOUR = dt.datetime(2025, 12, 16, 14, tzinfo=dt.UTC)
AWKWARD_VALUES = ["../evil", "A/B", "a=b", ".hidden", "%41", "ÄPFEL", "..", 'q"<>|*?:\\', "x\ny"]


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
