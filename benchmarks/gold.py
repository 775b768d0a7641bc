"""Gold throughput: a verified Gold hour of each Gold table, against the same transform in DuckDB.

Builds, in a lake, one hour of each Gold table's input for one partition value:

* bars: a Silver `stocks/trades` hour of N trades of `symbol=SPY` (the trades of
  `benchmarks/silver.py`, with their `event_id`, sorted, written by `write_partition` and
  committed as the Silver rebuild does);
* signals: a Bronze `levels/signals` hour of N signals of `underlying=SPY` in files of 1,000
  rows, ~2% redeliveries, in arrival order, each signal with 1–3 levels (as the simulator:
  ~2 levels a signal, so ~2N Gold rows) whose nested objects are present or not as the
  simulator draws them.

N (`--rows`) counts input rows: the trades of the hour, the signal messages of the hour, as
a user counts an hour of a table in the lake. Then times, each in a fresh child process (wall
time of the work alone, imports untimed; peak RSS of that process):

* verified: `rebuild_hour` + `check_hour` of the Gold table, what the Gold asset runs (every
  check must pass: exit 1 otherwise);
* rebuild: `rebuild_hour` alone;
* duckdb: the same transform as one DuckDB `COPY (SELECT ...) TO ... (FORMAT parquet,
  COMPRESSION zstd)`: bars by `GROUP BY` minute with `arg_min`/`arg_max` for open/close,
  signals deduplicated by `QUALIFY row_number()` then `UNNEST`ed.

The three take turns (`--repeat` rounds), medians shown; the CPU-time ratio is shown too (on
a shared machine it moves less than wall time). DuckDB's file must hold the same rows
as ours (compared sorted by the Gold order, floats within a relative 1e-9: DuckDB sums in
another order), exit 1 otherwise. The goal (verified >= 1.5x DuckDB) is only reported.
`--lake DIR` keeps the generated inputs in DIR and reuses them when built with the same
`--rows` (its `gold/` is replaced).

    uv run python benchmarks/gold.py [--rows 1000000] [--repeat 3] [--lake DIR]
        [--tables bars signals]
"""

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import fsspec
import polars as pl
from polars.testing import assert_frame_equal
from silver import (
    HOUR,
    HOUR_NS,
    HOUR_START_NS,
    child_env,
    normal,
    peak_rss_mb,
    pick,
    uniform,
    unique_events,
)

from lake_platform.derived.checking import check_hour
from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.partition_files import write_partition
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import GOLD_BARS, GOLD_SIGNALS, SILVER_TABLES
from lake_platform.schemas import BY_NAME
from lake_platform.schemas.event_id import event_id
from lake_platform.schemas.registry import without_column
from lake_platform.simulate.market import LEVEL_KINDS
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.hours import replace_hour
from lake_platform.transforms.gold import GOLD_SIGNALS_SCHEMA, SIGNAL_CONTEXT
from lake_platform.transforms.silver import SILVER_ORDER
from lake_platform_tests.tables_of import tables_of

TRADES = BY_NAME["stocks.trades"]
SIGNALS = BY_NAME["levels.signals"]
FOLDERS = {
    "bars": f"silver/{TRADES.table}/symbol=SPY/{hour_folder(HOUR)}",
    "signals": f"bronze/{SIGNALS.table}/underlying=SPY/{hour_folder(HOUR)}",
}
GOLD_FOLDERS = {
    "bars": f"gold/stocks/bars_1m/symbol=SPY/{hour_folder(HOUR)}",
    "signals": f"gold/levels/signals/underlying=SPY/{hour_folder(HOUR)}",
}
TABLES = tuple(FOLDERS)
VARIANTS = ("verified", "rebuild", "duckdb")
MARKER = "bench-gold.json"
FILE_ROWS = 1_000
WRITE_THREADS = 4
DUPLICATE_RATE = 0.02
GOAL_VS_DUCKDB = 1.5
FLOAT_RTOL = 1e-9


@dataclass
class Inputs:
    """What setup built (and what the marker file stores)."""

    rows: int
    trades: int
    signals_rows: int
    signals_files: int
    signals_distinct: int
    signals_levels: int


@dataclass
class Run:
    """One child run: its wall time and CPU time, its peak RSS, rows written."""

    table: str
    variant: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rows: int


def store_at(lake: Path) -> LakeStore:
    return LakeStore(str(lake), fsspec.filesystem("file"))


def write_silver_trades(lake: Path, rows: int) -> int:
    """A Silver `stocks/trades` hour of `rows` trades, written and committed to the lake's
    catalog as the Silver rebuild writes them."""
    trades = unique_events(rows).with_columns(event_id(TRADES.stored_schema)).sort(SILVER_ORDER)
    stored = trades.select(without_column(TRADES.stored_schema, TRADES.partition_column).names())
    store = store_at(lake)
    written = write_partition(store, FOLDERS["bars"], stored)
    silver = tables_of(store).table(SILVER_TABLES[TRADES.table])
    replace_hour(silver, HOUR, [NewFile(file.path, file.bytes) for file in written], {})
    return stored.height


def chance(rate: float, seed: int) -> pl.Expr:
    return uniform(seed) < rate


def signal_levels(signals: pl.DataFrame) -> pl.DataFrame:
    """1–3 levels per signal (`row`, `spot`), the fields the simulator and the samples give,
    nested objects present at the simulator's rates; one row per level, by signal and index."""
    kinds = pl.Series([kind for _, kind in LEVEL_KINDS])
    ids = pl.Series([level_id for level_id, _ in LEVEL_KINDS])
    index = pl.col("level_index")
    price = (pl.col("spot") + (uniform(21) * 6.0 - 3.0)).round(2)
    direction = pl.when(price > pl.col("spot")).then(pl.lit("UP")).otherwise(pl.lit("DOWN"))
    barrier = pl.struct(
        state=pick(pl.Series(["WALL", "WEAK", "ABSORBING"]), 23),
        delta_liq=(normal(24) * 1000).round(1),
        replenishment_ratio=uniform(26).round(3),
        added=(uniform(27) * 5000).floor(),
        canceled=(uniform(28) * 5000).floor(),
        filled=(uniform(29) * 3000).floor(),
    )
    tape = pl.struct(
        imbalance=(uniform(31) * 2.0 - 1.0).round(3),
        buy_vol=(1_000 + uniform(32) * 89_000).floor(),
        sell_vol=(1_000 + uniform(33) * 89_000).floor(),
        velocity=uniform(34).round(2),
        sweep_detected=chance(0.1, 35),
    )
    fuel = pl.struct(
        effect=pick(pl.Series(["AMPLIFY", "DAMPEN"]), 37),
        net_dealer_gamma=(normal(38) * 5e8).round(0),
        call_wall=(pl.col("spot") / 5).round(0) * 5 + 10,
        put_wall=(pl.col("spot") / 5).round(0) * 5 - 10,
    )
    runway = pl.struct(
        direction=direction,
        next_level_price=(price + (uniform(41) * 6.0 - 3.0)).round(2),
        distance=(uniform(42) * 5).round(2),
        quality=pick(pl.Series(["CLEAR", "CHOPPY"]), 43),
    )
    return (
        signals.select("row", "spot", index=pl.int_ranges(0, (1 + uniform(20) * 3).cast(pl.Int64)))
        .explode("index")
        .rename({"index": "level_index"})
        .select(
            "row",
            level=pl.struct(
                level_id=pl.lit(ids).gather(index),
                level_kind=pl.lit(kinds).gather(index),
                level_price=price,
                direction=direction,
                distance=(price - pl.col("spot")).abs().round(2),
                break_score_raw=uniform(22).round(3),
                break_score_smooth=uniform(44).round(3),
                signal=pick(pl.Series(["BREAK", "BOUNCE", "NONE"]), 45),
                confidence=pick(pl.Series(["LOW", "MEDIUM", "HIGH"]), 46),
                barrier=pl.when(chance(0.7, 25)).then(barrier),
                tape=pl.when(chance(0.7, 36)).then(tape),
                fuel=pl.when(chance(0.5, 39)).then(fuel),
                runway=pl.when(chance(0.5, 40)).then(runway),
            ),
        )
    )


def bronze_signals(rows: int) -> pl.DataFrame:
    """`rows` Bronze signal rows in arrival order (~2% redeliveries), the registry's columns."""
    duplicates = round(rows * DUPLICATE_RATE)
    count = rows - duplicates
    ts = HOUR_START_NS + (uniform(1) * HOUR_NS).cast(pl.Int64).sort()
    signals = pl.select(row=pl.int_range(count)).with_columns(
        ts_event_ns=ts,
        spot=(681.0 + (normal(7) * 0.01).cum_sum()).round(2),
    )
    levels = signal_levels(signals).group_by("row", maintain_order=True).agg("level")
    latency = (math.log(2e6) + normal(3)).exp().cast(pl.Int64)
    events = (
        signals.join(levels, on="row", maintain_order="left")
        .select(
            "ts_event_ns",
            ts_recv_ns=pl.col("ts_event_ns") + latency,
            underlying=pl.lit("SPY"),
            spot="spot",
            bid=(pl.col("spot") - 0.01).round(2),
            ask=(pl.col("spot") + 0.01).round(2),
            levels=pl.col("level"),
            source=pl.lit("levels_engine"),
        )
        .cast({"levels": SIGNALS.stored_schema["levels"]})  # type: ignore[dict-item]
        .with_columns(event_id(SIGNALS.stored_schema))
    )
    redelivered = events.sample(duplicates, seed=14).with_columns(
        pl.col("ts_recv_ns") + (1e9 + uniform(15) * 29e9).cast(pl.Int64)
    )
    arrived = pl.concat([events, redelivered]).sort("ts_recv_ns", maintain_order=True)
    return arrived.with_columns(
        _stream_seq=pl.int_range(1, rows + 1, dtype=pl.Int64),
        _subject=pl.lit(f"{SIGNALS.subject}.SPY"),
    ).select([pl.col(name).cast(dtype) for name, dtype in SIGNALS.bronze_file_schema.items()])


def write_bronze_signals(lake: Path, frame: pl.DataFrame) -> int:
    """Bronze files of `FILE_ROWS` rows, as the ingest writes them (ZSTD-3)."""
    folder = lake / FOLDERS["signals"]
    folder.mkdir(parents=True, exist_ok=True)

    def write(index: int) -> None:
        part = frame.slice(index * FILE_ROWS, FILE_ROWS)
        part.write_parquet(
            folder / f"part-{index:06d}.parquet", compression="zstd", compression_level=3
        )

    count = -(-frame.height // FILE_ROWS)
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        list(pool.map(write, range(count)))
    return count


def build_inputs(lake: Path, rows: int) -> Inputs:
    trades = write_silver_trades(lake, rows)
    bronze = bronze_signals(rows)
    files = write_bronze_signals(lake, bronze)
    distinct = bronze.unique("event_id", keep="first")
    return Inputs(
        rows=rows,
        trades=trades,
        signals_rows=bronze.height,
        signals_files=files,
        signals_distinct=distinct.height,
        signals_levels=int(distinct["levels"].list.len().sum()),
    )


def prepare_inputs(lake: Path, rows: int) -> tuple[Inputs, float | None]:
    """The input hours in `lake`: reused when its marker matches, else built (seconds)."""
    marker = lake / MARKER
    if marker.exists():
        inputs = Inputs(**json.loads(marker.read_text()))
        if inputs.rows == rows:
            return inputs, None
        raise SystemExit(f"{lake} holds other inputs ({inputs}); use another --lake")
    if any((lake / tier).exists() for tier in ("bronze", "silver")):
        raise SystemExit(f"{lake} holds a lake without {MARKER}; use an empty --lake")
    start = time.perf_counter()
    inputs = build_inputs(lake, rows)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(asdict(inputs)))
    return inputs, seconds


def gold_table(table: str) -> DerivedTable:
    return {"bars": GOLD_BARS, "signals": GOLD_SIGNALS}[table]


def prepare_verified(table: str, lake: Path, _: Path) -> Callable[[], int]:
    """What the Gold asset runs for the hour: the rebuild, then every check (all must pass)."""
    store, derived = store_at(lake), gold_table(table)

    def run() -> int:
        result = rebuild_hour(tables_of(store), derived, HOUR)
        failed = [
            o.message
            for o in check_hour(tables_of(store), derived, result).values()
            if not o.passed
        ]
        if failed:
            raise SystemExit(f"Gold {table} checks failed: {failed}")
        return result.rows_written

    return run


def prepare_rebuild(table: str, lake: Path, _: Path) -> Callable[[], int]:
    store, derived = store_at(lake), gold_table(table)
    return lambda: rebuild_hour(tables_of(store), derived, HOUR).rows_written


BARS_SQL = """
    SELECT * RENAME (minute AS ts_event_ns) FROM (SELECT
        ts_event_ns // 60000000000 * 60000000000 AS minute,
        symbol,
        arg_min(price, (ts_event_ns, event_id)) AS open,
        max(price) AS high,
        min(price) AS low,
        arg_max(price, (ts_event_ns, event_id)) AS close,
        sum(size)::BIGINT AS volume,
        CASE WHEN sum(size) > 0 THEN sum(price * size) / sum(size) END AS vwap,
        count(*)::BIGINT AS trade_count,
        md5(minute::VARCHAR || '|' || strlen(symbol)::VARCHAR || ':' || symbol) AS event_id
    FROM read_parquet('{files}', hive_partitioning = true)
    GROUP BY minute, symbol
    ) ORDER BY ts_event_ns, event_id
"""
"""Bars as `bars_1m` makes them; `event_id` the MD5 of the canonical encoding of (minute,
symbol): `{decimal}|{byte length}:{symbol}` (see `lake_platform.schemas.event_id`)."""


def signals_sql(files: str) -> str:
    """Flattened signals as `flatten_signals` makes them, nested objects as `{object}_{field}`;
    the files' columns that the result needs are read, as `GOLD_SIGNALS` reads them."""
    flat = [
        f"level.{name.replace('_', '.', 1)} AS {name}"
        if name.split("_", 1)[0] in ("barrier", "tape", "fuel", "runway")
        else f"level.{name} AS {name}"
        for name in GOLD_SIGNALS_SCHEMA.names()
        if name not in (*SIGNAL_CONTEXT, "event_id", "level_index")
    ]
    return f"""
        WITH distinct_signals AS (
            SELECT {", ".join(SIGNAL_CONTEXT)}, levels, event_id
            FROM read_parquet('{files}', hive_partitioning = true)
            QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts_recv_ns, _stream_seq) = 1
        ), levels AS (
            SELECT {", ".join(SIGNAL_CONTEXT)}, event_id, unnest(levels) AS level,
                generate_subscripts(levels, 1) - 1 AS level_index
            FROM distinct_signals
        )
        SELECT {", ".join(SIGNAL_CONTEXT)}, {", ".join(flat)}, event_id,
            level_index::INTEGER AS level_index
        FROM levels
        ORDER BY ts_event_ns, event_id, level_index
    """


def prepare_duckdb(table: str, lake: Path, out: Path) -> Callable[[], int]:
    """The same transform as one DuckDB statement, written as ZSTD Parquet."""
    import duckdb

    files = str(lake / FOLDERS[table] / "*.parquet")
    select = BARS_SQL.format(files=files) if table == "bars" else signals_sql(files)
    copy = f"COPY ({select}) TO '{out / f'{table}.parquet'}' (FORMAT parquet, COMPRESSION zstd)"

    def run() -> int:
        with duckdb.connect() as connection:
            (rows,) = connection.execute(copy).fetchone()  # type: ignore[misc]
        return rows

    return run


def child(table: str, variant: str, lake: Path, out: Path) -> None:
    """Run one variant in this process (imports untimed); print its `Run` as JSON."""
    prepare = {"verified": prepare_verified, "rebuild": prepare_rebuild, "duckdb": prepare_duckdb}
    run = prepare[variant](table, lake, out)
    cpu, start = time.process_time(), time.perf_counter()
    rows = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps(asdict(Run(table, variant, seconds, cpu, peak_rss_mb(), rows))))


def spawn(table: str, variant: str, lake: Path, out: Path) -> Run:
    if variant == "duckdb":
        (out / f"{table}.parquet").unlink(missing_ok=True)
    else:
        shutil.rmtree(lake / GOLD_FOLDERS[table], ignore_errors=True)
    command = [sys.executable, __file__, "--table", table, "--variant", variant]
    done = subprocess.run(
        [*command, "--lake", str(lake), "--out", str(out)],
        capture_output=True,
        text=True,
        env=child_env(),
    )
    if done.returncode:
        raise SystemExit(f"{table} {variant} failed ({done.returncode}):\n{done.stderr}")
    return Run(**json.loads(done.stdout.strip().splitlines()[-1]))


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over the runs (rows must not differ between runs)."""
    if len({run.rows for run in runs}) > 1:
        raise SystemExit(f"{runs[0].table} {runs[0].variant} wrote different row counts: {runs}")
    return Run(
        runs[0].table,
        runs[0].variant,
        statistics.median(run.seconds for run in runs),
        statistics.median(run.cpu_seconds for run in runs),
        statistics.median(run.peak_rss_mb for run in runs),
        runs[0].rows,
    )


def measure(table: str, lake: Path, out: Path, repeat: int) -> dict[str, Run]:
    """Median run of each variant; the variants take turns so noise hits them alike. The
    last run is the rebuild, so the Gold files compared are ours as the rebuild left them."""
    runs: dict[str, list[Run]] = {variant: [] for variant in VARIANTS}
    for attempt in range(1, repeat + 1):
        for variant in ("verified", "duckdb", "rebuild"):
            run = spawn(table, variant, lake, out)
            runs[variant].append(run)
            print(
                f"  {table} run {attempt} {variant:<8} {run.seconds:6.2f} s, "
                f"CPU {run.cpu_seconds:6.2f} s, peak RSS {run.peak_rss_mb:6,.0f} MiB, "
                f"{run.rows:,} rows",
                flush=True,
            )
    return {variant: median_run(done) for variant, done in runs.items()}


def same_rows(table: str, lake: Path, out: Path) -> str | None:
    """Why DuckDB's file and ours differ (None when they hold the same rows).

    Ours lacks the partition column (it lives in the path); both are sorted by the Gold
    order with every column as the last keys, so row order inside a tie does not matter.
    """
    ours = pl.read_parquet(sorted((lake / GOLD_FOLDERS[table]).glob("*.parquet")))
    duck = pl.read_parquet(out / f"{table}.parquet").select(ours.columns)
    if duck.schema != ours.schema:
        return f"schemas differ: duckdb {duck.schema}, ours {ours.schema}"
    sortable = [name for name, dtype in ours.schema.items() if not dtype.is_nested()]
    try:
        assert_frame_equal(
            duck.sort(sortable, nulls_last=True),
            ours.sort(sortable, nulls_last=True),
            check_exact=False,
            rel_tol=FLOAT_RTOL,
        )
    except AssertionError as error:
        return str(error)
    return None


def report(table: str, runs: dict[str, Run], mismatch: str | None) -> bool:
    duck = runs["duckdb"]
    print(f"{table}:")
    for name in VARIANTS:
        run = runs[name]
        print(
            f"  {name:<8} {run.seconds:6.2f} s  CPU {run.cpu_seconds:6.2f} s  "
            f"peak RSS {run.peak_rss_mb:6,.0f} MiB  {run.rows:,} rows"
        )
    for name in ("verified", "rebuild"):
        ratio = duck.seconds / max(runs[name].seconds, 1e-9)
        cpu_ratio = duck.cpu_seconds / max(runs[name].cpu_seconds, 1e-9)
        ok = "met" if ratio >= GOAL_VS_DUCKDB else "NOT met"
        print(f"  {name} vs duckdb (duckdb s / ours s): {ratio:5.2f}x", end="")
        print(f"  goal >= {GOAL_VS_DUCKDB}x: {ok}" if name == "verified" else "", end="")
        print(f"  (CPU s: {cpu_ratio:5.2f}x)")
    print(f"  duckdb and ours hold the same rows: {'yes' if mismatch is None else 'NO'}")
    if mismatch is not None:
        print(mismatch)
    return mismatch is None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="input rows of each hour")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median shown)")
    parser.add_argument("--lake", type=Path, help="lake root to keep and reuse the inputs")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--table", choices=TABLES, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args.table, args.variant, args.lake, args.out)
        return 0
    if min(args.rows, args.repeat) <= 0:
        parser.error("--rows and --repeat must be positive")
    with tempfile.TemporaryDirectory(prefix="bench-gold-") as tmp:
        lake = (args.lake or Path(tmp) / "lake").absolute()
        out = Path(tmp) / "out"
        lake.mkdir(parents=True, exist_ok=True)
        out.mkdir()
        print(f"input hours in {lake} ...", flush=True)
        inputs, setup_s = prepare_inputs(lake, args.rows)
        print(f"  setup {'reused' if setup_s is None else f'{setup_s:.1f} s'}", flush=True)
        print(
            f"  silver stocks/trades: {inputs.trades:,} trades; bronze levels/signals: "
            f"{inputs.signals_rows:,} rows in {inputs.signals_files:,} files, "
            f"{inputs.signals_distinct:,} distinct signals, {inputs.signals_levels:,} levels",
            flush=True,
        )
        results = {table: measure(table, lake, out, args.repeat) for table in args.tables}
        print()
        ok = [report(table, runs, same_rows(table, lake, out)) for table, runs in results.items()]
        return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
