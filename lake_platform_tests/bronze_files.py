"""Writing Bronze files directly, as the ingest would, for Silver and Gold tests."""

import datetime as dt
import json
import random
import time

import polars as pl

from lake_platform.schemas import BY_NAME, TableSchema, decode_batch
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import part_file_name, partition_folder
from lake_platform_tests.samples import SAMPLES

HOUR = dt.datetime(2025, 12, 16, 14, tzinfo=dt.UTC)
HOUR_NS = int(HOUR.timestamp()) * 10**9
EARLIEST_NS = 1_704_067_200 * 10**9


def bronze_rows(schema: TableSchema, messages: list[dict[str, object]], first_seq: int = 1):
    """Typed Bronze rows (with provenance) of `messages`."""
    payloads = [json.dumps(message).encode() for message in messages]
    decoded = decode_batch(
        schema,
        payloads,
        received_ns=[HOUR_NS + 3_600 * 10**9] * len(payloads),
        earliest_ns=EARLIEST_NS,
        now_ns=time.time_ns(),
    )
    assert not decoded.rejections, decoded.rejections
    return decoded.rows.with_columns(
        _stream_seq=pl.int_range(first_seq, first_seq + decoded.rows.height, dtype=pl.Int64),
        _subject=pl.lit(f"market.{schema.name}"),
    )


def trades(
    count: int, symbols=("SPY", "QQQ"), seed: int = 7, hour: dt.datetime = HOUR
) -> list[dict[str, object]]:
    """Stock trades spread over `hour`, out of order."""
    rng = random.Random(seed)
    base = SAMPLES["stocks.trades"]
    start_ns = int(hour.timestamp()) * 10**9
    return [
        {
            **base,
            "symbol": symbols[i % len(symbols)],
            "ts_event_ns": start_ns + rng.randrange(3_600 * 10**9),
            "ts_recv_ns": HOUR_NS + 3_600 * 10**9 + rng.randrange(10**9),
            "price": round(600 + rng.random() * 10, 2),
            "size": rng.randrange(1, 500),
            "seq": i,
        }
        for i in range(count)
    ]


def write_bronze(
    store: LakeStore,
    schema: TableSchema,
    rows: pl.DataFrame,
    files: int = 1,
    *,
    old_layout: bool = False,
) -> list[str]:
    """Write `rows` as Bronze files of their partition values and hours, `files` per folder.

    Files hold the columns the ingest writes; with `old_layout`, the partition column too, as
    Bronze files written before it moved out of the files (issue 13).
    """
    columns = (schema.bronze_schema if old_layout else schema.bronze_file_schema).names()
    written = []
    hour_ns = 3_600 * 10**9
    keyed = rows.with_columns(_hour=pl.col("ts_event_ns") // hour_ns)
    for (value, hour), part in keyed.partition_by(
        [schema.partition_column, "_hour"], as_dict=True, maintain_order=True
    ).items():
        start = dt.datetime.fromtimestamp(hour * 3_600, tz=dt.UTC)
        folder = f"bronze/{schema.table}/{partition_folder(schema.partition_column, value, start)}"
        chunk = max(1, -(-part.height // files))
        for piece in part.drop("_hour").iter_slices(chunk):
            path = f"{folder}/{part_file_name(start)}"
            store.write_parquet(piece.select(columns), path)
            written.append(path)
    return written


TRADES = BY_NAME["stocks.trades"]
