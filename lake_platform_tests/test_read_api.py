"""`lake_platform.read`: a table of a real lake as a Polars LazyFrame, exactly its rows.

On `tricky_lake`'s lake (partition values `../evil`, `0700`, `A/B`, …; Bronze files of both
layouts; Silver and Gold committed by the platform's code): every Silver/Gold table read
equals a pyiceberg catalog read (every column), every Bronze table the rows published; the
filters (partition values, a time range as datetimes or ISO strings, columns) return exactly
the rows they select, and prune files before reading; `as_of` reads an older snapshot; a lake
path holding `=` still reads Silver exactly. On S3 (slow) through the lake's credentials.
"""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, In, LessThan

import lake_platform
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.query.planning import planned_files
from lake_platform.query.read import to_ns
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.lake_tables import open_lake_tables
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.servers import S3Server
from lake_platform_tests.tricky_lake import (
    HOURS,
    TRICKY,
    Expected,
    catalog_read,
    comparable,
    tricky_lake_on_disk,
    tricky_lake_on_s3,
)

SILVER = SILVER_TABLES[TRADES.table]
VALUES = ["0700", "A/B", "../evil"]


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeSettings, Expected]:
    return tricky_lake_on_disk(tmp_path_factory.mktemp("read"))


@pytest.fixture(scope="module")
def s3_tricky(s3_server: S3Server) -> tuple[LakeSettings, Expected]:
    return tricky_lake_on_s3(s3_server, "read")


def assert_reads_every_table_exactly(settings: LakeSettings, expected: Expected) -> None:
    tables = open_lake_tables(settings)
    every = {table.target: table.partition_column for table in CATALOG_TABLES}
    every |= {target: column for target, (column, _) in expected.items()}
    assert len(every) == len(expected) + len(SQL_GOLD_TABLES)
    for target, column in every.items():
        frame = lake_platform.read(target, settings=settings)
        assert isinstance(frame, pl.LazyFrame)
        rows = frame.collect()
        assert (rows.schema[column], rows.schema["date"], rows.schema["hour"]) == (
            pl.String,
            pl.Date,
            pl.Int32,
        )
        assert sorted(set(rows[column])) == sorted(TRICKY)
        event_time = pl.from_epoch("ts_event_ns", time_unit="ns")
        assert rows.filter(
            (pl.col("date") != event_time.dt.date()) | (pl.col("hour") != event_time.dt.hour())
        ).is_empty()
        if target.startswith("bronze/"):
            published = expected[target][1]
            assert_frame_equal(comparable(rows.select(published.columns)), comparable(published))
            continue
        read = catalog_read(tables, target)
        assert read.height > 0
        assert rows.columns == read.columns
        assert_frame_equal(comparable(rows), comparable(read), check_dtypes=False)


def test_every_table_reads_exactly_as_the_catalog(tricky):
    assert_reads_every_table_exactly(*tricky)


@pytest.mark.slow
def test_every_table_on_s3_reads_exactly_as_the_catalog(s3_tricky):
    assert_reads_every_table_exactly(*s3_tricky)


@pytest.mark.parametrize(
    "target", ["silver/stocks/trades", "silver.options_trades", "bronze/stocks/quotes"]
)
def test_filters_select_exactly_their_rows(tricky, target):
    settings, expected = tricky
    column, published = next(
        (column, rows)
        for folder, (column, rows) in expected.items()
        if target in (folder, table_identifier(folder))
    )
    start, end = dt.datetime(2025, 12, 16, 9, 2, tzinfo=dt.UTC), "2025-12-16T10:02:00+00:00"
    rows = lake_platform.read(
        target,
        start=start,
        end=end,
        symbols=VALUES,
        columns=["ts_event_ns", "event_id"],
        settings=settings,
    ).collect()
    assert rows.columns == ["ts_event_ns", "event_id"]
    wanted = published.filter(
        pl.col(column).is_in(VALUES),
        pl.col("ts_event_ns").is_between(to_ns(start), to_ns(end), closed="left"),
    )
    assert 0 < wanted.height < published.height
    assert_frame_equal(comparable(rows), comparable(wanted.select(rows.columns)))
    one = lake_platform.read(target, symbols="0700", columns=[column], settings=settings)
    assert set(one.collect()[column]) == {"0700"}


def test_planning_prunes_by_value_hour_and_statistics_as_pyiceberg_does(tricky):
    settings, _ = tricky
    table = open_lake_tables(settings).existing(SILVER.target)
    snapshot = table.current_snapshot().snapshot_id
    every = planned_files(table, snapshot)
    assert len(every) == len(TRICKY) * len(HOURS)
    hour_ns = to_ns(HOURS[1])
    pruned = planned_files(
        table, snapshot, values=VALUES, start_ns=hour_ns + 1, end_ns=hour_ns + 90 * 10**9
    )
    expression = And(
        In("symbol", VALUES),
        And(
            GreaterThanOrEqual("ts_event_ns", hour_ns + 1),
            LessThan("ts_event_ns", hour_ns + 90 * 10**9),
        ),
    )
    theirs = sorted(task.file.file_path for task in table.scan(row_filter=expression).plan_files())
    assert [file.path for file in pruned] == theirs
    assert len(pruned) == len(VALUES)
    assert {(file.value, file.hour) for file in pruned} == {(value, 10) for value in VALUES}
    # statistics prune too: the hour's trades start a minute in
    assert planned_files(table, snapshot, start_ns=hour_ns, end_ns=hour_ns + 60 * 10**9) == []
    hour_filter = And(EqualTo("date", "2025-12-16"), EqualTo("hour", 9))
    assert len(list(table.scan(row_filter=hour_filter).plan_files())) == len(TRICKY)


def test_as_of_reads_the_snapshot_before_a_rebuild(tmp_path: Path):
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    store = LakeStore.from_settings(settings)
    tables = open_lake_tables(settings, store)
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(40)))
    rebuild_hour(tables, SILVER, HOUR)
    first = tables.table(SILVER).current_snapshot().snapshot_id
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(10, seed=8), first_seq=1_000))
    rebuild_hour(tables, SILVER, HOUR)
    now = lake_platform.read("silver.stocks_trades", settings=settings).collect()
    old = lake_platform.read("silver.stocks_trades", as_of=str(first), settings=settings)
    assert now.height == 50
    assert_frame_equal(
        comparable(old.collect()),
        comparable(catalog_read(tables, SILVER.target, first)),
        check_dtypes=False,
    )
    assert old.collect().height == 40
    with pytest.raises(ValueError, match="no snapshot 12345"):
        lake_platform.read("silver/stocks/trades", as_of="12345", settings=settings)


def test_a_lake_path_holding_an_equals_sign_reads_silver_exactly(tmp_path: Path):
    settings = LakeSettings(data_root=str(tmp_path / "k=v" / "lake"))
    store = LakeStore.from_settings(settings)
    published = bronze_rows(TRADES, trades(30, symbols=("0700", "A/B")))
    write_bronze(store, TRADES, published)
    tables = open_lake_tables(settings, store)
    rebuild_hour(tables, SILVER, HOUR)
    rows = lake_platform.read("silver/stocks/trades", settings=settings).collect()
    assert_frame_equal(
        comparable(rows), comparable(catalog_read(tables, SILVER.target)), check_dtypes=False
    )
    assert sorted(set(rows["symbol"])) == ["0700", "A/B"]
    with pytest.raises(ValueError, match="holds '='"):
        lake_platform.read("bronze/stocks/trades", settings=settings)


def test_an_empty_table_is_an_empty_typed_frame(tmp_path: Path):
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    targets = ("silver/stocks/trades", "gold/stocks/daily_summary", "bronze/levels/signals")
    for target in targets:
        rows = lake_platform.read(target, settings=settings).collect()
        assert rows.height == 0
        assert rows.columns[-3:] == [rows.columns[-3], "date", "hour"]
        assert rows.schema["date"] == pl.Date


def test_unknown_tables_columns_and_times_are_one_line_errors(tricky):
    settings, _ = tricky
    with pytest.raises(ValueError, match="no table 'silver/stocks/nope'; known: bronze/"):
        lake_platform.read("silver/stocks/nope", settings=settings)
    with pytest.raises(ValueError, match="has no column 'nope'"):
        lake_platform.read("silver/stocks/trades", columns=["price", "nope"], settings=settings)
    with pytest.raises(ValueError, match="not an ISO-8601 time"):
        lake_platform.read("silver/stocks/trades", start="yesterday", settings=settings)
    with pytest.raises(ValueError, match="Bronze has no versions"):
        lake_platform.read("bronze/stocks/trades", as_of="first", settings=settings)


def test_times_are_utc_unless_they_say_otherwise():
    assert to_ns("1970-01-01") == 0
    assert to_ns(dt.date(1970, 1, 2)) == 86_400 * 10**9
    assert to_ns("1970-01-01T01:00:00+01:00") == 0
    assert to_ns(dt.datetime(1970, 1, 1, 0, 0, 1)) == 10**9
    assert to_ns("1970-01-01T00:00:00.000001Z") == 1_000


def test_importing_the_package_stays_cheap_and_read_is_one_attribute_away():
    code = (
        "import sys, lake_platform; "
        "assert not {'polars', 'pyiceberg', 'duckdb'} & set(sys.modules), sys.modules.keys(); "
        "from lake_platform import read; print(read.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "lake_platform.query.read"
