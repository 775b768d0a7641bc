"""Listing cost: the S3 requests of one hour's Silver rebuild (and its checks) in a table that
has seen many partition values, on a real SeaweedFS.

The lake: `--values` historic symbols, each with a Bronze and a Silver object in an hour a
day earlier (empty objects: they are only ever listed, never read), and `--hour-values`
symbols with real Bronze files in the rebuilt hour (two hours ago), written in `--commits`
batches, each named by a ledger entry as the ingest records it. The rebuild of that hour
(`rebuild_hour` then `check_hour` of silver/stocks/trades, through a store of its own, so no
listing is cached) is counted per S3 operation by an aiobotocore event hook. Counts, not
times, are the result (the machine is shared).

    uv run python benchmarks/listing.py [--values 20000] [--hour-values 5] [--commits 12]

To measure another checkout of the code, put it first on the path:
`PYTHONPATH=/path/to/checkout uv run python benchmarks/listing.py`.
"""

import argparse
import collections
import datetime as dt
import secrets
import tempfile
import time
from pathlib import Path

from lake_platform.derived.checking import check_hour
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id, write_entry
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import folder_partition_value, hour_folder
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.servers import S3Server
from lake_platform_tests.tables_of import tables_of

SILVER = SILVER_TABLES["stocks/trades"]
HOUR_S = 3_600
PUT_BATCH = 2_000
"""Empty objects put per call while building the history (s3fs sends them concurrently)."""


def build_history(store: LakeStore, values: int, old: dt.datetime) -> None:
    """One empty Bronze and one empty Silver object per historic value, in hour `old`."""
    names = [
        f"{tier}/stocks/trades/symbol=H{index:05d}/{hour_folder(old)}/part-00000.parquet"
        for index in range(values)
        for tier in ("bronze", "silver")
    ]
    for start in range(0, len(names), PUT_BATCH):
        batch = names[start : start + PUT_BATCH]
        store.fs.pipe({store.full_path(name): b"" for name in batch})


def build_hour(store: LakeStore, hour: dt.datetime, values: int, commits: int) -> int:
    """Bronze files of `values` symbols in `hour`, `commits` batches each named by a ledger
    entry, and a ledger that started three hours before; the rows written."""
    symbols = tuple(f"S{index:03d}" for index in range(values))
    hour_ns = int(hour.timestamp()) * 10**9
    write_entry(store, entry(hour - dt.timedelta(hours=3), ()))
    rows = 0
    for commit in range(commits):
        batch = bronze_rows(
            TRADES, trades(50 * values, symbols, seed=commit, hour=hour), 1 + commit * 10_000
        )
        written = write_bronze(store, TRADES, batch)
        rows += batch.height
        files = tuple(
            CommittedFile(
                path,
                TRADES.table,
                TRADES.stream,
                1,
                1,
                1,
                1,
                folder_partition_value(path.split("/")[3]),
                hour_ns,
            )
            for path in written
        )
        write_entry(store, entry(hour + dt.timedelta(minutes=5 * commit), files))
    return rows


def entry(committed: dt.datetime, files: tuple[CommittedFile, ...]) -> LedgerEntry:
    committed_ns = int(committed.timestamp() * 10**9)
    return LedgerEntry(new_entry_id(committed_ns), committed_ns, "bench:host:1", True, files, ())


def counted_rebuild(settings: LakeSettings, hour: dt.datetime) -> tuple[collections.Counter, int]:
    """S3 requests by operation of one hour's rebuild and checks, and the rows written."""
    store = LakeStore.from_settings(settings)
    store.check_access()  # connects the client (one ListObjects of the bucket, not counted)
    requests: collections.Counter = collections.Counter()

    def count(event_name: str, **_: object) -> None:
        requests[event_name.rsplit(".", 1)[-1]] += 1

    store.fs.s3.meta.events.register("before-call.s3", count)
    result = rebuild_hour(tables_of(store, settings), SILVER, hour)
    outcomes = check_hour(tables_of(store, settings), SILVER, result)
    failed = [name for name, outcome in outcomes.items() if not outcome.passed]
    if failed:
        raise SystemExit(f"checks failed: {failed}")
    return requests, result.rows_written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=20_000, help="historic values")
    parser.add_argument("--hour-values", type=int, default=5, help="values of the hour")
    parser.add_argument("--commits", type=int, default=12, help="ledger entries of the hour")
    args = parser.parse_args()
    now = int(time.time()) // HOUR_S * HOUR_S
    hour = dt.datetime.fromtimestamp(now - 2 * HOUR_S, tz=dt.UTC)
    with tempfile.TemporaryDirectory() as workdir, S3Server.start(Path(workdir)) as server:
        bucket = f"lake-{secrets.token_hex(4)}"
        server.create_bucket(bucket)
        settings = s3_settings(server, bucket)
        builder = LakeStore.from_settings(settings)
        started = time.perf_counter()
        build_history(builder, args.values, hour - dt.timedelta(days=1))
        rows = build_hour(builder, hour, args.hour_values, args.commits)
        print(
            f"lake: {args.values:,} historic values, {args.hour_values} in {hour:%Y-%m-%d %H}:00 "
            f"({rows:,} Bronze rows, {args.commits} ledger entries); "
            f"built in {time.perf_counter() - started:.0f} s"
        )
        started = time.perf_counter()
        requests, written = counted_rebuild(settings, hour)
        seconds = time.perf_counter() - started
    by_operation = ", ".join(f"{name} {count:,}" for name, count in sorted(requests.items()))
    print(f"rebuild + checks of silver/stocks/trades: {written:,} rows written in {seconds:.1f} s")
    print(f"S3 requests: {sum(requests.values()):,} ({by_operation})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
