"""The query surface against raw Hive globs: what the catalog costs a reader.

Builds a Silver `stocks/trades` table as the platform holds it: `--history-days` days of thin
hours (`--history-rows` trades per symbol-hour) then `--days` full days (`--rows` trades per
symbol-hour), `--symbols` symbols, each hour one Iceberg commit (`replace_hour`, as the
rebuild makes it) and the manifests compacted after each day as the hourly maintenance does
(one per closed day, one per closed month). The last day is the one queried (closed: one
manifest).

Then, in turns (`--repeat` rounds, medians shown), each from a cold start (no cached
manifests, a new DuckDB connection), a day-wide aggregation per symbol (trades, volume,
VWAP, low, high):

* sql: what `lake-platform sql` does — open the catalog, plan the view's files (the whole
  table, pinned to its current snapshot), create the view, run the query in DuckDB;
* sql-glob: the same query in the same DuckDB over `read_parquet('…/**/*.parquet',
  hive_partitioning = true, hive_types = …)` (the listing of the whole folder);
* read: `lake_platform.read(table, start=day, end=next day)` aggregated by Polars;
* read-glob: `pl.scan_parquet(glob, hive_partitioning=True, hive_schema=…)` filtered on the
  day, aggregated the same way;
* read-rows / read-rows-glob: the same two reads collecting the day's rows (every column).

Each pair must give the same answer (exit 1 otherwise); the goals (each catalog variant at
most 1.1x its glob's time) are only reported. The table is only ever replaced whole, so a
glob reads the same rows here; on a lake with rebuilt hours it would not (docs/readers.md).
`--lake DIR` keeps the lake and reuses it when built with the same options.

    uv run python benchmarks/query.py [--days 1] [--history-days 29] [--rows 25000]
        [--history-rows 200] [--symbols 8] [--repeat 5] [--lake DIR]
"""

import argparse
import datetime as dt
import json
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import fsspec
import polars as pl
from silver import normal, pick, uniform

import lake_platform
from lake_platform.commands.sql import add_views
from lake_platform.derived.partition_files import write_partition
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.query import planning
from lake_platform.query.views import referenced_views
from lake_platform.schemas import BY_NAME
from lake_platform.schemas.event_id import event_id
from lake_platform.schemas.registry import without_column
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import partition_folder
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.hours import replace_hour
from lake_platform.tables.lake_tables import open_lake_tables
from lake_platform.tables.manifests import compact_manifests
from lake_platform.timestamps import HOUR_NS
from lake_platform.transforms.silver import SILVER_ORDER

TRADES = BY_NAME["stocks.trades"]
SILVER = SILVER_TABLES[TRADES.table]
SILVER_VIEW = "silver.stocks_trades"
LAST_DAY = dt.date(2025, 12, 16)
SYMBOLS = ("SPY", "QQQ", "AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "0700", "META", "GOOGL")
TRADE_SIZES = (1, 10, 100, 100, 200, 500)
MARKER = "bench-query.json"
GOAL = 1.1
WRITE_THREADS = 4
PAIRS = (("sql", "sql-glob"), ("read", "read-glob"), ("read-rows", "read-rows-glob"))
HIVE_POLARS = {"symbol": pl.String, "date": pl.Date, "hour": pl.Int32}
HIVE_DUCKDB = "{'symbol': VARCHAR, 'date': DATE, 'hour': INTEGER}"
DAY_SQL = """
select symbol, count(*) as trades, sum(size::bigint) as volume,
       sum(price * size) / sum(size) as vwap, min(price) as low, max(price) as high
from {source}
where date = DATE '{day}'
group by symbol
order by symbol
"""
AGGREGATES = (
    pl.len().alias("trades"),
    pl.col("size").cast(pl.Int64).sum().alias("volume"),
    ((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).alias("vwap"),
    pl.col("price").min().alias("low"),
    pl.col("price").max().alias("high"),
)


@dataclass(frozen=True)
class Shape:
    """The lake's options (and its marker file)."""

    days: int
    history_days: int
    rows: int
    history_rows: int
    symbols: int


def hour_trades(hour: dt.datetime, symbol: str, rows: int, seed: int) -> pl.DataFrame:
    """`rows` Silver trades of a symbol spread over the hour, in Silver order, without the
    partition column (as the rebuild writes them)."""
    start = int(hour.timestamp()) * 10**9
    frame = (
        pl.select(row=pl.int_range(rows))
        .select(ts_event_ns=start + (uniform(seed) * HOUR_NS).cast(pl.Int64))
        .with_columns(
            ts_recv_ns=pl.col("ts_event_ns") + 2_000_000,
            symbol=pl.lit(symbol),
            price=(100.0 + (normal(seed + 1) * 0.01).cum_sum()).round(2),
            size=pick(pl.Series(TRADE_SIZES, dtype=pl.Int32), seed + 2),
            exchange=(1 + uniform(seed + 3) * 19).cast(pl.Int16),
            conditions=pl.lit(None, dtype=pl.List(pl.Int32)),
            seq=pl.int_range(pl.len(), dtype=pl.Int64),
            source=pl.lit("direct_feed"),
        )
    )
    stored = frame.with_columns(event_id(TRADES.stored_schema)).sort(SILVER_ORDER)
    return stored.select(without_column(TRADES.stored_schema, TRADES.partition_column).names())


def build(lake: Path, shape: Shape) -> None:
    """The Silver table (see the module): hourly commits, manifests compacted daily."""
    settings = LakeSettings(data_root=str(lake))
    store = LakeStore(str(lake), fsspec.filesystem("file"))
    table = open_lake_tables(settings, store).table(SILVER)
    total = shape.history_days + shape.days
    seed = 0
    for index in range(total):
        day = LAST_DAY - dt.timedelta(days=total - 1 - index)
        rows = shape.rows if index >= shape.history_days else shape.history_rows
        for hour_of_day in range(24):
            hour = dt.datetime.combine(day, dt.time(hour_of_day), dt.UTC)
            symbols = SYMBOLS[: shape.symbols]
            seeds = range(seed + 10, seed + 10 * (len(symbols) + 1), 10)
            seed += 10 * len(symbols)

            def write(symbol: str, seed: int, hour: dt.datetime = hour, rows: int = rows) -> list:
                folder = f"{SILVER.target}/{partition_folder('symbol', symbol, hour)}"
                written = write_partition(store, folder, hour_trades(hour, symbol, rows, seed))
                return [NewFile(file.path, file.bytes) for file in written]

            with ThreadPoolExecutor(WRITE_THREADS) as pool:
                files = [file for part in pool.map(write, symbols, seeds) for file in part]
            replace_hour(table, hour, files, {})
        compact_manifests(table, day + dt.timedelta(days=1))
        print(f"  {day}: {rows * shape.symbols * 24:,} trades", flush=True)


def prepare(lake: Path, shape: Shape) -> float | None:
    """Build the lake unless `lake` holds one of this shape; the build's seconds, or None."""
    marker = lake / MARKER
    if marker.exists() and json.loads(marker.read_text()) == asdict(shape):
        return None
    if lake.exists() and any(lake.iterdir()):
        raise SystemExit(f"{lake} holds something else: give an empty or a new folder")
    started = time.perf_counter()
    build(lake, shape)
    marker.write_text(json.dumps(asdict(shape)))
    return time.perf_counter() - started


def variants(lake: Path) -> dict[str, Callable[[], pl.DataFrame]]:
    """Each variant: run it from a cold start, its answer."""
    settings = LakeSettings(data_root=str(lake))
    day = LAST_DAY
    glob = f"{lake}/{SILVER.target}/**/*.parquet"
    read_parquet = f"read_parquet('{glob}', hive_partitioning = true, hive_types = {HIVE_DUCKDB})"

    query = DAY_SQL.format(source=SILVER_VIEW, day=day)

    def sql() -> pl.DataFrame:
        planning.clear_cache()
        connection = duckdb.connect()
        add_views(connection, settings, referenced_views(query))
        return connection.sql(query).pl()

    def sql_glob() -> pl.DataFrame:
        connection = duckdb.connect()
        return connection.sql(DAY_SQL.format(source=read_parquet, day=day)).pl()

    def catalog_day() -> pl.LazyFrame:
        planning.clear_cache()
        next_day = day + dt.timedelta(days=1)
        return lake_platform.read(SILVER.target, start=day, end=next_day, settings=settings)

    def glob_day() -> pl.LazyFrame:
        frame = pl.scan_parquet(glob, hive_partitioning=True, hive_schema=HIVE_POLARS)
        return frame.filter(pl.col("date") == day)

    def by_symbol(frame: pl.LazyFrame) -> pl.DataFrame:
        return frame.group_by("symbol").agg(*AGGREGATES).sort("symbol").collect()

    return {
        "sql": sql,
        "sql-glob": sql_glob,
        "read": lambda: by_symbol(catalog_day()),
        "read-glob": lambda: by_symbol(glob_day()),
        "read-rows": lambda: catalog_day().collect(),
        "read-rows-glob": lambda: glob_day().collect(),
    }


def same_answer(ours: pl.DataFrame, glob: pl.DataFrame) -> bool:
    """Equal rows (sorted; floats within a relative 1e-9: sums run in other orders)."""
    if ours.columns != glob.columns or ours.height != glob.height:
        return False
    keys = [name for name, kind in ours.schema.items() if not kind.is_nested()]
    ours, glob = ours.sort(keys), glob.sort(keys)
    for name, kind in ours.schema.items():
        left, right = ours[name].to_list(), glob[name].to_list()
        if kind.is_float():
            close = all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(left, right, strict=True))
            if not close:
                return False
        elif left != right:
            return False
    return True


def measure(lake: Path, repeat: int) -> tuple[dict[str, list[float]], dict[str, pl.DataFrame]]:
    """Every variant `repeat` times, in turns (a warm-up round first, untimed)."""
    runs = variants(lake)
    answers = {name: run() for name, run in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(repeat):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
        print(f"  round {round_index + 1}/{repeat}", flush=True)
    return times, answers


def planning_seconds(lake: Path, repeat: int) -> tuple[float, float, int, int]:
    """Cold planning of the whole table and of the day (median s), live files, manifests."""
    settings = LakeSettings(data_root=str(lake))
    table = open_lake_tables(settings).existing(SILVER.target)
    assert table is not None
    snapshot = table.current_snapshot()
    assert snapshot is not None
    start = int(dt.datetime.combine(LAST_DAY, dt.time(), dt.UTC).timestamp()) * 10**9
    whole, day = [], []
    files = 0
    for _ in range(repeat):
        planning.clear_cache()
        started = time.perf_counter()
        files = len(planning.planned_files(table, snapshot.snapshot_id))
        whole.append(time.perf_counter() - started)
        planning.clear_cache()
        started = time.perf_counter()
        planning.planned_files(
            table, snapshot.snapshot_id, start_ns=start, end_ns=start + 24 * HOUR_NS
        )
        day.append(time.perf_counter() - started)
    manifests = len(snapshot.manifests(table.io))
    return statistics.median(whole), statistics.median(day), files, manifests


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(times: dict[str, list[float]], answers: dict[str, pl.DataFrame]) -> bool:
    """Print the medians and each pair's ratio; whether every pair gave the same answer."""
    ok = True
    for ours, glob in PAIRS:
        mine, theirs = statistics.median(times[ours]), statistics.median(times[glob])
        same = same_answer(answers[ours], answers[glob])
        ok &= same
        ratio = mine / theirs
        print(
            f"{ours:<10} {mine * 1000:8.1f} ms   {glob:<15} {theirs * 1000:8.1f} ms   "
            f"{ratio:5.2f}x  goal <= {GOAL}x: {verdict(ratio <= GOAL)}   "
            f"same answer: {'yes' if same else 'NO'} ({answers[ours].height:,} rows)"
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=1, help="full days, the last one queried")
    parser.add_argument("--history-days", type=int, default=29, help="thin days before them")
    parser.add_argument("--rows", type=int, default=25_000, help="trades per symbol-hour")
    parser.add_argument("--history-rows", type=int, default=200, help="same, thin days")
    parser.add_argument("--symbols", type=int, default=8, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument("--repeat", type=int, default=5, help="rounds (medians shown)")
    parser.add_argument("--lake", type=Path, help="folder to keep and reuse the lake in")
    args = parser.parse_args()
    if min(args.days, args.rows, args.history_rows, args.repeat) <= 0 or args.history_days < 0:
        parser.error("--days, --rows, --history-rows, --repeat must be positive")
    shape = Shape(args.days, args.history_days, args.rows, args.history_rows, args.symbols)
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        lake = (args.lake or Path(tmp) / "lake").absolute()
        lake.mkdir(parents=True, exist_ok=True)
        print(f"lake in {lake} ...", flush=True)
        built = prepare(lake, shape)
        print(f"  setup {'reused' if built is None else f'{built:.1f} s'}", flush=True)
        whole, day, files, manifests = planning_seconds(lake, args.repeat)
        times, answers = measure(lake, args.repeat)
        print()
        print(
            f"silver/stocks/trades: {files:,} live files in {manifests} manifests; "
            f"{LAST_DAY}: {args.rows * args.symbols * 24:,} trades in {24 * args.symbols} files"
        )
        print(
            f"cold planning: whole table {whole * 1000:.1f} ms (the sql view), "
            f"the day {day * 1000:.1f} ms (read)"
        )
        return 0 if report(times, answers) else 1


if __name__ == "__main__":
    raise SystemExit(main())
