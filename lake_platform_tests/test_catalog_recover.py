"""Recovering a lost catalog from Bronze (`derived/recovery.py`, `lake-platform catalog
recover`): with `catalog.db` deleted, the same hours hold the same files (names and bytes)
and the same rows, no new file appears, and the retained older version of a rebuilt hour is
not taken for the current one."""

import datetime as dt
import hashlib
import os
from pathlib import Path

import polars as pl
import pytest

from lake_platform.cli import main
from lake_platform.derived.asof_tables import GOLD_TRADES_NBBO
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.recovery import RUN_ID, bronze_hours, in_dependency_order, recover
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.derived.sql_rebuild import rebuild_day
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.catalog import SQLITE_FILE
from lake_platform.tables.hours import RUN_ID_PROPERTY, hour_paths, hour_predicate
from lake_platform.tables.identifiers import ICEBERG_FOLDER
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze

SILVER = SILVER_TABLES["stocks/trades"]
NEXT = HOUR + dt.timedelta(hours=1)
HOURS = (HOUR, NEXT)
BUILT = (SILVER, GOLD_BARS, GOLD_TRADES_NBBO)

Snapshot = dict[tuple[str, dt.datetime], dict[str, list[str]]]

(DAILY_SUMMARY,) = SQL_GOLD_TABLES


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeSettings:
    """A local lake (`DATA_ROOT` too, for the CLI) with Bronze trades in two hours of a day,
    Silver and Gold bars rebuilt for both, the first hour twice (a late Bronze file: its
    older version's files stay in the folder), and the day's daily summary."""
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    lake = LakeSettings(data_root=str(tmp_path / "lake"))
    store = LakeStore.from_settings(lake)
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(300)))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(200, seed=9, hour=NEXT), 1_000))
    tables = open_lake_tables(lake, store)
    for hour in HOURS:
        for table in BUILT:
            rebuild_hour(tables, table, hour, "run-1")
    late = trades(50, seed=11, symbols=("SPY", "IWM"))
    write_bronze(store, TRADES, bronze_rows(TRADES, late, 5_000))
    for table in BUILT:
        rebuild_hour(tables, table, HOUR, "run-2")
    rebuild_day(tables, DAILY_SUMMARY, HOUR.replace(hour=0), run_id="run-2")
    return lake


def committed(tables: LakeTables) -> Snapshot:
    """Each built table-hour's files in its table's current snapshot, by value folder."""
    return {
        (table.target, hour): hour_paths(tables.table(table), hour)
        for table in BUILT
        for hour in HOURS
    }


def rows(tables: LakeTables) -> dict[tuple[str, dt.datetime], pl.DataFrame]:
    """Each built table-hour's rows through the catalog, sorted."""
    found = {}
    for table in BUILT:
        iceberg = tables.table(table)
        for hour in HOURS:
            read = pl.from_arrow(iceberg.scan(row_filter=hour_predicate(hour)).to_arrow())
            found[table.target, hour] = read.sort(read.columns)
    return found


def digests(store: LakeStore, snapshot: Snapshot) -> dict[str, str]:
    return {
        path: hashlib.sha256(store.read_bytes(path)).hexdigest()
        for files in snapshot.values()
        for paths in files.values()
        for path in paths
    }


def lake_files(store: LakeStore) -> set[str]:
    return {path for table in BUILT for path in store.list_files(table.target)}


def lose_the_catalog(settings: LakeSettings) -> None:
    os.remove(Path(settings.data_root, ICEBERG_FOLDER, SQLITE_FILE))


def test_recovering_a_deleted_catalog_registers_the_same_files_and_rows(
    settings: LakeSettings,
) -> None:
    store = LakeStore.from_settings(settings)
    before = open_lake_tables(settings, store)
    files, read = committed(before), rows(before)
    assert all(files.values()) and all(frame.height for frame in read.values())
    stored, held = digests(store, files), lake_files(store)
    assert len(held) > len(stored)  # the older version of the first hour is still there
    lose_the_catalog(settings)

    lost = open_lake_tables(settings, store)
    assert all(lost.existing(table.target) is None for table in CATALOG_TABLES)
    recovery = recover(lost, {HOUR.date()})

    after = open_lake_tables(settings, store)
    assert committed(after) == files
    assert digests(store, files) == stored
    assert lake_files(store) == held
    recovered = rows(after)
    assert recovered.keys() == read.keys()
    for key, frame in read.items():
        assert recovered[key].equals(frame), key
    assert recovery.dates == (HOUR.date(),)
    by_table = {table.table: table for table in recovery.tables}
    assert [table.table for table in recovery.tables][: len(SILVER_TABLES)] == [
        table.target for table in SILVER_TABLES.values()
    ]
    for table in BUILT:
        outcome = by_table[table.target]
        assert (outcome.hours, outcome.commits) == (2, 2)
        assert outcome.files == sum(len(p) for h in HOURS for p in files[table.target, h].values())
        assert outcome.rows == sum(read[table.target, hour].height for hour in HOURS)
        current = after.table(table).current_snapshot()
        assert current.summary.additional_properties[RUN_ID_PROPERTY] == RUN_ID
    assert all(after.existing(table.target) is not None for table in CATALOG_TABLES)


def test_recovering_a_catalog_that_was_not_lost_commits_nothing(settings: LakeSettings) -> None:
    store = LakeStore.from_settings(settings)
    tables = open_lake_tables(settings, store)
    snapshots = {
        table.target: tables.table(table).current_snapshot().snapshot_id for table in BUILT
    }
    recovery = recover(tables)
    assert {table.table: table.commits for table in recovery.tables} == dict.fromkeys(
        (table.target for table in CATALOG_TABLES), 0
    )
    assert {
        table.target: tables.table(table).current_snapshot().snapshot_id for table in BUILT
    } == snapshots


def test_bronze_hours_lists_the_hours_of_the_dates_asked(settings: LakeSettings) -> None:
    store = LakeStore.from_settings(settings)
    assert bronze_hours(store, SILVER.source) == list(HOURS)
    assert bronze_hours(store, SILVER.source, {HOUR.date()}) == list(HOURS)
    assert bronze_hours(store, SILVER.source, {HOUR.date() + dt.timedelta(days=1)}) == []
    assert bronze_hours(store, "bronze/levels/signals") == []


def test_the_command_recovers_and_says_what_it_did(settings: LakeSettings, capsys) -> None:
    store = LakeStore.from_settings(settings)
    files = committed(open_lake_tables(settings, store))
    lose_the_catalog(settings)
    assert main(["catalog", "recover"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "silver.stocks_trades: 2 hours rebuilt, 2 committed" in out[0]
    assert f"recovered 1 dates from Bronze ({HOUR.date()} … {HOUR.date()})" in out
    assert committed(open_lake_tables(settings, store)) == files


def test_a_date_without_bronze_is_one_line_and_exit_1(settings: LakeSettings, capsys) -> None:
    assert main(["catalog", "recover", "--date", "2025-12-17"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["lake-platform: error: no Bronze hour on 2025-12-17"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["catalog", "recover", "--date", "2025-13-01"], "not a date (YYYY-MM-DD): '2025-13-01'"),
        (["catalog"], "the following arguments are required: catalog_command"),
    ],
)
def test_bad_arguments_are_one_line(argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_a_catalog_that_cannot_be_opened_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("LAKE_CATALOG_URI", f"sqlite:///{tmp_path}/no/such/folder/catalog.db")
    assert main(["catalog", "recover"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("lake-platform: error: cannot open the Iceberg catalog at sqlite:")
    assert "LAKE_PLATFORM_DEBUG" not in err[0]


def test_every_table_is_recovered_after_every_table_it_reads() -> None:
    """The as-of tables read Silver quotes and greeks beside their source: recovered first."""
    order = [table.target for table in in_dependency_order(CATALOG_TABLES)]
    for table in CATALOG_TABLES:
        for path in (table.source, *(lookup.source for lookup in table.lookups)):
            if path in order:
                assert order.index(path) < order.index(table.target), (path, table.target)
    assert order.index("silver/stocks/quotes") < order.index("gold/stocks/trades_nbbo")
