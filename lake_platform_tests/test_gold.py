"""Gold: flattening, bars against a hand-computed example, byte identity, checks, automation."""

import datetime as dt

import dagster as dg
import fsspec
import polars as pl
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.checking import check_hour
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import GOLD_BARS, GOLD_SIGNALS, SILVER_TABLES
from lake_platform.schemas import BY_NAME
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform.transforms.gold import (
    GOLD_SIGNALS_SCHEMA,
    SIGNALS_ORDER,
    bars_1m,
    flatten_signals,
)
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.bronze_files import (
    HOUR,
    HOUR_NS,
    TRADES,
    bronze_rows,
    trades,
    write_bronze,
)
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.tables_of import committed_file, tables_of

SIGNALS = BY_NAME["levels.signals"]
MINUTE = 60 * 10**9


def signal(ts: int, levels: list[dict], **fields) -> dict:
    return {**SAMPLES["levels.signals"], "ts_event_ns": ts, "levels": levels, **fields}


def test_flattening_with_missing_objects_and_fields():
    full, bare = SAMPLES["levels.signals"]["levels"]
    partial = {
        "level_id": "VWAP",
        "level_kind": "VWAP",
        "level_price": 681.0,
        "tape": {"imbalance": 0.5},
    }
    rows = bronze_rows(
        SIGNALS,
        [
            signal(HOUR_NS + 2, [bare]),
            signal(HOUR_NS + 1, [full, partial]),
            signal(HOUR_NS + 3, []),
        ],
    )
    gold = flatten_signals(pl.concat([rows, rows.head(1)]))
    assert gold.schema == GOLD_SIGNALS_SCHEMA
    assert gold.select("ts_event_ns", "level_index", "level_id").rows() == [
        (HOUR_NS + 1, 0, "PM_HIGH"),
        (HOUR_NS + 1, 1, "VWAP"),
        (HOUR_NS + 2, 0, "STRIKE_680"),
    ]
    first, second, third = gold.iter_rows(named=True)
    assert first["barrier_state"] == "WEAK" and first["tape_sweep_detected"] is True
    assert first["fuel_net_dealer_gamma"] == -4.1e8 and first["runway_quality"] == "CLEAR"
    assert second["tape_imbalance"] == 0.5 and second["tape_buy_vol"] is None
    assert second["barrier_state"] is None and second["direction"] is None
    assert third["barrier_state"] is None and third["spot"] == 681.27
    assert "levels" not in gold.columns and "source" not in gold.columns


def trade(ts: int, price: float, size: int, symbol: str = "SPY", seq: int = 0) -> dict:
    return {
        **SAMPLES["stocks.trades"],
        "ts_event_ns": ts,
        "symbol": symbol,
        "price": price,
        "size": size,
        "seq": seq,
    }


def test_bars_match_a_hand_computed_example():
    start = HOUR_NS + 5 * MINUTE
    rows = bronze_rows(
        TRADES,
        [
            trade(start + 30, 10.0, 100, seq=1),
            trade(start + 10, 12.0, 50, seq=2),
            trade(start + 10, 11.0, 50, seq=3),
            trade(start + 59 * 10**9, 9.0, 200, seq=4),
            trade(start + MINUTE + 5, 20.0, 7, seq=5),
            trade(start + 1, 100.0, 1, symbol="QQQ", seq=6),
        ],
    )
    silver = deduplicate(rows)
    ids = {row["seq"]: row["event_id"] for row in silver.iter_rows(named=True)}
    first_at_10 = 2 if ids[2] < ids[3] else 3
    bars = bars_1m(silver)
    assert bars.select("ts_event_ns", "symbol").rows() == sorted(
        bars.select("ts_event_ns", "symbol").rows(),
        key=lambda r: (
            r[0],
            bars.filter(pl.col("symbol") == r[1], pl.col("ts_event_ns") == r[0])["event_id"][0],
        ),
    )
    spy = bars.filter(pl.col("symbol") == "SPY").sort("ts_event_ns")
    busy, single = spy.iter_rows(named=True)
    assert busy["ts_event_ns"] == start
    assert busy["open"] == {2: 12.0, 3: 11.0}[first_at_10]
    assert (busy["high"], busy["low"], busy["close"]) == (12.0, 9.0, 9.0)
    assert busy["volume"] == 400 and busy["trade_count"] == 4
    assert busy["vwap"] == pytest.approx((1000 + 600 + 550 + 1800) / 400)
    assert single == {
        **single,
        "open": 20.0,
        "high": 20.0,
        "low": 20.0,
        "close": 20.0,
        "volume": 7,
        "vwap": 20.0,
        "trade_count": 1,
    }
    assert bars.schema["volume"] == pl.Int64
    assert bars["event_id"].n_unique() == bars.height == 3


def test_bars_do_not_depend_on_the_order_of_silver_rows():
    """Silver order skips the sort (`_in_time_order`); any other order is sorted first."""
    silver = deduplicate(bronze_rows(TRADES, trades(300)))
    bars = bars_1m(silver)
    assert bars.equals(bars_1m(silver.reverse()))
    assert bars.equals(bars_1m(silver.sample(fraction=1.0, shuffle=True, seed=3)))


def test_bars_of_one_symbol_equal_its_bars_among_several_symbols():
    """A frame of one symbol is grouped by minute alone, one of several by minute and symbol:
    the same bars either way, in time order and with ties in time (broken by `event_id`, also
    when the tied rows come in descending `event_id` order)."""
    tied = [{**row, "ts_event_ns": row["ts_event_ns"] // 10**10 * 10**10} for row in trades(600)]
    for rows in (trades(600), tied):
        silver = deduplicate(bronze_rows(TRADES, rows))
        spy = silver.filter(pl.col("symbol") == "SPY")
        assert bars_1m(spy).equals(bars_1m(silver).filter(pl.col("symbol") == "SPY"))
        assert bars_1m(spy).equals(bars_1m(spy.reverse()))
        ties_reversed = spy.sort("ts_event_ns", "event_id", descending=[False, True])
        assert bars_1m(spy).equals(bars_1m(ties_reversed))


def test_flattening_does_not_depend_on_bronze_order_or_chunks():
    """Bronze read from many files comes in a chunk per file, in arrival order; a null key
    makes the output sorted as `SIGNALS_ORDER` sorts nulls (first)."""
    levels = SAMPLES["levels.signals"]["levels"]
    rows = bronze_rows(SIGNALS, [signal(HOUR_NS + i, levels[: i % 3]) for i in range(40)])
    gold = flatten_signals(rows)
    assert gold.select(SIGNALS_ORDER).equals(gold.select(SIGNALS_ORDER).sort(SIGNALS_ORDER))
    chunked = pl.concat([rows.slice(i, 7) for i in range(0, rows.height, 7)], rechunk=False)
    assert chunked.n_chunks() > 1
    assert gold.equals(flatten_signals(chunked.reverse()))
    row_5 = pl.int_range(pl.len()) == 5
    with_null = flatten_signals(
        rows.with_columns(pl.when(row_5).then(None).otherwise(pl.col("ts_event_ns")).name.keep())
    )
    assert with_null.equals(with_null.sort(SIGNALS_ORDER))
    assert with_null["ts_event_ns"][0] is None


@pytest.fixture
def lake(tmp_path) -> LakeStore:
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(800)), files=3)
    sample_levels = SAMPLES["levels.signals"]["levels"]
    signals = [signal(HOUR_NS + i * 10**9, sample_levels[: 1 + i % 2]) for i in range(60)]
    write_bronze(store, SIGNALS, bronze_rows(SIGNALS, signals), files=4)
    rebuild_hour(tables_of(store), SILVER_TABLES["stocks/trades"], HOUR)
    return store


def gold_bytes(store: LakeStore) -> dict[str, bytes]:
    return {path: store.read_bytes(path) for path in store.list_files("gold")}


def test_gold_is_byte_identical_on_rebuild_and_checks_pass(lake):
    for table in (GOLD_SIGNALS, GOLD_BARS):
        rebuild_hour(tables_of(lake), table, HOUR)
    first = gold_bytes(lake)
    assert len(first) == 3  # signals for SPY, bars for SPY and QQQ
    for table in (GOLD_SIGNALS, GOLD_BARS):
        outcomes = check_hour(tables_of(lake), table, rebuild_hour(tables_of(lake), table, HOUR))
        assert all(outcome.passed for outcome in outcomes.values()), outcomes
    assert gold_bytes(lake) == first


BARS_FILE = "symbol=SPY"
SIGNALS_FILE = "underlying=SPY"
"""The value folders of the crafted files: SPY's hour, its one file in the current snapshot."""

CRAFTED = [
    (GOLD_BARS, BARS_FILE, "ohlc_consistent", lambda f: f.with_columns(high=pl.col("low") - 1)),
    (
        GOLD_BARS,
        BARS_FILE,
        "volume_matches_silver",
        lambda f: f.with_columns(volume=pl.col("volume") + 1),
    ),
    (
        GOLD_BARS,
        BARS_FILE,
        "trade_count_matches_silver",
        lambda f: f.with_columns(trade_count=pl.col("trade_count") * 2),
    ),
    (GOLD_BARS, BARS_FILE, "symbol_ts_event_ns_unique", lambda f: pl.concat([f, f.tail(1)])),
    (GOLD_BARS, BARS_FILE, "sorted_by_ts_event_ns", lambda f: f.reverse()),
    (
        GOLD_BARS,
        BARS_FILE,
        "within_partition_hour",
        lambda f: f.with_columns(pl.col("ts_event_ns") - 3_600 * 10**9),
    ),
    (GOLD_BARS, BARS_FILE, "matches_declared_schema", lambda f: f.drop("vwap")),
    (
        GOLD_SIGNALS,
        SIGNALS_FILE,
        "event_id_level_index_unique",
        lambda f: pl.concat([f, f.tail(1)]),
    ),
    (GOLD_SIGNALS, SIGNALS_FILE, "reconciles_with_bronze", lambda f: f.head(f.height - 1)),
    (GOLD_SIGNALS, SIGNALS_FILE, "sorted_by_ts_event_ns", lambda f: f.reverse()),
]


@pytest.mark.parametrize(
    ("table", "path", "check", "edit"),
    CRAFTED,
    ids=[c[2] + "/" + c[0].target.split("/")[2] for c in CRAFTED],
)
def test_each_gold_check_fails_on_a_crafted_file(lake, table, path, check, edit):
    rebuilt = rebuild_hour(tables_of(lake), table, HOUR)
    path = committed_file(lake, table, HOUR, path)
    lake.write_parquet(edit(lake.read_parquet([path])), path)
    outcome = check_hour(tables_of(lake), table, rebuilt)[check]
    assert not outcome.passed, outcome
    assert path in outcome.message or "gold/" in outcome.message


def test_bars_reconcile_with_the_silver_the_rebuild_read_after_silver_changes(lake):
    """Silver is rebuilt and committed anew between Gold's rebuild and Gold's check."""
    rebuilt = rebuild_hour(tables_of(lake), GOLD_BARS, HOUR)
    later = bronze_rows(TRADES, trades(100, seed=99), first_seq=50_000)
    write_bronze(lake, TRADES, later)
    silver = rebuild_hour(tables_of(lake), SILVER_TABLES["stocks/trades"], HOUR)
    assert silver.rows_written == 900 and set(rebuilt.inputs) == set(silver.inputs)
    outcomes = check_hour(tables_of(lake), GOLD_BARS, rebuilt)
    assert all(outcome.passed for outcome in outcomes.values()), outcomes
    lake.delete(lake.list_files("silver"))
    assert check_hour(tables_of(lake), GOLD_BARS, rebuilt)["volume_matches_silver"].passed
    bars_file = committed_file(lake, GOLD_BARS, HOUR, BARS_FILE)
    lake.write_parquet(
        lake.read_parquet([bars_file]).with_columns(volume=pl.col("volume") + 1), bars_file
    )
    outcome = check_hour(tables_of(lake), GOLD_BARS, rebuilt)["volume_matches_silver"]
    assert not outcome.passed and "input files" in outcome.message, outcome
    assert check_hour(tables_of(lake), GOLD_BARS, rebuilt)["trade_count_matches_silver"].passed


def test_materializing_silver_and_gold_for_an_hour(lake):
    gold = [a for a in GOLD_ASSETS if a.key.path[-1] in ("signals", "bars_1m")]
    assets = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]] + gold
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            assets,
            instance=instance,
            partition_key="2025-12-16-14:00",
            resources={"lake": LakeResource(data_root=lake.root)},
        )
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert {c.asset_key.to_user_string() for c in checks} == {
            "silver/stocks/trades",
            "gold/levels/signals",
            "gold/stocks/bars_1m",
        }
        assert all(c.passed for c in checks)
        bars = result.asset_materializations_for_node(gold[1].node_def.name)[0]
        assert bars.metadata["rows_read"].value == 800
    assert len(lake.list_files("gold")) == 3


def bars_requested_after_silver(tmp_path, stray_row: bool) -> bool:
    """Whether automation requests Gold bars for an hour just materialized in Silver; a stray
    Bronze row from another hour makes Silver's blocking `within_partition_hour` check fail."""
    hour = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).replace(
        minute=0, second=0, microsecond=0
    )
    partition = hour.strftime("%Y-%m-%d-%H:00")
    store = LakeStore(str(tmp_path / f"lake-{stray_row}"), fsspec.filesystem("file"))
    rows = bronze_rows(TRADES, trades(50, hour=hour))
    write_bronze(store, TRADES, rows)
    if stray_row:
        folder = f"bronze/stocks/trades/symbol=SPY/{hour_folder(hour)}"
        stray = rows.head(1).with_columns(pl.col("ts_event_ns") - 7_200 * 10**9)
        store.write_parquet(stray, f"{folder}/part-stray.parquet")
    silver = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]]
    with dg.instance_for_test() as instance:
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
        run = dg.materialize(
            silver,
            instance=instance,
            partition_key=partition,
            resources={"lake": LakeResource(data_root=store.root)},
            raise_on_error=False,
        )
        checks = {c.check_name: c.passed for c in run.get_asset_check_evaluations()}
        assert checks["within_partition_hour"] is not stray_row
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return partition in result.get_requested_partitions(
            dg.AssetKey(["gold", "stocks", "bars_1m"])
        )


def test_a_failing_blocking_check_on_silver_stops_gold_automation(tmp_path):
    assert not bars_requested_after_silver(tmp_path, stray_row=True)
    assert bars_requested_after_silver(tmp_path, stray_row=False)
