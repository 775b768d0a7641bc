"""The Silver transform on crafted frames: keep-first, ties, order, and byte identity."""

import random

import fsspec
import polars as pl

from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import tables_of

SILVER = SILVER_TABLES["stocks/trades"]


def frame(rows: list[tuple[int, str, int, int, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "ts_event_ns": pl.Int64,
            "event_id": pl.String,
            "ts_recv_ns": pl.Int64,
            "_stream_seq": pl.Int64,
            "tag": pl.String,
        },
        orient="row",
    )


def test_keeps_the_earliest_received_then_the_lowest_stream_sequence():
    bronze = frame(
        [
            (5, "b", 30, 9, "b-late"),
            (5, "b", 10, 8, "b-first"),
            (1, "a", 7, 5, "a-seq5"),
            (1, "a", 7, 3, "a-seq3"),
            (1, "a", 9, 1, "a-late"),
            (3, "c", 1, 1, "c-only"),
        ]
    )
    silver = deduplicate(bronze)
    assert silver.get_column("tag").to_list() == ["a-seq3", "c-only", "b-first"]
    assert silver.columns == ["ts_event_ns", "event_id", "ts_recv_ns", "tag"]


def test_sorted_by_event_time_then_event_id():
    bronze = frame([(2, "z", 1, 1, ""), (2, "a", 1, 2, ""), (1, "m", 1, 3, "")])
    assert deduplicate(bronze).get_column("event_id").to_list() == ["m", "a", "z"]


def test_result_does_not_depend_on_input_order_or_repeats():
    rows = bronze_rows(TRADES, trades(2_000))
    rows = pl.concat([rows, rows.sample(200, seed=1)])
    expected = deduplicate(rows)
    shuffled = pl.concat([rows.sample(fraction=1.0, shuffle=True, seed=3), rows.head(50)])
    assert deduplicate(shuffled).equals(expected)
    assert expected.height == 2_000


def silver_bytes(store: LakeStore) -> dict[str, bytes]:
    return {path: store.read_bytes(path) for path in store.list_files("silver")}


def test_byte_identical_across_file_order_duplicated_files_and_reruns(tmp_path):
    rows = bronze_rows(TRADES, trades(3_000))
    first = LakeStore(str(tmp_path / "a"), fsspec.filesystem("file"))
    write_bronze(first, TRADES, rows, files=6)
    rebuild_hour(tables_of(first), SILVER, HOUR)
    expected = silver_bytes(first)
    assert len(expected) == 2

    second = LakeStore(str(tmp_path / "b"), fsspec.filesystem("file"))
    order = list(range(rows.height))
    random.Random(5).shuffle(order)
    shuffled = rows[order]
    write_bronze(second, TRADES, shuffled, files=11)
    write_bronze(second, TRADES, shuffled.head(700), files=2)  # a redelivered batch
    rebuild_hour(tables_of(second), SILVER, HOUR)
    assert silver_bytes(second) == expected

    result = rebuild_hour(tables_of(second), SILVER, HOUR)
    assert silver_bytes(second) == expected
    assert result.rows_read == 3_700 and result.rows_written == 3_000
    assert result.duplicates_removed == 700
