"""One hour's rebuild lists the values of that hour, not every value the table ever had.

The lake is value first (`symbol=…/date=…/hour=…`): finding one hour's files by listing costs
a LIST per value ever seen. With a ledger that names the hour's files, a rebuild and its
checks list only the hour's values; without one (files written before the ledger) they
list everything, and both give the same bytes.
"""

import datetime as dt
import shutil
import time
from pathlib import Path

import polars as pl
from fsspec.implementations.local import LocalFileSystem

from lake_platform.derived.checking import check_hour
from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id, write_entry
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import folder_partition_value, hour_folder
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import committed_files, tables_of

SILVER = SILVER_TABLES["stocks/trades"]
HOUR_S = 3_600
HOUR_VALUES = ("SPY", "QQQ", "A[1]")


class CountingFileSystem(LocalFileSystem):
    """The local filesystem, counting its directory listings (`find` lists through `ls`)."""

    cachable = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.listings = 0

    def ls(self, path, detail=False, **kwargs):
        self.listings += 1
        return super().ls(path, detail=detail, **kwargs)


def recent_hour() -> dt.datetime:
    """Two hours before the current one: its entries are in the past, its ledger recent."""
    now = int(time.time()) // HOUR_S * HOUR_S
    return dt.datetime.fromtimestamp(now - 2 * HOUR_S, tz=dt.UTC)


def entry(committed: dt.datetime, files: tuple[CommittedFile, ...]) -> LedgerEntry:
    committed_ns = int(committed.timestamp() * 10**9)
    return LedgerEntry(new_entry_id(committed_ns), committed_ns, "test:host:1", True, files, ())


def committed(path: str, value: str, hour: dt.datetime) -> CommittedFile:
    hour_ns = int(hour.timestamp()) * 10**9
    return CommittedFile(path, TRADES.table, TRADES.stream, 1, 1, 1, 1, value, hour_ns)


def lake_with_history(root: Path, historic: int, hour: dt.datetime) -> LakeStore:
    """`historic` values with Bronze and Silver in a day-old hour; the three values of `hour`
    in Bronze, named by a ledger entry (but one file the ledger never heard of); a ledger that
    started before the hour."""
    store = LakeStore(str(root), CountingFileSystem())
    old = hour - dt.timedelta(days=1)
    symbols = tuple(f"H{index:05d}" for index in range(historic))
    old_rows = bronze_rows(TRADES, trades(historic, symbols=symbols, hour=old))
    write_bronze(store, TRADES, old_rows)
    for symbol in symbols:
        silver = f"silver/stocks/trades/symbol={symbol}/{hour_folder(old)}/part-00000.parquet"
        store.write_parquet(pl.DataFrame({"x": [1]}), silver)
    written = write_bronze(store, TRADES, bronze_rows(TRADES, trades(90, HOUR_VALUES, hour=hour)))
    orphan = bronze_rows(TRADES, trades(9, ("SPY",), seed=3, hour=hour), first_seq=500)
    write_bronze(store, TRADES, orphan)  # files of a commit that died before its entry
    files = tuple(
        committed(path, folder_partition_value(path.split("/")[3]), hour) for path in written
    )
    write_entry(store, entry(hour - dt.timedelta(hours=3), ()))
    write_entry(store, entry(hour + dt.timedelta(minutes=10), files))
    return store


def rebuilt(
    store: LakeStore, hour: dt.datetime, table: DerivedTable = SILVER
) -> tuple[int, dict[str, bytes]]:
    """The listings of one hour's rebuild and checks, and the files it wrote."""
    store.fs.listings = 0
    checks = check_hour(tables_of(store), table, rebuild_hour(tables_of(store), table, hour))
    listings = store.fs.listings
    assert all(outcome.passed for outcome in checks.values()), checks
    written = [path for paths in committed_files(store, table, hour).values() for path in paths]
    return listings, {path: store.read_bytes(path) for path in written}


def test_one_hours_rebuild_lists_its_values_not_every_value_ever_seen(tmp_path):
    hour = recent_hour()
    few = rebuilt(lake_with_history(tmp_path / "few", 10, hour), hour)
    many = rebuilt(lake_with_history(tmp_path / "many", 400, hour), hour)
    assert many[0] == few[0] < 40, f"{few[0]} listings with 10 values, {many[0]} with 400"
    assert len(many[1]) == len(HOUR_VALUES)


def test_rebuilds_planned_from_the_ledger_write_the_bytes_of_a_full_listing(tmp_path):
    """Silver, and Gold bars from that Silver (its values are its Bronze table's)."""
    hour = recent_hour()
    store = lake_with_history(tmp_path / "lake", 30, hour)
    _, planned = rebuilt(store, hour)
    _, planned_bars = rebuilt(store, hour, GOLD_BARS)
    shutil.rmtree(tmp_path / "lake/_ledger")  # now as for files written before the ledger
    store.delete([*planned, *planned_bars])
    listings, listed = rebuilt(store, hour)
    assert listings > 30  # every value's hour listed: the fallback
    assert listed == planned
    assert rebuilt(store, hour, GOLD_BARS)[1] == planned_bars
    assert len(planned_bars) == len(HOUR_VALUES)
    spy = [path for path in planned if "symbol=SPY" in path]
    assert store.read_parquet(spy).height == 30 + 9  # the orphan file's rows too
