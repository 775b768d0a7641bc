"""Silver throughput: one Bronze hour -> deduplicated, sorted ZSTD-3 Silver, against DuckDB.

Builds a Bronze hour of `stocks/trades` for one partition value (`symbol=SPY`) in a lake:
N rows in files of 1,000 rows, ~2% redeliveries (the same event again, received later under
a new `_stream_seq`), rows in arrival order so event times are out of order. Then times, each
in a fresh child process (wall time and peak RSS of that process alone):

* ours: `rebuild_hour` of the Silver table, the code the Silver asset runs (list, read,
  `deduplicate`, `write_partition`: content-named atomic write with fsync, then the hour's
  Iceberg commit, on a fresh table created before the timing);
* ours-files: the same rebuild without its Iceberg commit (files written, nothing committed):
  `ours` against it is the table format's overhead (goal: at most 15% slower);
* duckdb: the original design, one `COPY (... QUALIFY row_number() ... ORDER BY ...)`;
* floor: Polars read of the same files and a ZSTD-3 write of one file, no dedup, no sort.

And the verified hour as users wait for it: `dagster asset materialize` of the Silver asset for
that hour (rebuild and every blocking check, on a temporary SQLite instance), net of the same
command for an empty hour (process start, imports, run bookkeeping: measured in turns too).
Each command's ~10 s of start-up varies by a second or more on a shared machine, more than the
hour's work; so the run's own duration as the instance records it (run start to run success,
steps in the run process: no process start or imports) is netted the same way and reported
too, with its own ratio. Both ratios divide a DuckDB run taken in turn with those runs (the
load of a shared machine drifts between the first measures and these).

Every child runs with the allocator setting a process that imports lake_platform before
Polars has (`lake_platform.ALLOCATOR_CONF`, as in the Dagster run process).

Memory: each child measures its RSS once its imports are done and resets its peak there
(`/proc/self/clear_refs`), so the rebuild's peak RSS *over imports* is its own. It is divided
by the hour's Arrow size: `estimated_size()` of the Bronze frame as `rebuild_hour` reads it
(the table's source columns and the partition column), measured in this process.

`--memory` times only the rebuild, for every `--rows` given (`--rows 1000000 5000000`), the
sizes taking turns, and prints for each its peak RSS over imports against the Arrow size
(goal <= 2.5x) and its time against the smallest size's (goal: linear, at most 1.1x the row
ratio: 5M rows <= 5.5x the 1M time). Several sizes need `--bronze DIR`: each lake is then
`DIR/rows-N`.

Silver and DuckDB must both hold exactly the distinct `event_id`s of Bronze (exit 1 otherwise);
the goals (>= 2x DuckDB, >= 0.8x the floor, verified hour >= 1.5x DuckDB, memory <= 2.5x the
Arrow size) are only reported. MB/s is of the in-memory size of the Bronze frame
(`estimated_size`). `--bronze DIR` keeps the generated lake in DIR and reuses it when it was
built with the same `--rows`/`--file-rows` (its `silver/` is replaced).

    uv run python benchmarks/silver.py [--rows 5000000] [--file-rows 1000] [--repeat 1]
        [--bronze DIR]
    uv run python benchmarks/silver.py --memory --rows 1000000 5000000 --bronze DIR [--repeat 3]
"""

import argparse
import datetime as dt
import json
import math
import os
import resource
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
from typing import TYPE_CHECKING

import polars as pl

from lake_platform import ALLOCATOR_CONF
from lake_platform.schemas import BY_NAME
from lake_platform.schemas.event_id import event_id
from lake_platform.schemas.registry import without_column
from lake_platform.timestamps import HOUR_NS

if TYPE_CHECKING:
    from lake_platform.tables.lake_tables import LakeTables

SCHEMA = BY_NAME["stocks.trades"]
HOUR = dt.datetime(2025, 12, 16, 14, tzinfo=dt.UTC)
HOUR_START_NS = int(HOUR.timestamp()) * 10**9
PARTITION = "symbol=SPY/date=2025-12-16/hour=14"
BRONZE_FOLDER = f"bronze/{SCHEMA.table}/{PARTITION}"
SILVER_FOLDER = f"silver/{SCHEMA.table}/{PARTITION}"
SUBJECT = f"{SCHEMA.subject}.SPY"
MARKER = "bench-silver.json"
VARIANTS = ("ours", "ours-files", "duckdb", "floor")
REBUILDS = ("ours", "ours-files")
DUPLICATE_RATE = 0.02
SAME_TIME_RATE = 0.05
LATE_RATE = 0.005
TRADE_SIZES = (1, 5, 10, 50, 100, 100, 100, 200, 300, 500, 1000)
CONDITIONS_BY_WEIGHT = (
    [[]] * 6 + [[14]] * 5 + [[14, 41]] * 4 + [[12, 14, 37]] * 2 + [[37], [14, 41, 53], [12]]
)
WRITE_THREADS = 4
GOAL_VS_DUCKDB = 2.0
GOAL_VS_FLOOR = 0.8
GOAL_VERIFIED_VS_DUCKDB = 1.5
GOAL_MEMORY_VS_ARROW = 2.5
"""Peak RSS of the rebuild over its imports, at most this many times the hour's Arrow size."""
GOAL_LINEARITY = 1.1
GOAL_ICEBERG_OVERHEAD = 1.15
"""A larger hour's time, at most this many times (its rows / the smallest hour's rows) the
smallest hour's time: 5M rows <= 5.5x the 1M time."""
PARTITION_KEY = HOUR.strftime("%Y-%m-%d-%H:00")
EMPTY_PARTITION_KEY = (HOUR + dt.timedelta(hours=1)).strftime("%Y-%m-%d-%H:00")
"""An hour without Bronze: its run is the fixed cost of a `dagster asset materialize`."""


@dataclass
class Bronze:
    """What setup built (and what the marker file stores)."""

    rows: int
    file_rows: int
    files: int
    distinct: int
    memory_bytes: int
    disk_bytes: int


@dataclass
class Run:
    """One child run: its own wall time and CPU time, rows written, and its RSS: after imports
    (`start_rss_mb`) and the peak from then on (`peak_rss_mb`)."""

    variant: str
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    start_rss_mb: float
    rows: int

    @property
    def peak_over_imports_mb(self) -> float:
        return self.peak_rss_mb - self.start_rss_mb


def uniform(seed: int) -> pl.Expr:
    """A uniform draw in [0, 1) per row: a seeded hash of the row index (numpy-free)."""
    bits = pl.int_range(pl.len(), dtype=pl.UInt64).hash(seed) // 2048
    return bits.cast(pl.Float64) / 2.0**53


def normal(seed: int) -> pl.Expr:
    """A standard normal draw per row (Box-Muller over two uniforms)."""
    radius = (-2.0 * (1.0 - uniform(seed)).log()).sqrt()
    return radius * (2.0 * math.pi * uniform(seed + 1)).cos()


def pick(values: pl.Series, seed: int) -> pl.Expr:
    """A uniformly chosen item of `values` per row."""
    return pl.lit(values).gather((uniform(seed) * len(values)).cast(pl.Int64))


def nulled(column: str, rate: float, seed: int) -> pl.Expr:
    """`column` with about `rate` of its values null."""
    return pl.when(uniform(seed) < rate).then(None).otherwise(pl.col(column)).alias(column)


def unique_events(count: int) -> pl.DataFrame:
    """`count` distinct trades in event-time order, with stored columns except `event_id`.

    A few share the previous trade's timestamp; receive times lag by a log-normal latency
    (median 2 ms), some by seconds (late prints), so arrival order is not event order.
    """
    ts = pl.col("ts_event_ns")
    latency = (math.log(2e6) + normal(3)).exp().cast(pl.Int64)
    late = pl.when(uniform(5) < LATE_RATE).then((1e9 + uniform(6) * 59e9).cast(pl.Int64))
    conditions = pl.Series(CONDITIONS_BY_WEIGHT, dtype=pl.List(pl.Int32))
    return (
        pl.select(row=pl.int_range(count))
        .select(ts_event_ns=HOUR_START_NS + (uniform(1) * HOUR_NS).cast(pl.Int64).sort())
        .with_columns(
            pl.when(uniform(2) < SAME_TIME_RATE).then(ts.shift(1)).otherwise(ts).fill_null(ts)
        )
        .with_columns(
            ts_recv_ns=ts + latency + late.otherwise(0),
            symbol=pl.lit("SPY"),
            price=(681.0 + (normal(7) * 0.01).cum_sum()).round(2),
            size=pick(pl.Series(TRADE_SIZES, dtype=pl.Int32), 9),
            exchange=(1 + uniform(10) * 19).cast(pl.Int16),
            conditions=pick(conditions, 11),
            seq=pl.int_range(pl.len(), dtype=pl.Int64) + 1_000_000,
            source=pl.lit("direct_feed"),
        )
        .with_columns(nulled("exchange", 0.005, 12), nulled("conditions", 0.01, 13))
    )


def bronze_rows(rows: int) -> pl.DataFrame:
    """`rows` Bronze rows in arrival order (~2% redeliveries), with the registry's columns."""
    duplicates = round(rows * DUPLICATE_RATE)
    events = unique_events(rows - duplicates).with_columns(event_id(SCHEMA.stored_schema))
    redelivered = events.sample(duplicates, seed=14).with_columns(
        pl.col("ts_recv_ns") + (1e9 + uniform(15) * 29e9).cast(pl.Int64)
    )
    arrived = pl.concat([events, redelivered]).sort("ts_recv_ns", maintain_order=True)
    return arrived.with_columns(
        _stream_seq=pl.int_range(1, rows + 1, dtype=pl.Int64),
        _subject=pl.lit(SUBJECT),
    ).select([pl.col(name).cast(dtype) for name, dtype in SCHEMA.bronze_file_schema.items()])


def bronze_files(lake: Path) -> list[Path]:
    return sorted((lake / BRONZE_FOLDER).glob("part-*.parquet"))


def write_bronze(lake: Path, frame: pl.DataFrame, file_rows: int) -> None:
    folder = lake / BRONZE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)

    def write(index: int) -> None:
        part = frame.slice(index * file_rows, file_rows)
        path = folder / f"part-{index:06d}.parquet"
        part.write_parquet(path, compression="zstd", compression_level=3)

    count = -(-frame.height // file_rows)
    with ThreadPoolExecutor(WRITE_THREADS) as pool:
        list(pool.map(write, range(count)))


def build_bronze(lake: Path, rows: int, file_rows: int) -> Bronze:
    """Generate and write the Bronze hour; measure it as the variants will load it."""
    frame = bronze_rows(rows)
    write_bronze(lake, frame, file_rows)
    del frame
    files = bronze_files(lake)
    loaded = pl.read_parquet(files)
    if loaded.schema != SCHEMA.bronze_file_schema:
        raise SystemExit(f"Bronze schema {loaded.schema} is not the registry's")
    return Bronze(
        rows=loaded.height,
        file_rows=file_rows,
        files=len(files),
        distinct=loaded["event_id"].n_unique(),
        memory_bytes=int(loaded.estimated_size()),
        disk_bytes=sum(path.stat().st_size for path in files),
    )


def prepare_bronze(lake: Path, rows: int, file_rows: int) -> tuple[Bronze, float | None]:
    """The Bronze hour in `lake`: reused when its marker matches, else built (seconds)."""
    marker = lake / MARKER
    if marker.exists():
        bronze = Bronze(**json.loads(marker.read_text()))
        same = (bronze.rows, bronze.file_rows) == (rows, file_rows)
        if same and len(bronze_files(lake)) == bronze.files:
            return bronze, None
        raise SystemExit(f"{lake} holds another Bronze hour ({bronze}); use another --bronze")
    if (lake / "bronze").exists():
        raise SystemExit(f"{lake}/bronze exists without {MARKER}; use an empty --bronze")
    start = time.perf_counter()
    bronze = build_bronze(lake, rows, file_rows)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(asdict(bronze)))
    return bronze, seconds


def arrow_bytes(lake: Path) -> int:
    """`estimated_size()` of the Bronze hour as `rebuild_hour` reads it: the Silver table's
    source columns, the partition column added from the folder."""
    from lake_platform.derived.declaration import with_partition_value
    from lake_platform.derived.tables import SILVER_TABLES

    table = SILVER_TABLES[SCHEMA.table]
    frame = pl.read_parquet(bronze_files(lake), columns=list(table.source_columns))
    value_folder = BRONZE_FOLDER.split("/")[-3]
    return int(with_partition_value(frame, table.partition_column, value_folder).estimated_size())


def prepare_ours(lake: Path, _: Path) -> Callable[[], int]:
    """What the Silver asset runs for one hour (here: one partition value), committed to a
    fresh Iceberg table (created here, untimed)."""
    from lake_platform.derived.rebuild import rebuild_hour
    from lake_platform.derived.tables import SILVER_TABLES

    table = SILVER_TABLES[SCHEMA.table]
    tables = fresh_tables(lake)
    return lambda: rebuild_hour(tables, table, HOUR).rows_written


def prepare_ours_files(lake: Path, _: Path) -> Callable[[], int]:
    """`prepare_ours` without the Iceberg commit: the hour's inputs found and its files
    written as the rebuild does, nothing committed."""
    from lake_platform.derived.rebuild import _rebuild_files
    from lake_platform.derived.sources import hour_inputs
    from lake_platform.derived.tables import SILVER_TABLES

    table = SILVER_TABLES[SCHEMA.table]
    tables = fresh_tables(lake)

    def run() -> int:
        return _rebuild_files(tables, table, HOUR, hour_inputs(tables, table, HOUR)).rows_written

    return run


def fresh_tables(lake: Path) -> "LakeTables":
    """The lake with its Silver trades table created in a new catalog (`clear_output` removed
    the previous one)."""
    from lake_platform.derived.tables import SILVER_TABLES
    from lake_platform.settings import LakeSettings
    from lake_platform.tables.lake_tables import open_lake_tables

    tables = open_lake_tables(LakeSettings(data_root=str(lake)))
    tables.table(SILVER_TABLES[SCHEMA.table])
    return tables


def prepare_duckdb(lake: Path, out: Path) -> Callable[[], int]:
    """The original design, one SQL statement.

    `hive_partitioning = false`: by default DuckDB would add `symbol`, `date` and `hour`
    columns from the path (the files hold none of them, as the ingest writes them).
    """
    import duckdb

    copy = f"""COPY (
        SELECT * EXCLUDE (_stream_seq, _subject)
        FROM read_parquet('{lake / BRONZE_FOLDER / "*.parquet"}', hive_partitioning = false)
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts_recv_ns) = 1
        ORDER BY ts_event_ns, event_id
    ) TO '{out / "duckdb.parquet"}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 3)"""

    def run() -> int:
        with duckdb.connect() as connection:
            (rows,) = connection.execute(copy).fetchone()  # type: ignore[misc]
        return rows

    return run


def prepare_floor(lake: Path, out: Path) -> Callable[[], int]:
    """Read the same files, drop provenance, write one ZSTD-3 file: no dedup, no sort."""

    def run() -> int:
        frame = pl.read_parquet([str(path) for path in bronze_files(lake)])
        frame = frame.select([name for name in frame.columns if not name.startswith("_")])
        frame.write_parquet(out / "floor.parquet", compression="zstd", compression_level=3)
        return frame.height

    return run


def child(variant: str, lake: Path, out: Path) -> None:
    """Run one variant in this process (imports untimed, RSS peak reset after them); print
    its `Run` as JSON."""
    prepare = {
        "ours": prepare_ours,
        "ours-files": prepare_ours_files,
        "duckdb": prepare_duckdb,
        "floor": prepare_floor,
    }[variant]
    run = prepare(lake, out)
    start_rss = reset_peak_rss_mb()
    cpu, start = time.process_time(), time.perf_counter()
    rows = run()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(json.dumps(asdict(Run(variant, seconds, cpu, peak_rss_mb(), start_rss, rows))))


def proc_status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (`VmRSS`, `VmHWM`) in MiB; None without /proc."""
    status = Path("/proc/self/status")
    if not status.exists():
        return None
    for line in status.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return None


def peak_rss_mb() -> float:
    """Peak resident set size of this process (since `reset_peak_rss_mb`), in MiB.

    `VmHWM` of /proc, not `ru_maxrss`: Linux carries `ru_maxrss` over `execve` from the
    process that forked, so a child would report at least this script's own peak.
    """
    peak = proc_status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if peak is None else peak


def reset_peak_rss_mb() -> float:
    """The RSS now, in MiB, made the process's peak: writing 5 to /proc/self/clear_refs resets
    `VmHWM` to the current RSS, so a later peak is what came after. Without it (not Linux)
    the peak so far."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return peak_rss_mb()
    rss = proc_status_mb("VmRSS")
    return peak_rss_mb() if rss is None else rss


def clear_output(variant: str, lake: Path, out: Path) -> None:
    if variant in REBUILDS:
        shutil.rmtree(lake / "silver", ignore_errors=True)
        shutil.rmtree(lake / "_iceberg", ignore_errors=True)
    else:
        (out / f"{variant}.parquet").unlink(missing_ok=True)


def child_env(**more: str) -> dict[str, str]:
    """This process's environment for a child, with the allocator setting a lake_platform
    process has: this process imported Polars first, which wrote its own default there."""
    return {**os.environ, "_RJEM_MALLOC_CONF": ALLOCATOR_CONF, **more}


def spawn(variant: str, lake: Path, out: Path) -> Run:
    clear_output(variant, lake, out)
    command = [sys.executable, __file__, "--variant", variant, "--bronze", str(lake)]
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, env=child_env()
    )
    if done.returncode:
        raise SystemExit(f"{variant} failed ({done.returncode}):\n{done.stderr}")
    return Run(**json.loads(done.stdout.strip().splitlines()[-1]))


def measure_memory(lakes: dict[int, Path], out: Path, repeat: int) -> dict[int, list[Run]]:
    """The rebuild's runs on each hour (by rows); the hours take turns."""
    runs: dict[int, list[Run]] = {rows: [] for rows in lakes}
    for attempt in range(1, repeat + 1):
        for rows, lake in lakes.items():
            run = spawn("ours", lake, out)
            runs[rows].append(run)
            print(
                f"  run {attempt} {rows:>11,} rows {run.seconds:7.2f} s, CPU "
                f"{run.cpu_seconds:6.2f} s, peak RSS {run.peak_rss_mb:6,.0f} MiB "
                f"({run.start_rss_mb:,.0f} after imports: {run.peak_over_imports_mb:,.0f} over)",
                flush=True,
            )
    return runs


def report_memory(runs: list[Run], arrow: int, bronze: Bronze) -> None:
    """The rebuild's median peak RSS over imports against the hour's Arrow size."""
    over = statistics.median(run.peak_over_imports_mb for run in runs)
    ratio = over * 2**20 / arrow
    print(
        f"{bronze.rows:>11,} rows: Arrow size {arrow / 1e6:,.0f} MB as rebuild_hour reads it "
        f"(every Bronze column: {bronze.memory_bytes / 1e6:,.0f} MB); rebuild peak RSS "
        f"{over:,.0f} MiB over imports = {ratio:4.2f}x the Arrow size  goal <= "
        f"{GOAL_MEMORY_VS_ARROW}x: {verdict(ratio <= GOAL_MEMORY_VS_ARROW)}"
    )


def report_linearity(runs: dict[int, list[Run]]) -> None:
    """Each larger hour's median rebuild time against the smallest hour's."""
    smallest = min(runs)
    base = statistics.median(run.seconds for run in runs[smallest])
    for rows, done in sorted(runs.items()):
        if rows == smallest:
            continue
        seconds = statistics.median(run.seconds for run in done)
        ratio, goal = seconds / base, GOAL_LINEARITY * rows / smallest
        print(
            f"{rows:,} rows vs {smallest:,}: {seconds:.2f} s / {base:.2f} s = {ratio:4.2f}x "
            f"(rows {rows / smallest:g}x)  goal <= {goal:g}x: {verdict(ratio <= goal)}"
        )


def memory_main(args: argparse.Namespace, tmp: Path) -> int:
    """`--memory`: the rebuild alone on each `--rows` hour; memory and linearity reports."""
    root = (args.bronze or tmp).absolute()
    several = len(args.rows) > 1 or args.bronze is None
    lakes = {rows: root / f"rows-{rows}" if several else root for rows in sorted(set(args.rows))}
    out = tmp / "out"
    out.mkdir()
    bronzes, arrows = {}, {}
    for rows, lake in lakes.items():
        lake.mkdir(parents=True, exist_ok=True)
        print(f"bronze hour of {rows:,} rows in {lake} ...", flush=True)
        bronzes[rows], setup_s = prepare_bronze(lake, rows, args.file_rows)
        print(f"  setup {'reused' if setup_s is None else f'{setup_s:.1f} s'}", flush=True)
        arrows[rows] = arrow_bytes(lake)
    runs = measure_memory(lakes, out, args.repeat)
    print()
    for rows, done in runs.items():
        report_memory(done, arrows[rows], bronzes[rows])
    report_linearity(runs)
    return 0


def measure(lake: Path, out: Path, bronze: Bronze, repeat: int) -> tuple[dict[str, Run], list[Run]]:
    """Median run of each variant, and every run of ours; the variants take turns so noise
    hits them alike."""
    runs: dict[str, list[Run]] = {variant: [] for variant in VARIANTS}
    for attempt in range(1, repeat + 1):
        for variant in VARIANTS:
            run = spawn(variant, lake, out)
            runs[variant].append(run)
            print(
                f"  run {attempt} {variant:<7} {run.seconds:7.2f} s "
                f"({mb_per_s(bronze, run.seconds):6.1f} MB/s), CPU {run.cpu_seconds:6.2f} s, "
                f"peak RSS {run.peak_rss_mb:6,.0f} MiB ({run.start_rss_mb:,.0f} before), "
                f"{run.rows:,} rows",
                flush=True,
            )
    return {variant: median_run(done) for variant, done in runs.items()}, runs["ours"]


@dataclass
class Materialized:
    """One `dagster asset materialize`: the command's wall time, the run's recorded duration."""

    seconds: float
    run_seconds: float


def last_run_seconds(home: Path) -> float:
    """Start to end of the newest run of the instance in `home`, as the instance recorded it."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (record,) = instance.get_run_records(limit=1)
    if record.start_time is None or record.end_time is None:
        raise SystemExit(f"run {record.dagster_run.run_id} has no recorded start or end")
    return record.end_time - record.start_time


def dagster_materialize(lake: Path, home: Path, partition: str) -> Materialized:
    """`dagster asset materialize` of the Silver asset for `partition`; every blocking check
    must pass (the command fails otherwise)."""
    if partition == PARTITION_KEY:
        shutil.rmtree(lake / "silver", ignore_errors=True)
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = child_env(DAGSTER_HOME=str(home), DATA_ROOT=str(lake), USE_S3="false")
    command = [
        str(Path(sys.executable).parent / "dagster"),
        *("asset", "materialize", "-m", "lake_platform.definitions"),
        *("--select", f"silver/{SCHEMA.table}", "--partition", partition),
    ]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"dagster asset materialize {partition} failed:\n{done.stderr[-3000:]}")
    return Materialized(seconds, last_run_seconds(home))


def measure_verified(lake: Path, out: Path, repeat: int) -> tuple[Materialized, Materialized, Run]:
    """Medians of the verified hour's runs, of an empty hour's runs and of DuckDB, in turns."""
    hour, empty, duck = [], [], []
    for attempt in range(1, repeat + 1):
        hour.append(dagster_materialize(lake, out / "dagster_home", PARTITION_KEY))
        empty.append(dagster_materialize(lake, out / "dagster_home", EMPTY_PARTITION_KEY))
        duck.append(spawn("duckdb", lake, out))
        print(
            f"  run {attempt} verified hour {hour[-1].seconds:7.2f} s "
            f"(run {hour[-1].run_seconds:5.2f} s), empty hour {empty[-1].seconds:7.2f} s "
            f"(run {empty[-1].run_seconds:5.2f} s), duckdb {duck[-1].seconds:5.2f} s"
        )
    return median_materialized(hour), median_materialized(empty), median_run(duck)


def median_materialized(runs: list[Materialized]) -> Materialized:
    return Materialized(
        statistics.median(run.seconds for run in runs),
        statistics.median(run.run_seconds for run in runs),
    )


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over the runs (rows must not differ between runs)."""
    if len({run.rows for run in runs}) > 1:
        raise SystemExit(f"{runs[0].variant} wrote different row counts: {runs}")
    return Run(
        runs[0].variant,
        statistics.median(run.seconds for run in runs),
        statistics.median(run.cpu_seconds for run in runs),
        statistics.median(run.peak_rss_mb for run in runs),
        statistics.median(run.start_rss_mb for run in runs),
        runs[0].rows,
    )


def mb_per_s(bronze: Bronze, seconds: float) -> float:
    return bronze.memory_bytes / 1e6 / max(seconds, 1e-9)


@dataclass
class Outputs:
    """The Silver and DuckDB files as written."""

    silver_rows: int
    duckdb_rows: int
    identical: bool


def read_outputs(lake: Path, out: Path) -> Outputs:
    """Row counts on disk; whether both hold the same rows in the same order, same schema."""
    silver = pl.read_parquet(sorted(str(path) for path in (lake / SILVER_FOLDER).glob("*.parquet")))
    duck = pl.read_parquet(out / "duckdb.parquet")
    stored = without_column(SCHEMA.stored_schema, SCHEMA.partition_column)
    same = silver.schema == stored and silver.equals(duck)
    return Outputs(silver.height, duck.height, same)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report_verified(duck: Run, hour: Materialized, empty: Materialized) -> None:
    net, run_net = hour.seconds - empty.seconds, hour.run_seconds - empty.run_seconds
    print(
        f"verified hour (dagster asset materialize, rebuild + blocking checks): "
        f"{hour.seconds:.2f} s, empty hour {empty.seconds:.2f} s, net {net:.2f} s; "
        f"as recorded by the instance: run {hour.run_seconds:.2f} s, empty hour's run "
        f"{empty.run_seconds:.2f} s, net {run_net:.2f} s; duckdb in turn {duck.seconds:.2f} s"
    )
    for what, seconds in (("net s", net), ("recorded run net s", run_net)):
        ratio = duck.seconds / max(seconds, 1e-9)
        print(f"verified vs duckdb (duckdb s / {what}): {ratio:5.2f}x  goal >= ", end="")
        print(f"{GOAL_VERIFIED_VS_DUCKDB}x: {verdict(ratio >= GOAL_VERIFIED_VS_DUCKDB)}")


def report(bronze: Bronze, runs: dict[str, Run], outputs: Outputs) -> bool:
    """Print the summary; returns whether both row counts equal the distinct event_ids."""
    ours, duck, floor = runs["ours"], runs["duckdb"], runs["floor"]
    print()
    print(
        f"bronze: {bronze.rows:,} rows in {bronze.files:,} files, {bronze.distinct:,} distinct "
        f"event_id; {bronze.memory_bytes / 1e6:,.0f} MB in memory, "
        f"{bronze.disk_bytes / 1e6:,.0f} MB on disk"
    )
    for name, run in (("ours (Silver)", ours), ("duckdb", duck), ("polars floor", floor)):
        print(
            f"{name:<14} {run.seconds:7.2f} s  {mb_per_s(bronze, run.seconds):7.1f} MB/s  "
            f"CPU {run.cpu_seconds:6.2f} s  peak RSS {run.peak_rss_mb:6,.0f} MiB "
            f"({run.start_rss_mb:,.0f} MiB after imports)"
        )
    vs_duck, vs_floor = duck.seconds / ours.seconds, floor.seconds / ours.seconds
    print(
        f"ours vs duckdb (duckdb s / ours s): {vs_duck:5.2f}x  goal >= {GOAL_VS_DUCKDB}x: ", end=""
    )
    print(verdict(vs_duck >= GOAL_VS_DUCKDB))
    print(
        f"ours vs floor  (floor s / ours s):  {vs_floor:5.2f}x  goal >= {GOAL_VS_FLOOR}x: ", end=""
    )
    print(verdict(vs_floor >= GOAL_VS_FLOOR))
    ok = outputs.silver_rows == outputs.duckdb_rows == bronze.distinct
    print(
        f"rows on disk: silver {outputs.silver_rows:,}, duckdb {outputs.duckdb_rows:,}, "
        f"distinct event_id in bronze {bronze.distinct:,}: {'OK' if ok else 'MISMATCH'}"
    )
    print(f"silver and duckdb files identical (rows, order, schema): {outputs.identical}")
    overhead = ours.seconds / runs["ours-files"].seconds
    print(
        f"iceberg commit overhead (ours s / ours-files s, fresh table): {overhead:5.2f}x  "
        f"goal <= {GOAL_ICEBERG_OVERHEAD}x: {verdict(overhead <= GOAL_ICEBERG_OVERHEAD)}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[5_000_000], help="several only with --memory"
    )
    parser.add_argument("--file-rows", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per variant (median shown)")
    parser.add_argument("--bronze", type=Path, help="lake root to keep and reuse the Bronze hour")
    parser.add_argument(
        "--memory",
        action="store_true",
        help="only the rebuild, for each --rows: peak RSS over imports vs Arrow size, linearity",
    )
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        child(args.variant, args.bronze, args.out)
        return 0
    if min(*args.rows, args.file_rows, args.repeat) <= 0:
        parser.error("--rows, --file-rows and --repeat must be positive")
    if len(args.rows) > 1 and not args.memory:
        parser.error("several --rows need --memory")
    with tempfile.TemporaryDirectory(prefix="bench-silver-") as tmp:
        if args.memory:
            return memory_main(args, Path(tmp))
        (rows,) = args.rows
        lake = (args.bronze or Path(tmp) / "lake").absolute()
        out = Path(tmp) / "out"
        lake.mkdir(parents=True, exist_ok=True)
        out.mkdir()
        print(f"bronze hour in {lake} ...", flush=True)
        bronze, setup_s = prepare_bronze(lake, rows, args.file_rows)
        print(f"  setup {'reused' if setup_s is None else f'{setup_s:.1f} s'}", flush=True)
        arrow = arrow_bytes(lake)
        runs, ours = measure(lake, out, bronze, args.repeat)
        outputs = read_outputs(lake, out)
        hour, empty, duck = measure_verified(lake, out, args.repeat)
        ok = report(bronze, runs, outputs)
        report_memory(ours, arrow, bronze)
        report_verified(duck, hour, empty)
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
