"""gold/stocks/daily_summary, a Gold table written in SQL: its rows against Polars, byte
identity, each check failing on a crafted file, a backfilled day through Dagster and the
automation that re-runs a day when one of its hours changes, and a second SQL table declared
from a `.sql` file alone."""

import datetime as dt
from pathlib import Path

import dagster as dg
import duckdb
import fsspec
import polars as pl
import pytest
from pyiceberg.expressions import EqualTo

from lake_platform.definitions import defs
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.gold.sql_assets import (
    SQL_DUCKDB_RESOURCE,
    SQL_GOLD_ASSETS,
    build_sql_gold_asset,
    sql_gold_duckdb,
)
from lake_platform.defs.keys import derived_key
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.sql_rebuild import check_day, rebuild_day
from lake_platform.derived.sql_tables import (
    DAY_NS,
    EVENT_ID_MACRO,
    SQL_GOLD_TABLES,
    sql_gold_table,
)
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.schemas.event_id import event_id
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform.transforms.gold import BAR_KEY_SCHEMA
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import committed_file, tables_of

SUMMARY = SQL_GOLD_TABLES[0]
SUMMARY_ASSET = next(a for a in SQL_GOLD_ASSETS if a.key == derived_key(SUMMARY.target))
SILVER = next(a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"])
BARS = next(a for a in GOLD_ASSETS if a.key == derived_key(GOLD_BARS.target))
TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
DAY, NEXT_DAY = TODAY - dt.timedelta(days=2), TODAY - dt.timedelta(days=1)
"""Two past days within the automation's look-back: three hours of trades on the first, one
on the second."""
HOURS = [DAY.replace(hour=9), DAY.replace(hour=10), DAY.replace(hour=14), NEXT_DAY.replace(hour=3)]


def key(moment: dt.datetime, daily: bool = False) -> str:
    return moment.strftime("%Y-%m-%d" if daily else "%Y-%m-%d-%H:00")


@pytest.fixture
def store(tmp_path: Path) -> LakeStore:
    """A local lake with Bronze trades of SPY and QQQ in `HOURS`."""
    lake = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    for seed, hour in enumerate(HOURS):
        rows = bronze_rows(TRADES, trades(150, hour=hour, seed=seed), first_seq=1000 * seed)
        write_bronze(lake, TRADES, rows)
    return lake


@pytest.fixture
def bars(store: LakeStore) -> LakeStore:
    """The lake with Silver trades and Gold bars of every hour committed (plain Python)."""
    for hour in HOURS:
        rebuild_hour(tables_of(store), SILVER_TABLES["stocks/trades"], hour)
        rebuild_hour(tables_of(store), GOLD_BARS, hour)
    return store


def stored_day(store: LakeStore, table: str, day: dt.datetime) -> pl.DataFrame:
    """The day's rows of a table read through the catalog (the partition column from the
    Iceberg partition), sorted by symbol and time."""
    iceberg = tables_of(store).catalog.load_table(table)
    scan = iceberg.scan(row_filter=EqualTo("date", day.date().isoformat()))
    return pl.from_arrow(scan.to_arrow()).drop("date", "hour").sort("symbol", "ts_event_ns")


def polars_summary(bars: pl.DataFrame, day: dt.datetime) -> pl.DataFrame:
    """The day's summary per symbol, computed with Polars from the day's bars."""
    start = int(day.timestamp()) * 10**9
    return (
        bars.sort("ts_event_ns")
        .group_by("symbol")
        .agg(
            pl.col("open").first(),
            pl.col("high").max(),
            pl.col("low").min(),
            pl.col("close").last(),
            pl.col("volume").sum(),
            (pl.col("vwap") * pl.col("volume")).sum().alias("notional"),
            pl.col("trade_count").sum(),
            pl.len().cast(pl.Int64).alias("minutes_with_trades"),
        )
        .with_columns(pl.lit(start, dtype=pl.Int64).alias("ts_event_ns"))
        .with_columns(event_id(BAR_KEY_SCHEMA), vwap=pl.col("notional") / pl.col("volume"))
        .select(SUMMARY.schema.names())
        .sort("symbol")
    )


def assert_summary_of_bars(store: LakeStore, day: dt.datetime) -> pl.DataFrame:
    stored = stored_day(store, "gold.stocks_daily_summary", day)
    expected = polars_summary(stored_day(store, "gold.stocks_bars_1m", day), day)
    assert stored.schema == SUMMARY.schema
    assert stored.drop("vwap").equals(expected.drop("vwap"))
    assert stored["vwap"].to_list() == pytest.approx(expected["vwap"].to_list(), rel=1e-12)
    return stored


def test_lake_event_id_macro_is_the_event_id_of_bars():
    keys = pl.DataFrame(
        {
            "ts_event_ns": [0, -5, int(DAY.timestamp()) * 10**9, 7, None],
            "symbol": ["SPY", "é|x", "BRK/B", "", "0700"],
        },
        schema=BAR_KEY_SCHEMA,
    )
    with duckdb.connect(":memory:") as connection:
        connection.execute(EVENT_ID_MACRO)
        connection.register("keys", keys.to_arrow())
        ours = connection.sql("select lake_event_id(ts_event_ns, symbol) as id from keys").pl()
    assert ours["id"].to_list() == keys.select(event_id(BAR_KEY_SCHEMA))["event_id"].to_list()


def test_rows_equal_a_polars_computation_and_the_day_lives_in_hour_00(bars):
    result = rebuild_day(tables_of(bars), SUMMARY, DAY)
    assert (result.rows_written, len(result.files)) == (2, 2)
    assert all(f"/date={DAY:%Y-%m-%d}/hour=00/part-00000-" in file.path for file in result.files)
    stored = assert_summary_of_bars(bars, DAY)
    assert stored["symbol"].to_list() == ["QQQ", "SPY"]
    assert stored["trade_count"].sum() == 3 * 150, "the next day's trades are not in the day"
    outcomes = check_day(tables_of(bars), SUMMARY, result)
    assert set(outcomes) == set(SUMMARY.check_names)
    assert all(outcome.passed for outcome in outcomes.values()), outcomes


def test_same_bars_give_the_same_bytes_and_no_new_snapshot(bars):
    first = rebuild_day(tables_of(bars), SUMMARY, DAY)
    written = {file.path: bars.read_bytes(file.path) for file in first.files}
    again = rebuild_day(tables_of(bars), SUMMARY, DAY)
    assert again.commit is not None and again.commit.snapshot_id is None
    assert again.snapshot_id == first.snapshot_id
    assert {file.path: bars.read_bytes(file.path) for file in again.files} == written
    day_bars = stored_day(bars, "gold.stocks_bars_1m", DAY)
    shuffled = day_bars.sample(fraction=1.0, shuffle=True, seed=5)
    assert SUMMARY.query(shuffled).equals(SUMMARY.query(day_bars))


CRAFTED = {
    "sorted_by_ts_event_ns": lambda f: pl.concat(
        [f.with_columns(pl.col("ts_event_ns") + 2), f.with_columns(pl.col("ts_event_ns") + 1)]
    ),
    "symbol_day_unique": lambda f: pl.concat([f, f.with_columns(pl.col("ts_event_ns") + 1)]),
    "within_partition_day": lambda f: f.with_columns(pl.col("ts_event_ns") + DAY_NS),
    "matches_declared_schema": lambda f: f.drop("minutes_with_trades"),
    "volume_matches_bars": lambda f: f.with_columns(pl.col("volume") + 1),
}


@pytest.mark.parametrize("check", [*CRAFTED, "zstd_compressed"])
def test_each_check_fails_on_a_crafted_file(bars, check):
    rebuilt = rebuild_day(tables_of(bars), SUMMARY, DAY)
    path = committed_file(bars, SUMMARY, DAY, "symbol=SPY")
    frame = bars.read_parquet([path])
    if check == "zstd_compressed":
        frame.write_parquet(bars.full_path(path), compression="snappy")
    else:
        bars.write_parquet(CRAFTED[check](frame), path)
    outcomes = check_day(tables_of(bars), SUMMARY, rebuilt)
    assert not outcomes[check].passed, outcomes[check]
    assert "symbol=SPY" in outcomes[check].message


def evaluate(cursor: object | None = None):
    return dg.evaluate_automation_conditions(
        defs=defs, instance=dg.DagsterInstance.get(), cursor=cursor
    )


def materialize(
    assets: list, lake: LakeResource, expect_success: bool = True, **options
) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        assets,
        instance=dg.DagsterInstance.get(),
        resources={"lake": lake, SQL_DUCKDB_RESOURCE: sql_gold_duckdb()},
        raise_on_error=expect_success,
        **options,
    )
    assert result.success is expect_success
    return result


def test_a_backfilled_day_materializes_and_reruns_when_one_of_its_hours_changes(store):
    lake = LakeResource(data_root=store.root)
    days = {key(DAY, daily=True), key(NEXT_DAY, daily=True)}
    with dg.instance_for_test():
        first = evaluate()
        for hour in HOURS:
            materialize([SILVER, BARS], lake, partition_key=key(hour))
        second = evaluate(first.cursor)
        assert second.get_requested_partitions(SUMMARY_ASSET.key) == days

        backfill = materialize(
            [SUMMARY_ASSET],
            lake,
            tags={
                "dagster/asset_partition_range_start": key(DAY, daily=True),
                "dagster/asset_partition_range_end": key(NEXT_DAY, daily=True),
            },
        )
        checks = backfill.get_asset_check_evaluations()
        assert {(c.partition, c.check_name) for c in checks} == {
            (day, name) for day in days for name in SUMMARY.check_names
        }
        assert all(c.passed for c in checks), [c.description for c in checks if not c.passed]
        assert_summary_of_bars(store, DAY)
        assert_summary_of_bars(store, NEXT_DAY)
        third = evaluate(second.cursor)
        assert not third.get_requested_partitions(SUMMARY_ASSET.key)

        late = bronze_rows(TRADES, trades(40, hour=HOURS[1], seed=99), first_seq=90_000)
        write_bronze(store, TRADES, late)
        materialize([SILVER, BARS], lake, partition_key=key(HOURS[1]))
        fourth = evaluate(third.cursor)
        assert fourth.get_requested_partitions(SUMMARY_ASSET.key) == {key(DAY, daily=True)}

        rerun = materialize([SUMMARY_ASSET], lake, partition_key=key(DAY, daily=True))
        stored = assert_summary_of_bars(store, DAY)
        assert stored["trade_count"].sum() == 3 * 150 + 40
        assert all(c.passed for c in rerun.get_asset_check_evaluations())
        fifth = evaluate(fourth.cursor)
        assert not fifth.get_requested_partitions(SUMMARY_ASSET.key)

        same = materialize([SUMMARY_ASSET], lake, partition_key=key(DAY, daily=True))
        (event,) = same.asset_materializations_for_node(SUMMARY_ASSET.node_def.name)
        assert event.metadata["iceberg_snapshot_committed"].value is False
        assert event.metadata["day_written_rows"].value == 2


RANGE_SQL = """-- The day's price range per symbol, from its one-minute bars.
--
-- ts_event_ns: Start of the UTC day, ns since the Unix epoch.
-- event_id: Identity of the row: hash of (ts_event_ns, symbol).
-- price_range: Highest minus lowest trade price of the day.
select
    min(ts_event_ns) // 86400000000000 * 86400000000000 as ts_event_ns,
    max(high) - min(low) as price_range,
    lake_event_id(min(ts_event_ns) // 86400000000000 * 86400000000000, symbol) as event_id,
    symbol
from bars
group by symbol
order by ts_event_ns, event_id
"""


def test_a_sql_file_and_one_declaration_make_another_daily_table(bars, tmp_path):
    query = tmp_path / "daily_range.sql"
    query.write_text(RANGE_SQL, encoding="utf-8")
    table = sql_gold_table("gold/stocks/daily_range", query, source=GOLD_BARS.target, view="bars")
    assert table.schema.names() == ["ts_event_ns", "price_range", "event_id", "symbol"]
    asset = build_sql_gold_asset(table)
    with dg.instance_for_test():
        result = materialize(
            [asset], LakeResource(data_root=bars.root), partition_key=key(DAY, daily=True)
        )
    assert all(c.passed for c in result.get_asset_check_evaluations())
    stored = stored_day(bars, "gold.stocks_daily_range", DAY)
    day_bars = stored_day(bars, "gold.stocks_bars_1m", DAY)
    expected = day_bars.group_by("symbol").agg(pl.col("high").max() - pl.col("low").min())
    assert stored["price_range"].to_list() == expected.sort("symbol")["high"].to_list()


def test_a_query_without_the_partition_column_or_a_described_column_is_refused(tmp_path):
    without_symbol = tmp_path / "no_symbol.sql"
    without_symbol.write_text("-- Bad.\nselect 0::bigint as ts_event_ns, 'x' as event_id\n")
    with pytest.raises(ValueError, match="no \\['symbol'\\] column"):
        sql_gold_table("gold/stocks/bad", without_symbol, source=GOLD_BARS.target, view="bars")
    described = tmp_path / "described.sql"
    described.write_text(RANGE_SQL.replace("-- price_range:", "-- spread:"))
    with pytest.raises(ValueError, match="describes \\['spread'\\]"):
        sql_gold_table("gold/stocks/bad", described, source=GOLD_BARS.target, view="bars")


def test_a_day_waits_while_a_materialized_hour_of_it_fails_a_blocking_check(store):
    """Hours never materialized (a night) do not hold a day back; one whose bars failed a
    blocking check does, until it is rebuilt and passes."""
    lake = LakeResource(data_root=store.root)
    bad_hour = HOURS[1]
    folder = f"bronze/stocks/trades/symbol=SPY/{hour_folder(bad_hour)}"
    rows = store.read_parquet(store.list_files(folder))
    stray = rows.head(1).with_columns(pl.col("ts_event_ns") - 7_200 * 10**9)
    store.write_parquet(stray, f"{folder}/part-stray.parquet")
    with dg.instance_for_test():
        first = evaluate()
        for hour in HOURS[:3]:
            good = hour != bad_hour
            materialize([SILVER, BARS], lake, expect_success=good, partition_key=key(hour))
        bars = materialize([BARS], lake, expect_success=False, partition_key=key(bad_hour))
        (failed,) = [c for c in bars.get_asset_check_evaluations() if not c.passed]
        assert failed.check_name == "within_partition_hour"
        assert key(DAY, daily=True) not in evaluate(first.cursor).get_requested_partitions(
            SUMMARY_ASSET.key
        )
        Path(store.full_path(f"{folder}/part-stray.parquet")).unlink()  # Bronze is append-only
        materialize([SILVER, BARS], lake, partition_key=key(bad_hour))
        assert evaluate(first.cursor).get_requested_partitions(SUMMARY_ASSET.key) == {
            key(DAY, daily=True)
        }
