"""As-of enrichment throughput: the verified Gold hour of `trades_nbbo` and `trades_enriched`
as a Dagster run of the hour makes it, against DuckDB's `ASOF JOIN` of the same rows.

Builds a lake whose Iceberg catalog holds Silver hours as the Silver rebuild leaves them
(one content-named ZSTD-3 file per partition value, rows in Silver order, committed with
`replace_hour`: `catalog_lake.commit_silver_hour`), for the hour and the last minute of the
hour before it (the previous hour's tail, all the enrichment needs of it):

* stocks: N trades and 5N quotes over S symbols (default 1M and 5M over 50); ~1% of the
  quotes share a nanosecond with another quote of their symbol, ~1% of the trades with a
  quote, a few quotes are crossed or locked, and the last symbol has trades but no quotes;
* options: N/2 option trades and 2N greeks snapshots over 2,000 contracts of 5 underlyings
  (the first 5 symbols, whose stock quotes are the underlying quotes); 20 more contracts
  trade without any greeks.

`--scale` multiplies every count (`--scale 0.01`: 10k trades). Then times, each in a fresh
child process (wall and CPU time of the work alone: imports and the emptied Gold table's
creation untimed; peak RSS over imports):

* verified: `rebuild_hour` + `check_hour` of the Gold table's hour, what its asset runs:
  the Silver inputs pinned to their snapshots, each partition value read, enriched, written
  and its rows checked (no look-ahead, latest match, order, ...), one Iceberg commit, then
  the committed files' footers and digests checked (every check must pass: exit 1
  otherwise);
* verified-parallel: the same with the values rebuilt `VALUE_THREADS` at a time, a
  prototype of that change to `rebuild._rebuild_files` (patched in here); it must commit
  the same files as verified;
* hand: the same work without the platform's bookkeeping, the floor it is compared with:
  per value, the same committed Silver files read with `LakeStore.read_parquet`, the
  table's transform, `write_partition`, and the checks called directly (sorted, unique
  `event_id`, one row per trade, within the hour, ZSTD, no look-ahead, latest match); no
  catalog, no commit;
* duckdb: one `COPY (SELECT ... ASOF LEFT JOIN ...) TO ... (FORMAT parquet, COMPRESSION
  zstd, COMPRESSION_LEVEL 3)` over the same committed files. DuckDB's ASOF JOIN takes any
  of the rows that tie on the time (it depends on the scan order), so the inequality
  compares (time, `event_id`) structs: the trade's `event_id` side is '~', above every hex
  id, and the last quote in Silver order wins, as in ours. The tick test is two window
  passes.

The variants take turns (`--repeat` rounds, verified last), medians shown, with the CPU-time
ratio (on a shared machine it moves less than wall time; DuckDB keeps both cores busy) and
the load average. The Gold hour verified committed (read through the catalog) must equal
DuckDB's rows (every column; floats within a relative 1e-9) and its matched `event_id`s,
exit 1 otherwise. Peak RSS is divided by the inputs' Arrow size (what the rebuild reads: the
declared columns of the source and lookups of every value). The goals (verified >= 1.5x
DuckDB, peak RSS <= 3x the inputs' Arrow size) are only reported. `--phases` then runs
verified and hand once more with timers around their steps and prints where each spends its
time. `--lake DIR` keeps the generated inputs in DIR and reuses them when built with the
same `--scale` and `--symbols` (its Gold tables are replaced).

    uv run python benchmarks/asof.py [--scale 1.0] [--symbols 50] [--repeat 3] [--lake DIR]
        [--tables stocks options] [--variants verified verified-parallel hand] [--phases]
"""

import argparse
import datetime as dt
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from catalog_lake import commit_silver_hour, fresh_table, store_at
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

from lake_platform.asof_checks import AsofMatch, match_is_latest, no_look_ahead
from lake_platform.checks import CheckOutcome, sorted_by, unique, within_hour, zstd_compressed
from lake_platform.derived import asof_tables, checking, rebuild
from lake_platform.derived.asof_tables import GOLD_OPTIONS_ENRICHED, GOLD_TRADES_NBBO
from lake_platform.derived.declaration import DerivedTable, with_partition_value
from lake_platform.derived.hour_files import files_digest, value_hour_folder
from lake_platform.derived.partition_files import write_partition
from lake_platform.derived.results import HourResult
from lake_platform.derived.sources import HourInputs, hour_inputs, lookup_frames
from lake_platform.schemas import BY_NAME
from lake_platform.storage import LakeStore
from lake_platform.tables.hours import hour_paths
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.transforms.asof import (
    GREEKS_MATCH,
    OPTION_TRADE_COLUMNS,
    QUOTE_MATCH,
    UNDERLYING_MATCH,
)
from lake_platform.transforms.silver import SILVER_ORDER
from lake_platform_tests.tables_of import tables_of

TRADES = BY_NAME["stocks.trades"]
QUOTES = BY_NAME["stocks.quotes"]
OPTION_TRADES = BY_NAME["options.trades"]
GREEKS = BY_NAME["options.greeks"]
PREVIOUS_HOUR = HOUR - dt.timedelta(hours=1)
TAIL_NS = 60 * 10**9
"""The previous hour's tail: its last minute."""
MAX_AGE_NS = HOUR_NS
"""`LAKE_ASOF_MAX_AGE`'s default, which the children run with."""
TRADES_PER_SCALE = 1_000_000
QUOTES_PER_TRADE = 5
OPTION_TRADES_PER_SCALE = 500_000
GREEKS_PER_SCALE = 2_000_000
UNDERLYINGS = 5
CONTRACTS = 2_000
CONTRACTS_WITHOUT_GREEKS = 20
SAME_NS_RATE = 0.01
TABLES = ("stocks", "options")
GOLD: dict[str, DerivedTable] = {"stocks": GOLD_TRADES_NBBO, "options": GOLD_OPTIONS_ENRICHED}
OURS = ("verified-parallel", "hand", "verified")
"""Our variants in the order they take turns: verified last, so the Gold hour compared with
DuckDB's is the one it committed."""
VARIANTS = ("duckdb", *OURS)
PLATFORM = ("verified", "verified-parallel")
"""The variants that commit the hour (and must commit the same files)."""
VALUE_THREADS = 2
"""Values rebuilt at a time by `verified-parallel` (the machine's cores here)."""
MARKER = "bench-asof-catalog.json"
"""Marks a lake of these inputs committed to its catalog (older lakes of this benchmark: none)."""
GOAL_VS_DUCKDB = 1.5
GOAL_MEMORY_VS_ARROW = 3.0
FLOAT_RTOL = 1e-9
TRADE_SIZES = pl.Series((1, 5, 10, 50, 100, 100, 100, 200, 300, 500, 1000), dtype=pl.Int32)
CONDITIONS = pl.Series([[], [], [14], [14, 41], [37]], dtype=pl.List(pl.Int32))
RECEIVED = (pl.col("ts_event_ns") + 2_000_000).alias("ts_recv_ns")
"""Receive times 2 ms after the event (no column of `event_id`)."""
LATEST: dict[str, tuple[tuple[AsofMatch, tuple[str, ...]], ...]] = {
    "stocks": ((QUOTE_MATCH, ("previous_quotes", "quotes")),),
    "options": (
        (GREEKS_MATCH, ("previous_greeks", "greeks")),
        (UNDERLYING_MATCH, ("previous_quotes", "quotes")),
    ),
}
"""Each table's as-of matches and the lookups each is made from (the hand path's checks)."""
MATCH_IDS = {"stocks": "quote_event_id", "options": "greeks_event_id"}


@dataclass
class Inputs:
    """What setup built (and what the marker file stores)."""

    scale: float
    symbols: int
    rows: dict[str, int]
    arrow_bytes: dict[str, int]


@dataclass
class Run:
    """One child run: its wall and CPU time, its peak RSS over imports, rows written, the
    digest of the Gold files it committed ('' when it commits none), its phases' seconds
    (with `--phases`)."""

    table: str
    variant: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rows: int
    output: str = ""
    phases: dict[str, float] = field(default_factory=dict)


def symbols(count: int) -> list[str]:
    return [f"S{index:03d}" for index in range(count)]


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


def build_inputs(lake: Path, scale: float, count: int) -> dict[str, int]:
    """Every input hour and tail, committed as Silver hours; rows of each."""
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
    store = store_at(lake)
    return {
        name: commit_silver_hour(store, schema, frame, hour)
        for name, (schema, frame, hour) in inputs.items()
    }


def planned_inputs(store: LakeStore, table: str) -> HourInputs:
    """The Gold hour's input files as the rebuild plans them: each Silver table's hour in
    its current snapshot, by value folder."""
    return hour_inputs(tables_of(store), GOLD[table], HOUR)


def read_value(
    store: LakeStore, table: str, planned: HourInputs, value_folder: str
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """One value's source rows and lookup frames, read as the rebuild reads them (the
    declared columns, the partition column from the folder)."""
    derived = GOLD[table]
    rows = store.read_parquet(planned.files[value_folder], derived.source_columns)
    source = with_partition_value(rows, derived.partition_column, value_folder)
    return source, lookup_frames(store, derived, value_folder, planned.lookups)


def arrow_bytes(store: LakeStore, table: str) -> int:
    """`estimated_size()` of every value's inputs as the rebuild reads them."""
    planned = planned_inputs(store, table)
    total = 0
    for folder in planned.files:
        source, lookups = read_value(store, table, planned, folder)
        total += sum(int(frame.estimated_size()) for frame in (source, *lookups.values()))
    return total


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
    store = store_at(lake)
    inputs = Inputs(scale, count, rows, {table: arrow_bytes(store, table) for table in TABLES})
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(asdict(inputs)))
    return inputs, seconds


def committed_gold(store: LakeStore, table: str) -> dict[str, list[str]]:
    """The Gold hour's files in the table's current snapshot, by value folder."""
    iceberg = tables_of(store).existing(GOLD[table].target)
    return {} if iceberg is None else hour_paths(iceberg, HOUR)


def check_failures(outcomes: list[CheckOutcome] | dict[str, CheckOutcome], table: str) -> None:
    values = outcomes.values() if isinstance(outcomes, dict) else outcomes
    failed = [outcome.message for outcome in values if not outcome.passed]
    if failed:
        raise SystemExit(f"{table} checks failed: {failed}")


def prepare_verified(table: str, lake: Path, _: Path) -> Callable[[], int]:
    """What the Gold asset runs for the hour: the rebuild, then every check (all must pass),
    into the table emptied (untimed)."""
    store, derived = store_at(lake), GOLD[table]
    tables = tables_of(store)
    fresh_table(tables, derived)

    def run() -> int:
        result = rebuild.rebuild_hour(tables, derived, HOUR)
        check_failures(checking.check_hour(tables, derived, result), table)
        return result.rows_written

    return run


def rebuild_files_in_parallel(
    tables: LakeTables, table: DerivedTable, hour: dt.datetime, planned: HourInputs
) -> HourResult:
    """`rebuild._rebuild_files` with `VALUE_THREADS` values at a time (results merged in
    value order, as there): the lever `verified-parallel` measures."""
    inputs = dict(planned.files)
    result = HourResult(hour, inputs, planned.values, lookups=planned.lookups)

    def one(value_folder: str) -> Any:
        files = planned.files[value_folder]
        return rebuild._rebuild_value(tables, table, hour, value_folder, files, planned.lookups)

    with ThreadPoolExecutor(VALUE_THREADS) as pool:
        for value_folder, value in zip(planned.files, pool.map(one, planned.files), strict=True):
            inputs[value_folder] = value.inputs
            checking.merge_totals(result.source_totals, value.source_totals)
            result.checked[value_folder] = value.checked
            result.files.extend(value.files)
            result.rows_read += value.rows_read
            result.rows_written += value.rows_written
            if result.preview is None:
                result.preview = value.preview
    return result


def prepare_verified_parallel(table: str, lake: Path, out: Path) -> Callable[[], int]:
    """`prepare_verified` with the prototype in place of `rebuild._rebuild_files`."""
    rebuild._rebuild_files = rebuild_files_in_parallel
    return prepare_verified(table, lake, out)


def hand_write(store: LakeStore, table: str, value_folder: str, gold: pl.DataFrame) -> list[str]:
    """A value's enriched rows as its Gold value-hour's files; their paths."""
    derived = GOLD[table]
    folder = value_hour_folder(derived.target, value_folder, HOUR)
    written = write_partition(store, folder, gold.drop(derived.partition_column))
    return [file.path for file in written]


def hand_checks(
    store: LakeStore,
    table: str,
    gold: pl.DataFrame,
    trades: int,
    lookups: dict[str, pl.DataFrame],
    written: list[str],
) -> list[CheckOutcome]:
    """The blocking checks of one value's enriched rows `gold`, written as the `written`
    files, called directly."""
    file = written[0] if len(written) == 1 else f"{len(written)} files"
    latest = LATEST[table]
    return [
        sorted_by(gold, SILVER_ORDER, file),
        unique(gold, ["event_id"], file),
        CheckOutcome(gold.height == trades, f"{file}: {gold.height} rows, {trades} trades"),
        within_hour(gold, HOUR, file),
        *(zstd_compressed(pq.read_metadata(Path(store.root) / path), path) for path in written),
        no_look_ahead(gold, [match for match, _ in latest], file),
        *(
            match_is_latest(gold, [lookups[name] for name in names], match, MAX_AGE_NS, file)
            for match, names in latest
        ),
    ]


def prepare_hand(table: str, lake: Path, _: Path) -> Callable[[], int]:
    """Per value, one after the other: read, enrich, write, check; nothing committed (the
    files planned from the catalog untimed, as the rebuild's plan is timed in verified)."""
    store, derived = store_at(lake), GOLD[table]
    fresh_table(tables_of(store), derived)
    planned = planned_inputs(store, table)

    def run() -> int:
        rows = 0
        for value_folder in planned.files:
            source, lookups = read_value(store, table, planned, value_folder)
            trades = source.height
            gold = derived.transform(source, **lookups)
            written = hand_write(store, table, value_folder, gold)
            check_failures(hand_checks(store, table, gold, trades, lookups, written), table)
            rows += gold.height
        return rows

    return run


def sql_list(paths: list[str]) -> str:
    return "[" + ", ".join(f"'{path}'" for path in paths) + "]"


def value_files(lake: Path, table: str) -> dict[str, str]:
    """The committed files the Gold hour reads, as DuckDB lists: the source's (`source`)
    and each lookup's of the source's values, by lookup name."""
    store, derived = store_at(lake), GOLD[table]
    planned = planned_inputs(store, table)
    files = {"source": [path for paths in planned.files.values() for path in paths]}
    for lookup in derived.lookups:
        folders = planned.lookups[lookup.name]
        files[lookup.name] = [
            path
            for value_folder in planned.files
            for path in folders.get(lookup.value_folder(value_folder), [])
        ]
    return {name: sql_list([str(lake / path) for path in paths]) for name, paths in files.items()}


def later_row(left: str, right: str) -> str:
    """DuckDB's ASOF inequality for "`right` at or before `left` in Silver order": times,
    then `event_id`s, with '~' (above every hex id) on the trade's side."""
    return (
        f"{{'ts': {left}.ts_event_ns, 'id': '~'}} >= "
        f"{{'ts': {right}.ts_event_ns, 'id': {right}.event_id}}"
    )


def fresh(column: str, ts: str, alias: str) -> str:
    return f"CASE WHEN ts_event_ns - {ts} <= {MAX_AGE_NS} THEN {column} END AS {alias}"


def stocks_sql(files: dict[str, str]) -> str:
    quotes = f"{files['quotes'][:-1]}, {files['previous_quotes'][1:]}"
    quote_columns = ", ".join(
        fresh(f"q_{name}", "q_ts", name) for name in ("bid_px", "bid_sz", "ask_px", "ask_sz")
    )
    return f"""
        WITH sequence AS (
            SELECT symbol, ts_event_ns, event_id, price, size, exchange, conditions,
                true AS in_hour
            FROM read_parquet({files["source"]}, hive_partitioning = true)
            UNION ALL
            SELECT symbol, ts_event_ns, event_id, price, NULL, NULL, NULL, false
            FROM read_parquet({files["previous_trades"]}, hive_partitioning = true)
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


def options_sql(files: dict[str, str]) -> str:
    greek_files = f"{files['greeks'][:-1]}, {files['previous_greeks'][1:]}"
    quotes = f"{files['quotes'][:-1]}, {files['previous_quotes'][1:]}"
    trade_columns = ", ".join(f'"{name}"' for name in OPTION_TRADE_COLUMNS)  # `right` is SQL
    greek_fields = ("delta", "gamma", "theta", "vega", "implied_vol")
    greek_columns = ", ".join(fresh(f"g_{name}", "g_ts", name) for name in greek_fields)
    return f"""
        WITH trades AS (
            SELECT {trade_columns} FROM read_parquet({files["source"]}, hive_partitioning = true)
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
    """The same enrichment as one DuckDB statement over the committed Silver files (listed
    from the catalog, untimed), written as ZSTD-3 Parquet."""
    import duckdb

    files = value_files(lake, table)
    select = stocks_sql(files) if table == "stocks" else options_sql(files)
    target = out / f"{table}.parquet"
    target.unlink(missing_ok=True)
    copy = f"COPY ({select}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)"

    def run() -> int:
        with duckdb.connect() as connection:
            (rows,) = connection.execute(copy).fetchone()  # type: ignore[misc]
        return rows

    return run


PREPARE = {
    "verified": prepare_verified,
    "verified-parallel": prepare_verified_parallel,
    "hand": prepare_hand,
    "duckdb": prepare_duckdb,
}


class Phases:
    """Seconds spent in wrapped functions, by label (summed over calls and threads)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def wrap(self, owner: object, name: str, label: str) -> None:
        """Time every call of `owner.name` from now on (a module's global the callers look
        up, or a class's method)."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                with self._lock:
                    self.seconds[label] = self.seconds.get(label, 0.0) + (
                        time.perf_counter() - start
                    )

        setattr(owner, name, timed)


NESTED = "  "
"""Labels that start with it are parts of the label above them (not added to the total)."""


def phase_points(table: str, variant: str) -> list[tuple[str, object, str]]:
    """(label, owner, function name) of each timed step of `variant`."""
    transform = "trades_nbbo" if table == "stocks" else "options_enriched"
    this = sys.modules[__name__]
    common = [
        ("read Silver (source + lookups)", LakeStore, "read_parquet"),
        ("transform", asof_tables, transform),
    ]
    if variant == "hand":
        return [
            *common,
            ("write", this, "hand_write"),
            ("checks", this, "hand_checks"),
            (f"{NESTED}of which latest match", this, "match_is_latest"),
        ]
    return [
        ("plan inputs (catalog scans)", rebuild, "hour_inputs"),
        *common,
        ("write", rebuild, "write_partition"),
        ("row checks", rebuild, "_check_written"),
        (f"{NESTED}of which latest match", asof_tables, "match_is_latest"),
        (f"{NESTED}totals (a pool thread, beside the transform)", rebuild, "add_totals"),
        ("preview", rebuild, "_detached"),
        ("hour's files before the commit", rebuild, "hour_paths"),
        ("inputs changed since planned", rebuild, "catalog_inputs_changed"),
        ("commit (replace_hour)", rebuild, "replace_hour"),
        ("check_hour", checking, "check_hour"),
        (f"{NESTED}of which read back", LakeStore, "read_bytes"),
        (f"{NESTED}of which footers", checking, "_stored_footer"),
        (f"{NESTED}of which sha256", checking, "sha256"),
    ]


def child(table: str, variant: str, lake: Path, out: Path, phases: bool) -> None:
    """Run one variant in this process (imports untimed, RSS peak reset after them); print
    its `Run` as JSON (peak RSS over the RSS after imports)."""
    timers = Phases()
    if phases:
        for label, owner, name in phase_points(table, variant):
            timers.wrap(owner, name, label)
    run = PREPARE[variant](table, lake, out)
    start_rss = reset_peak_rss_mb()
    cpu, start = time.process_time(), time.perf_counter()
    rows = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = peak_rss_mb() - start_rss
    output = files_digest(committed_gold(store_at(lake), table)) if variant in PLATFORM else ""
    done = Run(table, variant, seconds, cpu, peak, rows, output, timers.seconds)
    print(json.dumps(asdict(done)))


def spawn(table: str, variant: str, lake: Path, out: Path, phases: bool = False) -> Run:
    command = [sys.executable, __file__, "--table", table, "--variant", variant]
    command += ["--lake", str(lake), "--out", str(out), *(["--phases"] if phases else [])]
    done = subprocess.run(command, capture_output=True, text=True, env=child_env())
    if done.returncode:
        raise SystemExit(f"{table} {variant} failed ({done.returncode}):\n{done.stderr}")
    return Run(**json.loads(done.stdout.strip().splitlines()[-1]))


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over the runs (rows and output must not differ between runs)."""
    if len({(run.rows, run.output) for run in runs}) > 1:
        raise SystemExit(f"{runs[0].table} {runs[0].variant} wrote different outputs: {runs}")
    return Run(
        runs[0].table,
        runs[0].variant,
        statistics.median(run.seconds for run in runs),
        statistics.median(run.cpu_seconds for run in runs),
        statistics.median(run.peak_rss_mb for run in runs),
        runs[0].rows,
        runs[0].output,
    )


def load() -> str:
    return "load average " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def measure(table: str, lake: Path, out: Path, repeat: int, variants: list[str]) -> dict[str, Run]:
    """Median run of each variant; the variants take turns so noise hits them alike."""
    runs: dict[str, list[Run]] = {variant: [] for variant in variants}
    for attempt in range(1, repeat + 1):
        for variant in variants:
            run = spawn(table, variant, lake, out)
            runs[variant].append(run)
            print(
                f"  {table} run {attempt} {variant:<17} {run.seconds:6.2f} s, "
                f"CPU {run.cpu_seconds:6.2f} s, peak RSS {run.peak_rss_mb:6,.0f} MiB, "
                f"{run.rows:,} rows  ({load()})",
                flush=True,
            )
    return {variant: median_run(done) for variant, done in runs.items()}


def read_ours(lake: Path, table: str) -> pl.DataFrame:
    """The Gold hour as committed (the table's current snapshot), the partition column from
    each file's folder."""
    store, derived = store_at(lake), GOLD[table]
    return pl.concat(
        [
            with_partition_value(store.read_parquet(paths), derived.partition_column, folder)
            for folder, paths in committed_gold(store, table).items()
        ]
    )


def differences(table: str, lake: Path, out: Path) -> tuple[int, str | None]:
    """How many trades DuckDB matched with another `event_id` than ours (or are missing from
    one side), and why the rows differ (None when DuckDB's file and ours hold the same)."""
    duck = pl.read_parquet(out / f"{table}.parquet").sort("event_id")
    ours = read_ours(lake, table).select(duck.columns).sort("event_id")
    if ours.height != duck.height or not ours["event_id"].equals(duck["event_id"]):
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
    for name in (name for name in runs if name != "duckdb"):
        ratio = duck.seconds / max(runs[name].seconds, 1e-9)
        cpu_ratio = duck.cpu_seconds / max(runs[name].cpu_seconds, 1e-9)
        goal = ""
        if name in PLATFORM:
            goal = f"  goal >= {GOAL_VS_DUCKDB}x: {'met' if ratio >= GOAL_VS_DUCKDB else 'NOT met'}"
        shown = f"{ratio:5.2f}x{goal}  (CPU s: {cpu_ratio:5.2f}x)"
        print(f"  {name} vs duckdb (duckdb s / ours s): {shown}")
    if "hand" in runs:
        overhead = runs["verified"].seconds / max(runs["hand"].seconds, 1e-9)
        print(f"  verified / hand (the platform's bookkeeping): {overhead:5.2f}x")
    for name in (name for name in PLATFORM if name in runs):
        memory = runs[name].peak_rss_mb / arrow_mb
        ok = "met" if memory <= GOAL_MEMORY_VS_ARROW else "NOT met"
        print(
            f"  {name} peak RSS / Arrow size: {memory:4.2f}x  goal <= {GOAL_MEMORY_VS_ARROW}x: {ok}"
        )
    same_files = len({runs[name].output for name in PLATFORM if name in runs}) == 1
    print(f"  the platform variants committed the same files: {'yes' if same_files else 'NO'}")
    print(f"  trades matched differently by duckdb: {mismatched:,}")
    print(f"  duckdb and ours hold the same rows: {'yes' if why is None else 'NO'}")
    if why is not None:
        print(why)
    return why is None and mismatched == 0 and same_files


def report_phases(table: str, runs: list[Run]) -> None:
    """Where each variant's one timed run spent its time, by step."""
    for run in runs:
        print(f"{table} {run.variant}: {run.seconds:.2f} s, by step (one run, with timers):")
        for label, _, _ in phase_points(table, run.variant):
            seconds = run.phases.get(label, 0.0)
            print(f"  {label:<48} {seconds:6.2f} s  {seconds / run.seconds:6.1%}")
        counted = sum(s for label, s in run.phases.items() if not label.startswith(NESTED))
        print(f"  {'other':<48} {run.seconds - counted:6.2f} s")


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
        choices=OURS,
        default=list(OURS),
        help="ours to run (DuckDB and verified always run)",
    )
    parser.add_argument("--phases", action="store_true", help="time each step of verified, hand")
    parser.add_argument("--table", choices=TABLES, help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args.table, args.variant, args.lake, args.out, args.phases)
        return 0
    if args.scale <= 0 or args.repeat <= 0 or args.symbols <= UNDERLYINGS:
        parser.error(f"--scale and --repeat must be positive, --symbols above {UNDERLYINGS}")
    with tempfile.TemporaryDirectory(prefix="bench-asof-") as tmp:
        lake = (args.lake or Path(tmp) / "lake").absolute()
        out = Path(tmp) / "out"
        lake.mkdir(parents=True, exist_ok=True)
        out.mkdir()
        print(f"input hours in {lake} ({load()}) ...", flush=True)
        inputs, setup_s = prepare_inputs(lake, args.scale, args.symbols)
        print(f"  setup {'reused' if setup_s is None else f'{setup_s:.1f} s'}", flush=True)
        print(
            "  " + ", ".join(f"{name}: {rows:,}" for name, rows in inputs.rows.items()), flush=True
        )
        variants = [
            "duckdb",
            *(name for name in OURS if name in args.variants or name == "verified"),
        ]
        ok = []
        for table in args.tables:
            runs = measure(table, lake, out, args.repeat, variants)
            ok.append(report(table, inputs, runs, *differences(table, lake, out)))
            if args.phases:
                report_phases(
                    table, [spawn(table, name, lake, out, True) for name in ("hand", "verified")]
                )
        print(f"done ({load()})")
        return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
