"""As-of enrichment throughput: verified Gold `trades_nbbo` and `trades_enriched` hours against
DuckDB's `ASOF JOIN` of the same rows.

Builds, in a lake, Silver hours laid out as the Silver rebuild writes them (one folder per
partition value, rows in Silver order, ZSTD-3), for the hour and the last minute of the
hour before it (the previous hour's tail, all the enrichment needs of it):

* stocks: N trades and 5N quotes over S symbols (default 1M and 5M over 50); ~1% of the
  quotes share a nanosecond with another quote of their symbol, ~1% of the trades with a
  quote, a few quotes are crossed or locked, and the last symbol has trades but no quotes;
* options: N/2 option trades and 2N greeks snapshots over 2,000 contracts of 5 underlyings
  (the first 5 symbols, whose stock quotes are the underlying quotes); 20 more contracts
  trade without any greeks.

`--scale` multiplies every count (`--scale 0.01`: 10k trades). Then times, each in a fresh
child process (wall and CPU time of the work alone, imports untimed; peak RSS over imports):

* verified: per partition value, one after the other, as the Gold rebuild runs an hour:
  read the value's Silver files (the hour's and the previous hour's tail) with
  `LakeStore.read_parquet`, `trades_nbbo` / `options_enriched`, write with
  `write_partition` (ZSTD-3), then the blocking checks: sorted, unique `event_id`, one row
  per trade, within the hour, no look-ahead, the match is the latest (each join), ZSTD
  (every check must pass: exit 1 otherwise);
* verified-parallel: the same, `VALUE_THREADS` values at a time (one value's frames are
  too small for Polars to keep both cores busy);
* build: `verified` without the checks;
* verified-all: every value's rows in one call (the many-symbol path) and one check of
  each kind over them, written per value;
* duckdb: one `COPY (SELECT ... ASOF LEFT JOIN ...) TO ... (FORMAT parquet, COMPRESSION
  zstd, COMPRESSION_LEVEL 3)` over the same files. DuckDB's ASOF JOIN takes any of the rows
  that tie on the time (it depends on the scan order), so the inequality compares
  (time, `event_id`) structs: the trade's `event_id` side is '~', above every hex id, and
  the last quote in Silver order wins, as in ours. The tick test is two window passes.

The variants take turns (`--repeat` rounds), medians shown, with the CPU-time ratio (on a
shared machine it moves less than wall time; DuckDB keeps both cores busy). DuckDB's
rows must equal ours (every column; floats within a relative 1e-9) and its matched
`event_id`s ours, exit 1 otherwise. Peak RSS is divided by the inputs' Arrow size (the
columns the enrichment reads, every value of the hour and the previous hour's tail). The
goals (verified >= 1.5x DuckDB, peak RSS <= 3x the inputs' Arrow size) are only reported.
`--lake DIR` keeps the generated inputs in DIR and reuses them when built with the same
`--scale` and `--symbols` (its `gold/` is replaced).

    uv run python benchmarks/asof.py [--scale 1.0] [--symbols 50] [--repeat 3] [--lake DIR]
        [--tables stocks options] [--variants verified verified-parallel build verified-all]
"""

import argparse
import datetime as dt
import json
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
import pyarrow.parquet as pq
from polars.testing import assert_frame_equal
from silver import (
    HOUR,
    HOUR_NS,
    HOUR_START_NS,
    child_env,
    normal,
    peak_rss_mb,
    pick,
    reset_peak_rss_mb,
    uniform,
)

from lake_platform.asof_checks import match_is_latest, no_look_ahead
from lake_platform.checks import CheckOutcome, sorted_by, unique, within_hour, zstd_compressed
from lake_platform.derived.partition_files import write_partition
from lake_platform.schemas import BY_NAME
from lake_platform.schemas.event_id import event_id
from lake_platform.schemas.registry import TableSchema
from lake_platform.storage import LakeStore
from lake_platform.storage.parquet import PARQUET_OPTIONS
from lake_platform.storage.paths import hour_folder
from lake_platform.transforms.asof import (
    GREEK_COLUMNS,
    GREEKS_MATCH,
    OPTION_TRADE_COLUMNS,
    QUOTE_COLUMNS,
    QUOTE_MATCH,
    TRADE_COLUMNS,
    UNDERLYING_MATCH,
    options_enriched,
    trades_nbbo,
)
from lake_platform.transforms.silver import SILVER_ORDER

TRADES = BY_NAME["stocks.trades"]
QUOTES = BY_NAME["stocks.quotes"]
OPTION_TRADES = BY_NAME["options.trades"]
GREEKS = BY_NAME["options.greeks"]
PREVIOUS_HOUR = HOUR - dt.timedelta(hours=1)
TAIL_NS = 60 * 10**9
"""The previous hour's tail: its last minute."""
MAX_AGE_NS = HOUR_NS
TRADES_PER_SCALE = 1_000_000
QUOTES_PER_TRADE = 5
OPTION_TRADES_PER_SCALE = 500_000
GREEKS_PER_SCALE = 2_000_000
UNDERLYINGS = 5
CONTRACTS = 2_000
CONTRACTS_WITHOUT_GREEKS = 20
SAME_NS_RATE = 0.01
TABLES = ("stocks", "options")
VARIANTS = ("verified", "verified-parallel", "build", "verified-all", "duckdb")
VERIFIED = ("verified", "verified-parallel", "verified-all")
VALUE_THREADS = 2
"""Values enriched at a time by `verified-parallel` (the machine's cores here)."""
GOLD = {"stocks": "gold/stocks/trades_nbbo", "options": "gold/options/trades_enriched"}
PARTITION = {"stocks": "symbol", "options": "underlying"}
MARKER = "bench-asof.json"
GOAL_VS_DUCKDB = 1.5
GOAL_MEMORY_VS_ARROW = 3.0
FLOAT_RTOL = 1e-9
TRADE_SIZES = pl.Series((1, 5, 10, 50, 100, 100, 100, 200, 300, 500, 1000), dtype=pl.Int32)
CONDITIONS = pl.Series([[], [], [14], [14, 41], [37]], dtype=pl.List(pl.Int32))
RECEIVED = (pl.col("ts_event_ns") + 2_000_000).alias("ts_recv_ns")
"""Receive times 2 ms after the event (no column of `event_id`)."""


@dataclass
class Inputs:
    """What setup built (and what the marker file stores)."""

    scale: float
    symbols: int
    rows: dict[str, int]
    arrow_bytes: dict[str, int]


@dataclass
class Run:
    """One child run: its wall and CPU time, its peak RSS over imports, rows written."""

    table: str
    variant: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rows: int


def symbols(count: int) -> list[str]:
    return [f"S{index:03d}" for index in range(count)]


def silver_folder(schema: TableSchema, value: str, hour: dt.datetime) -> str:
    return f"silver/{schema.table}/{schema.partition_column}={value}/{hour_folder(hour)}"


def store_at(lake: Path) -> LakeStore:
    return LakeStore(str(lake), fsspec.filesystem("file"))


def event_times(start_ns: int, span_ns: int, seed: int) -> pl.Expr:
    """Sorted uniform times in [start, start + span)."""
    return (start_ns + (uniform(seed) * span_ns).cast(pl.Int64)).sort()


def stock_trades(
    count: int, start_ns: int, span_ns: int, names: list[str], seed: int
) -> pl.DataFrame:
    index = (uniform(seed + 1) * len(names)).cast(pl.Int64)
    return (
        pl.select(row=pl.int_range(count))
        .select(
            ts_event_ns=event_times(start_ns, span_ns, seed),
            symbol=pl.lit(pl.Series(names)).gather(index),
            price=(20.0 + 10.0 * index + normal(seed + 2) * 0.05).round(2),
            size=pick(TRADE_SIZES, seed + 4),
            exchange=(1 + uniform(seed + 5) * 19).cast(pl.Int16),
            conditions=pick(CONDITIONS, seed + 6),
            seq=pl.int_range(pl.len(), dtype=pl.Int64),
            source=pl.lit("direct_feed"),
        )
        .with_columns(RECEIVED)
    )


def quote_fields(index: pl.Expr, seed: int) -> dict[str, pl.Expr]:
    """Bid and ask around a symbol's price: spreads of 1–5 cents, ~0.2% crossed."""
    mid = 20.0 + 10.0 * index + normal(seed) * 0.05
    half = pick(pl.Series([0.005, 0.01, 0.01, 0.02, 0.025]), seed + 2)
    sign = pl.when(uniform(seed + 3) < 0.002).then(-1.0).otherwise(1.0)
    return {
        "bid_px": (mid - sign * half).round(2),
        "bid_sz": pick(TRADE_SIZES, seed + 4),
        "ask_px": (mid + sign * half).round(2),
        "ask_sz": pick(TRADE_SIZES, seed + 5),
        "bid_exch": (1 + uniform(seed + 6) * 19).cast(pl.Int16),
        "ask_exch": (1 + uniform(seed + 7) * 19).cast(pl.Int16),
        "seq": pl.int_range(pl.len(), dtype=pl.Int64),
        "source": pl.lit("direct_feed"),
    }


def stock_quotes(
    count: int, start_ns: int, span_ns: int, names: list[str], trades: pl.DataFrame, seed: int
) -> pl.DataFrame:
    """`count` quotes of every symbol but the last, plus a second quote at the same
    nanosecond for ~1%, and a quote at the time of ~1% of `trades` (of symbols with quotes)."""
    quoted = names[:-1]
    index = (uniform(seed + 1) * len(quoted)).cast(pl.Int64)
    base = pl.select(row=pl.int_range(count)).select(
        ts_event_ns=event_times(start_ns, span_ns, seed),
        symbol=pl.lit(pl.Series(quoted)).gather(index),
        _index=index,
    )
    at_trades = trades.filter(
        (uniform(seed + 20) < SAME_NS_RATE) & pl.col("symbol").is_in(quoted)
    ).select("ts_event_ns", "symbol", _index=pl.col("symbol").str.slice(1).cast(pl.Int64))
    rows = pl.concat([base, at_trades])
    same_ns = rows.filter(uniform(seed + 21) < SAME_NS_RATE)
    rows = pl.concat([rows, same_ns]).with_columns(**quote_fields(pl.col("_index"), seed + 30))
    return rows.with_columns(RECEIVED).drop("_index")


def contracts(names: list[str], count: int) -> pl.DataFrame:
    """`count` option contracts of the first `UNDERLYINGS` symbols: strikes around the
    symbol's price, calls then puts, then later expiries."""
    rows = []
    for index in range(count):
        underlying = names[index % UNDERLYINGS]
        base = 20.0 + 10.0 * (index % UNDERLYINGS)
        strike = round(base * (1 + 0.005 * ((index // UNDERLYINGS) % 200 - 100)), 2)
        right = "CP"[(index // (UNDERLYINGS * 200)) % 2]
        serial = index // (UNDERLYINGS * 400)
        option_symbol = f"{underlying}2512{19 + serial:02d}{right}{round(strike * 1000):08d}"
        rows.append(
            {
                "underlying": underlying,
                "option_symbol": option_symbol,
                "exp_date": dt.date(2025, 12, 19 + serial),
                "strike": strike,
                "right": right,
            }
        )
    return pl.DataFrame(rows)


def contract_columns(book: pl.DataFrame, index: pl.Expr) -> dict[str, pl.Expr]:
    return {
        name: pl.lit(book.get_column(name)).gather(index)
        for name in ("underlying", "option_symbol", "exp_date", "strike", "right")
    }


def greeks(count: int, start_ns: int, span_ns: int, book: pl.DataFrame, seed: int) -> pl.DataFrame:
    index = (uniform(seed + 1) * CONTRACTS).cast(pl.Int64)
    return (
        pl.select(row=pl.int_range(count))
        .select(
            ts_event_ns=event_times(start_ns, span_ns, seed),
            **contract_columns(book, index),
            delta=(uniform(seed + 2) * 2 - 1).round(4),
            gamma=(uniform(seed + 3) * 0.1).round(5),
            theta=(-uniform(seed + 4)).round(4),
            vega=(uniform(seed + 5) * 0.5).round(4),
            implied_vol=(0.1 + uniform(seed + 6) * 0.5).round(4),
            underlying_price=pl.lit(None, pl.Float64),
            open_interest=(uniform(seed + 7) * 10_000).cast(pl.Int64),
            seq=pl.int_range(pl.len(), dtype=pl.Int64),
            source=pl.lit("direct_feed"),
        )
        .with_columns(RECEIVED)
    )


def option_trades(count: int, book: pl.DataFrame, seed: int) -> pl.DataFrame:
    index = (uniform(seed + 1) * (CONTRACTS + CONTRACTS_WITHOUT_GREEKS)).cast(pl.Int64)
    price = (0.05 + uniform(seed + 2) * 10).round(2)
    quoted = uniform(seed + 3) >= 0.05
    return (
        pl.select(row=pl.int_range(count))
        .select(
            ts_event_ns=event_times(HOUR_START_NS, HOUR_NS, seed),
            **contract_columns(book, index),
            price=price,
            size=pick(pl.Series([1, 1, 2, 5, 10, 50], dtype=pl.Int32), seed + 4),
            opt_bid=pl.when(quoted).then((price - 0.05).clip(0.0)),
            opt_ask=pl.when(quoted).then(price + 0.05),
            aggressor=pick(pl.Series([-1, 0, 1], dtype=pl.Int8), seed + 5),
            conditions=pick(CONDITIONS, seed + 6),
            seq=pl.int_range(pl.len(), dtype=pl.Int64),
            source=pl.lit("direct_feed"),
        )
        .with_columns(RECEIVED)
    )


def write_silver(lake: Path, schema: TableSchema, frame: pl.DataFrame, hour: dt.datetime) -> int:
    """`frame` as Silver stores it: its stored columns with `event_id`, one file per
    partition value (without the partition column), rows in Silver order."""
    rows = frame.select(
        [
            pl.col(name).cast(dtype)
            for name, dtype in schema.stored_schema.items()
            if name != "event_id"
        ]
    ).with_columns(event_id(schema.stored_schema))
    column = schema.partition_column
    for (value,), part in rows.sort(SILVER_ORDER).partition_by(column, as_dict=True).items():
        folder = lake / silver_folder(schema, str(value), hour)
        folder.mkdir(parents=True, exist_ok=True)
        part.drop(column).write_parquet(folder / "part-00000.parquet", **PARQUET_OPTIONS)  # type: ignore[arg-type]
    return rows.height


def build_inputs(lake: Path, scale: float, count: int) -> dict[str, int]:
    """Every input hour and tail, written; rows of each."""
    names = symbols(count)
    tail_start = HOUR_START_NS - TAIL_NS

    def tail(rows: int) -> int:
        return max(1, rows * TAIL_NS // HOUR_NS)

    trade_count = round(TRADES_PER_SCALE * scale)
    quote_count = trade_count * QUOTES_PER_TRADE
    greek_count = round(GREEKS_PER_SCALE * scale)
    trades = stock_trades(trade_count, HOUR_START_NS, HOUR_NS, names, 100)
    previous_trades = stock_trades(tail(trade_count), tail_start, TAIL_NS, names, 200)
    book = contracts(names, CONTRACTS + CONTRACTS_WITHOUT_GREEKS)
    inputs = {
        "trades": (TRADES, trades, HOUR),
        "previous trades": (TRADES, previous_trades, PREVIOUS_HOUR),
        "quotes": (
            QUOTES,
            stock_quotes(quote_count, HOUR_START_NS, HOUR_NS, names, trades, 300),
            HOUR,
        ),
        "previous quotes": (
            QUOTES,
            stock_quotes(tail(quote_count), tail_start, TAIL_NS, names, previous_trades, 400),
            PREVIOUS_HOUR,
        ),
        "option trades": (
            OPTION_TRADES,
            option_trades(round(OPTION_TRADES_PER_SCALE * scale), book, 500),
            HOUR,
        ),
        "greeks": (GREEKS, greeks(greek_count, HOUR_START_NS, HOUR_NS, book, 600), HOUR),
        "previous greeks": (
            GREEKS,
            greeks(tail(greek_count), tail_start, TAIL_NS, book, 700),
            PREVIOUS_HOUR,
        ),
    }
    return {
        name: write_silver(lake, schema, frame, hour)
        for name, (schema, frame, hour) in inputs.items()
    }


SOURCES: dict[str, dict[str, tuple[TableSchema, dt.datetime, tuple[str, ...]]]] = {
    "stocks": {
        "trades": (TRADES, HOUR, TRADE_COLUMNS),
        "quotes": (QUOTES, HOUR, QUOTE_COLUMNS),
        "previous quotes": (QUOTES, PREVIOUS_HOUR, QUOTE_COLUMNS),
        "previous trades": (TRADES, PREVIOUS_HOUR, TRADE_COLUMNS),
    },
    "options": {
        "option trades": (OPTION_TRADES, HOUR, OPTION_TRADE_COLUMNS),
        "greeks": (GREEKS, HOUR, GREEK_COLUMNS),
        "previous greeks": (GREEKS, PREVIOUS_HOUR, GREEK_COLUMNS),
        "quotes": (QUOTES, HOUR, QUOTE_COLUMNS),
        "previous quotes": (QUOTES, PREVIOUS_HOUR, QUOTE_COLUMNS),
    },
}
"""Each table's inputs, in the enrichment's argument order: the Silver table, the hour, the
columns read. A value's quotes are those of the symbol equal to it (an option's underlying)."""


def values(lake: Path, table: str) -> list[str]:
    """The partition values of the table's Gold hour: those of its Silver trades."""
    schema, hour, _ = next(iter(SOURCES[table].values()))
    base = lake / f"silver/{schema.table}"
    return sorted(
        folder.name.partition("=")[2]
        for folder in base.iterdir()
        if (folder / hour_folder(hour)).is_dir()
    )


def read_silver(
    lake: Path, schema: TableSchema, value: str, hour: dt.datetime, columns: tuple[str, ...]
) -> pl.DataFrame:
    """A value-hour's `columns` as the rebuild reads them (`LakeStore.read_parquet`, the
    partition column from the folder); no rows when the value has no folder in the hour."""
    column = schema.partition_column
    own = [name for name in columns if name != column]
    folder = silver_folder(schema, value, hour)
    files = sorted(f"{folder}/{path.name}" for path in (lake / folder).glob("*.parquet"))
    if files:
        frame = store_at(lake).read_parquet(files, own)
    else:
        frame = pl.DataFrame(schema={name: schema.stored_schema[name] for name in own})
    return frame.with_columns(pl.lit(value, pl.String()).alias(column)).select(columns)


def read_value(lake: Path, table: str, value: str) -> dict[str, pl.DataFrame]:
    return {
        name: read_silver(lake, schema, value, hour, columns)
        for name, (schema, hour, columns) in SOURCES[table].items()
    }


def read_all(lake: Path, table: str) -> dict[str, pl.DataFrame]:
    """Every value's inputs at once: each input one read of all its values' files, the
    partition column from their folders."""
    frames = {}
    for name, (schema, hour, columns) in SOURCES[table].items():
        folders = [lake / silver_folder(schema, value, hour) for value in values(lake, table)]
        files = [str(path) for folder in folders for path in sorted(folder.glob("*.parquet"))]
        frames[name] = (
            pl.scan_parquet(files, hive_partitioning=True).select(columns).collect()
            if files
            else read_silver(lake, schema, "none", hour, columns)
        )
    return frames


def arrow_bytes(lake: Path, table: str) -> int:
    """`estimated_size()` of every value's inputs as the enrichment reads them."""
    return sum(int(frame.estimated_size()) for frame in read_all(lake, table).values())


def prepare_inputs(lake: Path, scale: float, count: int) -> tuple[Inputs, float | None]:
    """The input hours in `lake`: reused when its marker matches, else built (seconds)."""
    marker = lake / MARKER
    if marker.exists():
        inputs = Inputs(**json.loads(marker.read_text()))
        if (inputs.scale, inputs.symbols) == (scale, count):
            return inputs, None
        raise SystemExit(f"{lake} holds other inputs ({inputs}); use another --lake")
    if (lake / "silver").exists():
        raise SystemExit(f"{lake} holds a lake without {MARKER}; use an empty --lake")
    start = time.perf_counter()
    rows = build_inputs(lake, scale, count)
    inputs = Inputs(scale, count, rows, {table: arrow_bytes(lake, table) for table in TABLES})
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(asdict(inputs)))
    return inputs, seconds


def enrich(table: str, inputs: dict[str, pl.DataFrame]) -> pl.DataFrame:
    frames = list(inputs.values())
    if table == "stocks":
        return trades_nbbo(*frames, max_age_ns=MAX_AGE_NS)
    return options_enriched(*frames, max_age_ns=MAX_AGE_NS)


def checks(
    table: str, gold: pl.DataFrame, inputs: dict[str, pl.DataFrame], lake: Path, written: list[str]
) -> list[CheckOutcome]:
    """The blocking checks of the enriched rows `gold`, written as the `written` files."""
    file = written[0] if len(written) == 1 else f"{len(written)} files"
    trades = next(iter(inputs.values()))
    outcomes = [
        sorted_by(gold, SILVER_ORDER, file),
        unique(gold, ["event_id"], file),
        CheckOutcome(
            gold.height == trades.height, f"{file}: {gold.height} rows, {trades.height} trades"
        ),
        within_hour(gold, HOUR, file),
        *(zstd_compressed(pq.read_metadata(lake / path), path) for path in written),
    ]
    if table == "stocks":
        quotes = [inputs["quotes"], inputs["previous quotes"]]
        return [
            *outcomes,
            no_look_ahead(gold, [QUOTE_MATCH], file),
            match_is_latest(gold, quotes, QUOTE_MATCH, MAX_AGE_NS, file),
        ]
    return [
        *outcomes,
        no_look_ahead(gold, [GREEKS_MATCH, UNDERLYING_MATCH], file),
        match_is_latest(
            gold, [inputs["greeks"], inputs["previous greeks"]], GREEKS_MATCH, MAX_AGE_NS, file
        ),
        match_is_latest(
            gold, [inputs["quotes"], inputs["previous quotes"]], UNDERLYING_MATCH, MAX_AGE_NS, file
        ),
    ]


def write_gold(store: LakeStore, table: str, gold: pl.DataFrame) -> list[str]:
    """Each value's rows as its Gold value-hour's files (`write_partition`); their paths."""
    column = PARTITION[table]
    paths = []
    for (value,), part in gold.partition_by(column, as_dict=True, maintain_order=True).items():
        folder = f"{GOLD[table]}/{column}={value}/{hour_folder(HOUR)}"
        paths.extend(file.path for file in write_partition(store, folder, part.drop(column)))
    return paths


def verify(
    table: str, gold: pl.DataFrame, inputs: dict[str, pl.DataFrame], lake: Path, paths: list[str]
) -> None:
    failed = [o.message for o in checks(table, gold, inputs, lake, paths) if not o.passed]
    if failed:
        raise SystemExit(f"{table} checks failed: {failed}")


def prepare_per_value(table: str, lake: Path, checked: bool, threads: int) -> Callable[[], int]:
    """As the Gold rebuild runs an hour: each partition value alone (read, enrich, write,
    checks), `threads` values at a time."""
    store = store_at(lake)

    def one(value: str) -> int:
        inputs = read_value(lake, table, value)
        gold = enrich(table, inputs)
        paths = write_gold(store, table, gold)
        if checked:
            verify(table, gold, inputs, lake, paths)
        return gold.height

    def run() -> int:
        with ThreadPoolExecutor(threads) as pool:
            return sum(pool.map(one, values(lake, table)))

    return run


def prepare_verified(table: str, lake: Path, _: Path) -> Callable[[], int]:
    return prepare_per_value(table, lake, checked=True, threads=1)


def prepare_verified_parallel(table: str, lake: Path, _: Path) -> Callable[[], int]:
    return prepare_per_value(table, lake, checked=True, threads=VALUE_THREADS)


def prepare_build(table: str, lake: Path, _: Path) -> Callable[[], int]:
    return prepare_per_value(table, lake, checked=False, threads=1)


def prepare_verified_all(table: str, lake: Path, _: Path) -> Callable[[], int]:
    """Every value in one call (the many-symbol path), checked, written per value."""
    store = store_at(lake)

    def run() -> int:
        inputs = read_all(lake, table)
        gold = enrich(table, inputs)
        verify(table, gold, inputs, lake, write_gold(store, table, gold))
        return gold.height

    return run


def globs(lake: Path, schema: TableSchema, hour: dt.datetime, value: str = "*") -> str:
    return str(lake / silver_folder(schema, value, hour) / "*.parquet")


def sql_list(paths: list[str]) -> str:
    return "[" + ", ".join(f"'{path}'" for path in paths) + "]"


def later_row(left: str, right: str) -> str:
    """DuckDB's ASOF inequality for "`right` at or before `left` in Silver order": times,
    then `event_id`s, with '~' (above every hex id) on the trade's side."""
    return (
        f"{{'ts': {left}.ts_event_ns, 'id': '~'}} >= "
        f"{{'ts': {right}.ts_event_ns, 'id': {right}.event_id}}"
    )


def fresh(column: str, ts: str, alias: str) -> str:
    return f"CASE WHEN ts_event_ns - {ts} <= {MAX_AGE_NS} THEN {column} END AS {alias}"


def stocks_sql(lake: Path) -> str:
    trades = sql_list([globs(lake, TRADES, HOUR)])
    previous_trades = sql_list([globs(lake, TRADES, PREVIOUS_HOUR)])
    quotes = sql_list([globs(lake, QUOTES, HOUR), globs(lake, QUOTES, PREVIOUS_HOUR)])
    quote_columns = ", ".join(
        fresh(f"q_{name}", "q_ts", name) for name in ("bid_px", "bid_sz", "ask_px", "ask_sz")
    )
    return f"""
        WITH sequence AS (
            SELECT symbol, ts_event_ns, event_id, price, size, exchange, conditions,
                true AS in_hour
            FROM read_parquet({trades}, hive_partitioning = true)
            UNION ALL
            SELECT symbol, ts_event_ns, event_id, price, NULL, NULL, NULL, false
            FROM read_parquet({previous_trades}, hive_partitioning = true)
        ), steps AS (
            SELECT *, nullif(sign(price - lag(price) OVER by_symbol), 0) AS step
            FROM sequence
            WINDOW by_symbol AS (PARTITION BY symbol ORDER BY ts_event_ns, event_id)
        ), ticks AS (
            SELECT * EXCLUDE (step), coalesce(last_value(step IGNORE NULLS) OVER (
                PARTITION BY symbol ORDER BY ts_event_ns, event_id
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 0) AS tick
            FROM steps
        ), trades AS (
            SELECT * EXCLUDE (in_hour) FROM ticks WHERE in_hour
        ), quotes AS (
            SELECT symbol, ts_event_ns, event_id, bid_px, bid_sz, ask_px, ask_sz
            FROM read_parquet({quotes}, hive_partitioning = true)
        ), joined AS (
            SELECT t.*, q.ts_event_ns AS q_ts, q.event_id AS q_event_id, q.bid_px AS q_bid_px,
                q.bid_sz AS q_bid_sz, q.ask_px AS q_ask_px, q.ask_sz AS q_ask_sz
            FROM trades t ASOF LEFT JOIN quotes q
                ON t.symbol = q.symbol AND {later_row("t", "q")}
        ), matched AS (
            SELECT ts_event_ns, symbol, price, size, exchange, conditions, event_id, tick,
                {quote_columns},
                {fresh("q_ts", "q_ts", "quote_ts_event_ns")},
                {fresh("ts_event_ns - q_ts", "q_ts", "quote_age_ns")},
                {fresh("q_event_id", "q_ts", "quote_event_id")}
            FROM joined
        ), with_mid AS (
            SELECT *, (bid_px + ask_px) / 2 AS mid FROM matched
        )
        SELECT ts_event_ns, symbol, price, size, exchange, conditions, event_id,
            bid_px, bid_sz, ask_px, ask_sz, quote_ts_event_ns, quote_age_ns, quote_event_id,
            mid, ask_px - bid_px AS spread,
            CASE WHEN mid > 0 THEN (ask_px - bid_px) / mid * 10000 END AS spread_bps,
            (CASE WHEN price > mid THEN 1 WHEN price < mid THEN -1 ELSE tick END)::TINYINT
                AS trade_sign,
            2 * abs(price - mid) AS effective_spread,
            bid_px > ask_px AS crossed,
            bid_px = ask_px AS locked
        FROM with_mid
        ORDER BY ts_event_ns, event_id
    """


def options_sql(lake: Path) -> str:
    trades = sql_list([globs(lake, OPTION_TRADES, HOUR)])
    greek_files = sql_list([globs(lake, GREEKS, HOUR), globs(lake, GREEKS, PREVIOUS_HOUR)])
    underlyings = values(lake, "options")
    quotes = sql_list(
        [
            globs(lake, QUOTES, hour, value)
            for value in underlyings
            for hour in (HOUR, PREVIOUS_HOUR)
            if (lake / silver_folder(QUOTES, value, hour)).is_dir()
        ]
    )
    trade_columns = ", ".join(f'"{name}"' for name in OPTION_TRADE_COLUMNS)  # `right` is SQL
    greek_fields = ("delta", "gamma", "theta", "vega", "implied_vol")
    greek_columns = ", ".join(fresh(f"g_{name}", "g_ts", name) for name in greek_fields)
    return f"""
        WITH trades AS (
            SELECT {trade_columns} FROM read_parquet({trades}, hive_partitioning = true)
        ), greeks AS (
            SELECT option_symbol, ts_event_ns, event_id, {", ".join(greek_fields)}
            FROM read_parquet({greek_files}, hive_partitioning = true)
        ), quotes AS (
            SELECT symbol, ts_event_ns, event_id, bid_px, ask_px
            FROM read_parquet({quotes}, hive_partitioning = true)
        ), joined AS (
            SELECT t.*, g.ts_event_ns AS g_ts, g.event_id AS g_event_id,
                {", ".join(f"g.{name} AS g_{name}" for name in greek_fields)},
                q.ts_event_ns AS q_ts, q.bid_px AS q_bid_px, q.ask_px AS q_ask_px
            FROM trades t
            ASOF LEFT JOIN greeks g
                ON t.option_symbol = g.option_symbol AND {later_row("t", "g")}
            ASOF LEFT JOIN quotes q ON t.underlying = q.symbol AND {later_row("t", "q")}
        ), matched AS (
            SELECT {trade_columns}, {greek_columns},
                {fresh("g_ts", "g_ts", "greeks_ts_event_ns")},
                {fresh("ts_event_ns - g_ts", "g_ts", "greeks_age_ns")},
                {fresh("g_event_id", "g_ts", "greeks_event_id")},
                {fresh("q_bid_px", "q_ts", "underlying_bid")},
                {fresh("q_ask_px", "q_ts", "underlying_ask")},
                {fresh("ts_event_ns - q_ts", "q_ts", "underlying_quote_age_ns")}
            FROM joined
        ), with_mids AS (
            SELECT *, (underlying_bid + underlying_ask) / 2 AS underlying_mid,
                (opt_bid + opt_ask) / 2 AS option_mid
            FROM matched
        )
        SELECT {trade_columns}, {", ".join(greek_fields)}, greeks_ts_event_ns, greeks_age_ns,
            greeks_event_id, underlying_bid, underlying_ask, underlying_mid,
            underlying_quote_age_ns,
            delta * size * 100 * underlying_mid AS delta_notional,
            CASE WHEN option_mid > 0 THEN (price - option_mid) / option_mid END AS trade_vs_mid
        FROM with_mids
        ORDER BY ts_event_ns, event_id
    """


def prepare_duckdb(table: str, lake: Path, out: Path) -> Callable[[], int]:
    """The same enrichment as one DuckDB statement, written as ZSTD-3 Parquet."""
    import duckdb

    select = stocks_sql(lake) if table == "stocks" else options_sql(lake)
    target = out / f"{table}.parquet"
    copy = f"COPY ({select}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)"

    def run() -> int:
        with duckdb.connect() as connection:
            (rows,) = connection.execute(copy).fetchone()  # type: ignore[misc]
        return rows

    return run


PREPARE = {
    "verified": prepare_verified,
    "verified-parallel": prepare_verified_parallel,
    "build": prepare_build,
    "verified-all": prepare_verified_all,
    "duckdb": prepare_duckdb,
}


def child(table: str, variant: str, lake: Path, out: Path) -> None:
    """Run one variant in this process (imports untimed, RSS peak reset after them); print
    its `Run` as JSON (peak RSS over the RSS after imports)."""
    run = PREPARE[variant](table, lake, out)
    start_rss = reset_peak_rss_mb()
    cpu, start = time.process_time(), time.perf_counter()
    rows = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps(asdict(Run(table, variant, seconds, cpu, peak_rss_mb() - start_rss, rows))))


def spawn(table: str, variant: str, lake: Path, out: Path) -> Run:
    if variant == "duckdb":
        (out / f"{table}.parquet").unlink(missing_ok=True)
    else:
        shutil.rmtree(lake / GOLD[table], ignore_errors=True)
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


def measure(table: str, lake: Path, out: Path, repeat: int, variants: list[str]) -> dict[str, Run]:
    """Median run of each variant; the variants take turns so noise hits them alike. Ours
    all write the same files; the last run's are compared with DuckDB's."""
    runs: dict[str, list[Run]] = {variant: [] for variant in variants}
    for attempt in range(1, repeat + 1):
        for variant in variants:
            run = spawn(table, variant, lake, out)
            runs[variant].append(run)
            print(
                f"  {table} run {attempt} {variant:<12} {run.seconds:6.2f} s, "
                f"CPU {run.cpu_seconds:6.2f} s, peak RSS {run.peak_rss_mb:6,.0f} MiB, "
                f"{run.rows:,} rows",
                flush=True,
            )
    return {variant: median_run(done) for variant, done in runs.items()}


MATCH_IDS = {"stocks": "quote_event_id", "options": "greeks_event_id"}


def read_ours(lake: Path, table: str) -> pl.DataFrame:
    """Our Gold files of the hour, the partition column from each file's folder."""
    column, base = PARTITION[table], lake / GOLD[table]
    return pl.concat(
        [
            pl.read_parquet(path).with_columns(
                pl.lit(path.relative_to(base).parts[0].partition("=")[2]).alias(column)
            )
            for path in sorted(base.glob(f"{column}=*/*/*/*.parquet"))
        ]
    )


def differences(table: str, lake: Path, out: Path) -> tuple[int, str | None]:
    """How many trades DuckDB matched with another `event_id` than ours (or are missing from
    one side), and why the rows differ (None when DuckDB's file and ours hold the same)."""
    duck = pl.read_parquet(out / f"{table}.parquet").sort("event_id")
    ours = read_ours(lake, table).select(duck.columns).sort("event_id")
    ids = (
        pl.DataFrame({"ours": ours["event_id"], "duck": duck["event_id"]})
        if (ours.height == duck.height)
        else None
    )
    if ids is None or not ids["ours"].equals(ids["duck"]):
        mismatched = abs(ours.height - duck.height) or ours.height
    else:
        matched = MATCH_IDS[table]
        mismatched = int(ours[matched].ne_missing(duck[matched]).sum())
    try:
        assert_frame_equal(duck, ours, check_exact=False, rel_tol=FLOAT_RTOL)
    except AssertionError as error:
        return mismatched, str(error)
    return mismatched, None


def report(
    table: str, inputs: Inputs, runs: dict[str, Run], mismatched: int, why: str | None
) -> bool:
    duck = runs["duckdb"]
    arrow_mb = inputs.arrow_bytes[table] / 2**20
    print(f"{table} (inputs' Arrow size {arrow_mb:,.0f} MiB):")
    for name, run in runs.items():
        print(
            f"  {name:<17} {run.seconds:6.2f} s  CPU {run.cpu_seconds:6.2f} s  "
            f"peak RSS {run.peak_rss_mb:6,.0f} MiB ({run.peak_rss_mb / arrow_mb:4.2f}x Arrow)  "
            f"{run.rows:,} rows"
        )
    ours = [name for name in runs if name != "duckdb"]
    for name in ours:
        ratio = duck.seconds / max(runs[name].seconds, 1e-9)
        cpu_ratio = duck.cpu_seconds / max(runs[name].cpu_seconds, 1e-9)
        print(f"  {name} vs duckdb (duckdb s / ours s): {ratio:5.2f}x", end="")
        if name in VERIFIED:
            print(
                f"  goal >= {GOAL_VS_DUCKDB}x: {'met' if ratio >= GOAL_VS_DUCKDB else 'NOT met'}",
                end="",
            )
        print(f"  (CPU s: {cpu_ratio:5.2f}x)")
    for name in [name for name in ours if name in VERIFIED]:
        memory = runs[name].peak_rss_mb / arrow_mb
        ok = "met" if memory <= GOAL_MEMORY_VS_ARROW else "NOT met"
        print(
            f"  {name} peak RSS / Arrow size: {memory:4.2f}x  goal <= {GOAL_MEMORY_VS_ARROW}x: {ok}"
        )
    print(f"  trades matched differently by duckdb: {mismatched:,}")
    print(f"  duckdb and ours hold the same rows: {'yes' if why is None else 'NO'}")
    if why is not None:
        print(why)
    return why is None and mismatched == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every row count")
    parser.add_argument("--symbols", type=int, default=50, help="stock symbols (>= 6)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant (median shown)")
    parser.add_argument("--lake", type=Path, help="lake root to keep and reuse the inputs")
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=[name for name in VARIANTS if name != "duckdb"],
        default=[name for name in VARIANTS if name != "duckdb"],
        help="ours to run (DuckDB always runs)",
    )
    parser.add_argument("--table", choices=TABLES, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args.table, args.variant, args.lake, args.out)
        return 0
    if args.scale <= 0 or args.repeat <= 0 or args.symbols <= UNDERLYINGS:
        parser.error(f"--scale and --repeat must be positive, --symbols above {UNDERLYINGS}")
    with tempfile.TemporaryDirectory(prefix="bench-asof-") as tmp:
        lake = (args.lake or Path(tmp) / "lake").absolute()
        out = Path(tmp) / "out"
        lake.mkdir(parents=True, exist_ok=True)
        out.mkdir()
        print(f"input hours in {lake} ...", flush=True)
        inputs, setup_s = prepare_inputs(lake, args.scale, args.symbols)
        print(f"  setup {'reused' if setup_s is None else f'{setup_s:.1f} s'}", flush=True)
        print(
            "  " + ", ".join(f"{name}: {rows:,}" for name, rows in inputs.rows.items()), flush=True
        )
        variants = ["duckdb", *(name for name in VARIANTS if name in args.variants)]
        results = {table: measure(table, lake, out, args.repeat, variants) for table in args.tables}
        print()
        ok = [
            report(table, inputs, runs, *differences(table, lake, out))
            for table, runs in results.items()
        ]
        return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
