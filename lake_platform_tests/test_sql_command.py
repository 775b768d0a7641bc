"""`lake-platform sql`: every table of a real lake as a DuckDB view, exactly its rows.

The lake is `tricky_lake`'s (partition values `../evil`, `0700`, `A/B`, …; Bronze files of
both layouts; Silver and Gold rebuilt and committed by the platform's code). Each Silver/Gold
view must return exactly the rows of a pyiceberg catalog read of its table (every column,
`date` and `hour` included), each Bronze view exactly the rows published. `--as-of` reads an
older snapshot after a rebuild with late Bronze; `--tables` lists the catalog's counts and
snapshots; the output formats carry the same rows; every failure is one line and exit 1. On
S3 (slow) the views read through the lake's own S3 filesystem.
"""

import io
import json
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from lake_platform.cli import main
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.query.output import aligned, cell, chosen_format, write_table
from lake_platform.query.views import create_views, lake_views, referenced_views, view_names
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform.tables.tags import tag_current
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.conftest import settings_env
from lake_platform_tests.servers import S3Server
from lake_platform_tests.tricky_lake import (
    TRICKY,
    Expected,
    catalog_read,
    comparable,
    tricky_lake_on_disk,
    tricky_lake_on_s3,
)

SILVER = SILVER_TABLES[TRADES.table]


def use_lake(monkeypatch: pytest.MonkeyPatch, settings: LakeSettings) -> None:
    """The environment `lake-platform` reads, for `settings`' lake."""
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def tricky(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeSettings, Expected]:
    return tricky_lake_on_disk(tmp_path_factory.mktemp("sql"))


@pytest.fixture(scope="module")
def s3_tricky(s3_server: S3Server) -> tuple[LakeSettings, Expected]:
    return tricky_lake_on_s3(s3_server, "sql")


def assert_views_read_every_table_exactly(settings: LakeSettings, expected: Expected) -> None:
    tables = open_lake_tables(settings)
    connection = duckdb.connect()
    views = lake_views(tables)
    create_views(connection, views, settings)
    assert [view.name for view in views] == view_names()
    assert len(expected) == 17 and len(views) == 17 + len(SQL_GOLD_TABLES)
    for view in views:
        rows = connection.sql(f"select * from {view.name}").pl()
        column = view.partition_column
        assert rows.schema[column] == pl.String
        assert (rows.schema["date"], rows.schema["hour"]) == (pl.Date, pl.Int32)
        assert sorted(set(rows[column])) == sorted(TRICKY)
        if view.tier == "bronze":
            published = expected[view.target][1]
            assert_frame_equal(comparable(rows.select(published.columns)), comparable(published))
            continue
        read = catalog_read(tables, view.target)
        assert rows.columns == read.columns
        assert rows.height == read.height == view.rows
        if view.target in expected:
            assert rows.height == expected[view.target][1].height
        assert_frame_equal(comparable(rows), comparable(read), check_dtypes=False)


def test_every_view_returns_exactly_the_rows_of_its_table(tricky):
    assert_views_read_every_table_exactly(*tricky)


@pytest.mark.slow
def test_every_view_on_s3_returns_exactly_the_rows_of_its_table(s3_tricky):
    assert_views_read_every_table_exactly(*s3_tricky)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["sql", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_query_over_several_tiers_in_a_pipe_prints_csv(tricky, monkeypatch, capsys):
    settings, expected = tricky
    use_lake(monkeypatch, settings)
    code, out, _ = run(
        [
            "select s.symbol, count(*) as trades, min(s.hour) as first_hour, "
            "(select count(*) from bronze.stocks_trades b where b.symbol = s.symbol) as bronze "
            "from silver.stocks_trades s group by all order by all"
        ],
        capsys,
    )
    assert code == 0
    csv = pl.read_csv(io.StringIO(out), schema_overrides={"symbol": pl.String})
    silver, bronze = expected["silver/stocks/trades"][1], expected["bronze/stocks/trades"][1]
    assert csv["symbol"].to_list() == sorted(TRICKY)
    assert csv["trades"].sum() == silver.height
    assert csv["bronze"].sum() == bronze.height
    assert set(csv["first_hour"]) == {9}


def test_formats_and_output_files_carry_the_same_rows(tricky, monkeypatch, capsys, tmp_path):
    settings, _ = tricky
    use_lake(monkeypatch, settings)
    query = "select * from gold.stocks_bars_1m"
    rows = catalog_read(open_lake_tables(settings), "gold/stocks/bars_1m")

    code, out, _ = run([query, "--format", "json"], capsys)
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == rows.height
    assert sorted(line["symbol"] for line in lines) == sorted(rows["symbol"])

    parquet = tmp_path / "bars.parquet"
    assert run([query, "--output", str(parquet)], capsys)[0] == 0
    written = pl.read_parquet(parquet)
    assert_frame_equal(comparable(written), comparable(rows), check_dtypes=False)

    csv = tmp_path / "bars.txt"
    assert run([query, "-o", str(csv), "--format", "csv"], capsys)[0] == 0
    assert pl.read_csv(csv, schema_overrides={"symbol": pl.String}).height == rows.height

    code, out, _ = run([query, "--format", "table", "--limit", "5"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[0] == "ts_event_ns"
    assert len(lines) == 2 + 5 + 1
    assert lines[-1].startswith(f"… {rows.height - 5} more rows ({rows.height} in all")


def test_the_query_from_a_file_and_from_standard_input(tricky, monkeypatch, capsys, tmp_path):
    settings, expected = tricky
    use_lake(monkeypatch, settings)
    query = tmp_path / "count.sql"
    query.write_text("-- every level\nselect count(*) as n from gold.levels_signals;\n")
    assert (
        run(["--file", str(query)], capsys)[1]
        == f"n\n{expected['gold/levels/signals'][1].height}\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("select count(*) as n from silver.futures_mbp10"))
    assert run(["-"], capsys)[1] == f"n\n{expected['silver/futures/mbp10'][1].height}\n"


def test_tables_lists_every_view_with_the_catalogs_rows_and_snapshot(tricky, monkeypatch, capsys):
    settings, expected = tricky
    use_lake(monkeypatch, settings)
    code, out, _ = run(["--tables"], capsys)
    assert code == 0
    listed = pl.read_csv(io.StringIO(out))
    assert listed["view"].to_list() == view_names()
    tables = open_lake_tables(settings)
    for row in listed.iter_rows(named=True):
        target = row["path"]
        table = tables.existing(target)
        if target.startswith("bronze/"):
            assert table is None and row["snapshot_id"] is None
            assert row["rows"] == expected[target][1].height
            continue
        assert table is not None
        assert row["snapshot_id"] == table.current_snapshot().snapshot_id
        assert row["rows"] == catalog_read(tables, target).height > 0


LOCAL_AND_SLOW_S3 = pytest.mark.parametrize(
    "lake_settings", ["local", pytest.param("s3", marks=pytest.mark.slow)], indirect=True
)


@pytest.fixture
def rebuilt(lake_settings: LakeSettings) -> tuple[LakeSettings, LakeTables, int, int, int]:
    """Silver trades of an hour (40 trades, tagged `first-load`), rebuilt after 10 late
    trades: the settings, the lake, the first snapshot, and the rows of each version; on local
    disk, and on S3 (slow)."""
    store = LakeStore.from_settings(lake_settings)
    tables = open_lake_tables(lake_settings, store)
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(40)))
    rebuild_hour(tables, SILVER, HOUR)
    first = tables.table(SILVER).current_snapshot().snapshot_id
    tag_current(tables.table(SILVER), "first-load")
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(10, seed=8), first_seq=1_000))
    rebuild_hour(tables, SILVER, HOUR)
    return lake_settings, tables, first, 40, 50


@LOCAL_AND_SLOW_S3
def test_as_of_reads_the_snapshot_before_a_rebuild(rebuilt, monkeypatch, capsys):
    settings, tables, first, first_rows, now_rows = rebuilt
    use_lake(monkeypatch, settings)
    query = "select * from silver.stocks_trades"
    now = pl.read_csv(io.StringIO(run([query], capsys)[1]))
    assert now.height == now_rows
    old_rows = catalog_read(tables, SILVER.target, first)
    for as_of in (str(first), "first-load"):
        code, out, err = run([query, "--as-of", as_of], capsys)
        assert (code, err) == (0, "")
        old = pl.read_csv(io.StringIO(out), schema_overrides={"symbol": pl.String})
        assert old.height == first_rows
        assert sorted(old["event_id"]) == sorted(old_rows["event_id"])
    bronze = "select count(*) as n from bronze.stocks_trades"
    assert run([bronze, "--as-of", str(first)], capsys)[1] == f"n\n{now_rows}\n"


def one_error_line(code: int, out: str, err: str) -> str:
    assert code == 1
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lake-platform: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["selec 1"], 'syntax error at or near "selec"'),
        (
            ["select * from silver.stock_trades"],
            "stock_trades does not exist; did you mean bronze.stocks_trades or "
            "silver.stocks_trades?",
        ),
        (["select * from silver.stocks_trades", "--as-of", "no-such-tag"], "no tag or branch"),
        (["select * from silver.stocks_trades", "--as-of", "123"], "no snapshot 123"),
        (["select 1", "--as-of", "2025-12-16T10:00:00"], "needs a time zone"),
        (["select * from silver.stocks_trades", "--as-of", "1999-01-01"], "no snapshot yet"),
        (["select 1/0 + 'x'"], "Conversion Error"),
        ([], "give one query"),
        (["select 1", "--file", "x.sql"], "give one query"),
        (["select 1", "--format", "parquet", "--output", "/no/such/dir/x.parquet"], "/no/such"),
    ],
)
def test_failures_are_one_line_and_exit_1(tricky, monkeypatch, capsys, argv, says):
    use_lake(monkeypatch, tricky[0])
    assert says in one_error_line(*run(argv, capsys))


def test_referenced_views_are_the_tier_qualified_names_in_any_quoting():
    sql = (
        'select * from SILVER.stocks_trades join "gold"."stocks_bars_1m" using (symbol), '
        "bronze . levels_signals, silver.nope"
    )
    assert referenced_views(sql) == {
        "silver.stocks_trades",
        "gold.stocks_bars_1m",
        "bronze.levels_signals",
    }


def test_the_table_format_aligns_and_counts():
    connection = duckdb.connect()
    relation = connection.sql(
        "select i, 'v' || i as text, if(i = 2, null, [i]) as items from range(5) t(i)"
    )
    stream = io.StringIO()
    write_table(relation, stream, 3)
    assert stream.getvalue().splitlines() == [
        "i  text  items",
        "-  ----  -----",
        "0  v0    [0]",
        "1  v1    [1]",
        "2  v2    NULL",
        "… 2 more rows (5 in all; --limit N shows N, 0 all)",
    ]
    assert cell("a\nb") == "a\\nb"
    assert cell("x" * 100) == "x" * 39 + "…"
    assert aligned(["n"], [["10"], ["2"]], [True]).splitlines() == [" n", "--", "10", " 2"]
    assert chosen_format(None, None, is_tty=True) == "table"
    assert chosen_format(None, None, is_tty=False) == "csv"
    assert chosen_format(None, "out.PARQUET", is_tty=True) == "parquet"
    assert chosen_format("json", "out.parquet", is_tty=True) == "json"


def test_an_empty_lake_has_every_view_empty_and_typed(tmp_path: Path, monkeypatch, capsys):
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    use_lake(monkeypatch, settings)
    code, out, _ = run(["--tables"], capsys)
    assert code == 0
    listed = pl.read_csv(io.StringIO(out))
    assert listed["rows"].to_list() == [0] * len(view_names())
    connection = duckdb.connect()
    create_views(connection, lake_views(open_lake_tables(settings)), settings)
    types = {row[0]: row[1] for row in connection.sql("describe gold.stocks_bars_1m").fetchall()}
    bronze = {row[0]: row[1] for row in connection.sql("describe bronze.levels_signals").fetchall()}
    assert (types["symbol"], types["date"], types["hour"], types["volume"]) == (
        "VARCHAR",
        "DATE",
        "INTEGER",
        "BIGINT",
    )
    assert bronze["levels"].startswith("STRUCT(level_id VARCHAR")
