"""The as-of Gold tables rebuilt from Silver: the issue's edge cases across the hour boundary,
checks that pass on the rebuilt hour and fail on crafted files, byte identity, lookups
pinned, and the previous hour read through the catalog."""

import datetime as dt
import random

import dagster as dg
import fsspec
import polars as pl
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.asof_tables import GOLD_OPTIONS_ENRICHED, GOLD_TRADES_NBBO
from lake_platform.derived.checking import check_hour
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.reverify import verify_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.schemas import BY_NAME
from lake_platform.storage import LakeStore
from lake_platform_tests.bronze_files import HOUR, HOUR_NS, bronze_rows, write_bronze
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.tables_of import committed_file, committed_files, tables_of

SECOND = 10**9
PREVIOUS = HOUR - dt.timedelta(hours=1)
PREVIOUS_NS = HOUR_NS - 3_600 * SECOND
SCHEMAS = {name: BY_NAME[name] for name in SAMPLES if name.split(".")[0] in ("stocks", "options")}
CONTRACT_A, CONTRACT_B = "O:SPY251219C00680000", "O:SPY251219P00680000"


def stock_trade(ts: int, symbol: str, price: float, seq: int) -> dict:
    return {**SAMPLES["stocks.trades"], "ts_event_ns": ts, "symbol": symbol, "price": price,
            "seq": seq}  # fmt: skip


def quote(ts: int, symbol: str, bid: float, ask: float, seq: int) -> dict:
    return {**SAMPLES["stocks.quotes"], "ts_event_ns": ts, "symbol": symbol, "bid_px": bid,
            "ask_px": ask, "seq": seq}  # fmt: skip


def option_trade(ts: int, contract: str, seq: int) -> dict:
    return {**SAMPLES["options.trades"], "ts_event_ns": ts, "option_symbol": contract,
            "seq": seq}  # fmt: skip


def greeks(ts: int, contract: str, delta: float, seq: int) -> dict:
    return {**SAMPLES["options.greeks"], "ts_event_ns": ts, "option_symbol": contract,
            "delta": delta, "seq": seq}  # fmt: skip


EDGE_EVENTS = {
    "stocks.quotes": [
        quote(HOUR_NS - SECOND, "SPY", 100.00, 100.02, 1),  # 13:59:59, the previous hour
        quote(HOUR_NS + 10 * SECOND, "SPY", 100.10, 100.12, 2),
        quote(HOUR_NS + 20 * SECOND, "SPY", 100.20, 100.22, 3),  # two at one nanosecond
        quote(HOUR_NS + 20 * SECOND, "SPY", 100.30, 100.32, 4),
        quote(HOUR_NS + 30 * SECOND, "SPY", 100.50, 100.40, 5),  # crossed
        quote(PREVIOUS_NS + SECOND, "IWM", 50.00, 50.02, 6),  # too old for 14:30
    ],
    "stocks.trades": [
        stock_trade(PREVIOUS_NS + 5 * SECOND, "SPY", 99.0, 1),
        stock_trade(HOUR_NS + 1_000, "SPY", 100.02, 2),  # 14:00:00.000001
        stock_trade(HOUR_NS + 10 * SECOND, "SPY", 100.10, 3),  # at its quote's nanosecond
        stock_trade(HOUR_NS + 25 * SECOND, "SPY", 100.31, 4),
        stock_trade(HOUR_NS + 31 * SECOND, "SPY", 100.45, 5),
        stock_trade(HOUR_NS + 40 * SECOND, "QQQ", 600.0, 6),  # no quote at all
        stock_trade(HOUR_NS + 1_800 * SECOND, "IWM", 50.0, 7),
    ],
    "options.greeks": [
        greeks(HOUR_NS - 60 * SECOND, CONTRACT_A, 0.5, 1),
        greeks(HOUR_NS + 9 * SECOND, CONTRACT_B, -0.4, 2),  # after B's trade
    ],
    "options.trades": [
        option_trade(HOUR_NS + 5 * SECOND, CONTRACT_A, 1),
        option_trade(HOUR_NS + 5 * SECOND, CONTRACT_B, 2),
    ],
}


def build_lake(store: LakeStore, events: dict[str, list[dict]]) -> None:
    """Bronze of `events`, and Silver of both hours of every table."""
    for name, messages in events.items():
        write_bronze(store, SCHEMAS[name], bronze_rows(SCHEMAS[name], messages), files=2)
    for name in events:
        for hour in (PREVIOUS, HOUR):
            rebuild_hour(tables_of(store), SILVER_TABLES[SCHEMAS[name].table], hour)


@pytest.fixture
def edge_lake(tmp_path) -> LakeStore:
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    build_lake(store, EDGE_EVENTS)
    return store


def gold_rows(store: LakeStore, table, hour=HOUR) -> pl.DataFrame:
    files = committed_files(store, table, hour)
    return pl.concat(
        store.read_parquet(paths).with_columns(pl.lit(folder.split("=")[1]).alias("_value"))
        for folder, paths in sorted(files.items())
    )


def all_passed(store: LakeStore, table, rebuilt) -> None:
    outcomes = check_hour(tables_of(store), table, rebuilt)
    assert set(outcomes) == set(table.check_names)
    failed = {name: o.message for name, o in outcomes.items() if not o.passed}
    assert not failed, failed


def test_trades_nbbo_edge_cases_across_the_hour_boundary(edge_lake):
    rebuilt = rebuild_hour(tables_of(edge_lake), GOLD_TRADES_NBBO, HOUR)
    all_passed(edge_lake, GOLD_TRADES_NBBO, rebuilt)
    rows = {row["price"]: row for row in gold_rows(edge_lake, GOLD_TRADES_NBBO).to_dicts()}
    assert len(rows) == 6 and 99.0 not in rows  # only the hour's trades
    first = rows[100.02]
    assert (first["bid_px"], first["quote_age_ns"]) == (100.00, SECOND + 1_000)
    assert rows[100.10]["quote_age_ns"] == 0 and rows[100.10]["bid_px"] == 100.10
    assert rows[100.31]["bid_px"] == 100.30 or rows[100.31]["bid_px"] == 100.20
    tied = gold_rows(edge_lake, GOLD_TRADES_NBBO).filter(pl.col("price") == 100.31)
    silver_quotes = edge_lake.read_parquet(
        committed_files(edge_lake, SILVER_TABLES["stocks/quotes"], HOUR)["symbol=SPY"]
    ).filter(pl.col("ts_event_ns") == HOUR_NS + 20 * SECOND)
    assert tied["quote_event_id"][0] == silver_quotes["event_id"].max()
    crossed = rows[100.45]
    assert crossed["crossed"] is True and crossed["locked"] is False and crossed["spread"] < 0
    assert rows[600.0]["bid_px"] is None and rows[600.0]["quote_age_ns"] is None
    assert rows[50.0]["bid_px"] is None  # IWM's only quote is 89 minutes old
    assert first["trade_sign"] == 1  # 100.02 > mid 100.01


def test_options_enriched_never_uses_a_later_snapshot(edge_lake):
    rebuilt = rebuild_hour(tables_of(edge_lake), GOLD_OPTIONS_ENRICHED, HOUR)
    all_passed(edge_lake, GOLD_OPTIONS_ENRICHED, rebuilt)
    rows = {r["option_symbol"]: r for r in gold_rows(edge_lake, GOLD_OPTIONS_ENRICHED).to_dicts()}
    a, b = rows[CONTRACT_A], rows[CONTRACT_B]
    assert a["delta"] == 0.5 and a["greeks_age_ns"] == 65 * SECOND
    assert b["delta"] is None and b["greeks_event_id"] is None
    assert a["underlying_bid"] == 100.00  # SPY's 13:59:59 quote
    assert a["underlying_mid"] == pytest.approx(100.01)
    assert a["delta_notional"] == pytest.approx(0.5 * a["size"] * 100 * 100.01)


def test_max_age_is_read_from_the_environment(edge_lake, monkeypatch):
    monkeypatch.setenv("LAKE_ASOF_MAX_AGE", "1s")
    rebuilt = rebuild_hour(tables_of(edge_lake), GOLD_TRADES_NBBO, HOUR)
    all_passed(edge_lake, GOLD_TRADES_NBBO, rebuilt)
    rows = {row["price"]: row for row in gold_rows(edge_lake, GOLD_TRADES_NBBO).to_dicts()}
    assert rows[100.02]["bid_px"] is None  # 1 s + 1 µs old
    assert rows[100.10]["bid_px"] == 100.10
    monkeypatch.setenv("LAKE_ASOF_MAX_AGE", "2h")
    with pytest.raises(Exception, match="LAKE_ASOF_MAX_AGE"):
        rebuild_hour(tables_of(edge_lake), GOLD_TRADES_NBBO, HOUR)


def random_events(seed: int) -> dict[str, list[dict]]:
    """Two hours of trades, quotes, option trades and greeks on three symbols, out of order,
    many at the same nanosecond."""
    rng = random.Random(seed)
    start = PREVIOUS_NS

    def ts() -> int:
        return start + rng.randrange(7_200) * SECOND + rng.choice((0, 0, rng.randrange(SECOND)))

    symbols = ("SPY", "QQQ", "IWM")
    contracts = [f"O:SPY251219C00{strike}000" for strike in (670, 680, 690)]
    return {
        "stocks.quotes": [
            quote(ts(), rng.choice(symbols), 100.0, 100.0 + rng.choice((0, 0.01, -0.01)), i)
            for i in range(1500)
        ],
        "stocks.trades": [
            stock_trade(ts(), rng.choice(symbols), round(100 + rng.uniform(-0.05, 0.05), 2), i)
            for i in range(1000)
        ],
        "options.greeks": [
            greeks(ts(), rng.choice(contracts), rng.uniform(-1, 1), i) for i in range(400)
        ],
        "options.trades": [option_trade(ts(), rng.choice(contracts), i) for i in range(500)],
    }


@pytest.fixture
def random_lake(tmp_path) -> LakeStore:
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    build_lake(store, random_events(11))
    return store


def gold_bytes(store: LakeStore) -> dict[str, bytes]:
    return {path: store.read_bytes(path) for path in store.list_files("gold")}


@pytest.mark.parametrize("table", [GOLD_TRADES_NBBO, GOLD_OPTIONS_ENRICHED], ids=["nbbo", "opt"])
def test_rebuilt_hour_equals_the_transform_over_silver_and_is_byte_identical(random_lake, table):
    first = rebuild_hour(tables_of(random_lake), table, HOUR)
    all_passed(random_lake, table, first)
    silver_trades = SILVER_TABLES[table.source.removeprefix("silver/")]
    assert first.rows_written == sum(
        random_lake.read_parquet(paths).height
        for paths in committed_files(random_lake, silver_trades, HOUR).values()
    )
    stored = gold_bytes(random_lake)
    again = rebuild_hour(tables_of(random_lake), table, HOUR)
    assert again.commit is not None and again.commit.snapshot_id is None  # nothing changed
    random_lake.delete(list(stored))
    rebuild_hour(tables_of(random_lake), table, HOUR)
    assert gold_bytes(random_lake) == stored
    assert verify_hour(tables_of(random_lake), table, HOUR).passed


def test_a_late_quote_of_the_previous_hour_changes_the_hour(random_lake):
    """The previous hour is read from Silver's current snapshot: a quote committed there late
    (the last nanosecond before the hour) becomes the quote of the hour's first trade."""
    opening = bronze_rows(SCHEMAS["stocks.trades"], [stock_trade(HOUR_NS, "SPY", 77.0, 10**6)])
    write_bronze(random_lake, SCHEMAS["stocks.trades"], opening)
    rebuild_hour(tables_of(random_lake), SILVER_TABLES["stocks/trades"], HOUR)
    rebuild_hour(tables_of(random_lake), GOLD_TRADES_NBBO, HOUR)
    before = gold_rows(random_lake, GOLD_TRADES_NBBO).filter(pl.col("price") == 77.0)
    assert before["bid_px"][0] != 42.0
    late = bronze_rows(
        SCHEMAS["stocks.quotes"], [quote(HOUR_NS - 1, "SPY", 42.0, 42.02, 10**6)], 10**6
    )
    write_bronze(random_lake, SCHEMAS["stocks.quotes"], late)
    rebuild_hour(tables_of(random_lake), SILVER_TABLES["stocks/quotes"], PREVIOUS)
    rebuilt = rebuild_hour(tables_of(random_lake), GOLD_TRADES_NBBO, HOUR)
    all_passed(random_lake, GOLD_TRADES_NBBO, rebuilt)
    after = gold_rows(random_lake, GOLD_TRADES_NBBO).filter(pl.col("price") == 77.0)
    assert (after["bid_px"][0], after["quote_age_ns"][0]) == (42.0, 1)


def crafted_quote(frame: pl.DataFrame) -> pl.DataFrame:
    """A matched quote made older than the latest: another quote then lies in between."""
    matched = pl.col("quote_age_ns").is_not_null()
    return frame.with_columns(
        quote_age_ns=pl.when(matched & (pl.int_range(pl.len()) == pl.arg_where(matched).first()))
        .then(pl.col("quote_age_ns") + 1)
        .otherwise(pl.col("quote_age_ns"))
    )


CRAFTED = [
    (GOLD_TRADES_NBBO, "symbol=SPY", "quote_is_latest", crafted_quote),
    (
        GOLD_TRADES_NBBO,
        "symbol=SPY",
        "quote_is_latest",
        lambda f: f.with_columns(
            bid_px=pl.lit(None, pl.Float64), quote_age_ns=pl.lit(None, pl.Int64)
        ),
    ),
    (
        GOLD_TRADES_NBBO,
        "symbol=SPY",
        "no_look_ahead",
        lambda f: f.with_columns(quote_ts_event_ns=pl.col("ts_event_ns") + 1),
    ),
    (
        GOLD_TRADES_NBBO,
        "symbol=SPY",
        "row_count_matches_silver_trades",
        lambda f: f.head(f.height - 1),
    ),
    (GOLD_TRADES_NBBO, "symbol=SPY", "event_id_unique", lambda f: pl.concat([f, f.tail(1)])),
    (GOLD_TRADES_NBBO, "symbol=SPY", "sorted_by_ts_event_ns", lambda f: f.reverse()),
    (
        GOLD_TRADES_NBBO,
        "symbol=SPY",
        "within_partition_hour",
        lambda f: f.with_columns(pl.col("ts_event_ns") + 3_600 * SECOND),
    ),
    (GOLD_TRADES_NBBO, "symbol=SPY", "matches_declared_schema", lambda f: f.drop("mid")),
    (
        GOLD_OPTIONS_ENRICHED,
        "underlying=SPY",
        "greeks_are_latest",
        lambda f: f.with_columns(delta=pl.col("delta") * 2),
    ),
    (
        GOLD_OPTIONS_ENRICHED,
        "underlying=SPY",
        "underlying_quote_is_latest",
        lambda f: f.with_columns(underlying_bid=pl.col("underlying_bid") + 1),
    ),
    (
        GOLD_OPTIONS_ENRICHED,
        "underlying=SPY",
        "no_look_ahead",
        lambda f: f.with_columns(greeks_age_ns=-pl.col("greeks_age_ns") - 1),
    ),
]


@pytest.mark.parametrize(
    ("table", "folder", "check", "edit"),
    CRAFTED,
    ids=[f"{c[2]}/{c[0].target.split('/')[2]}/{i}" for i, c in enumerate(CRAFTED)],
)
def test_each_asof_check_fails_on_a_crafted_file(random_lake, table, folder, check, edit):
    rebuilt = rebuild_hour(tables_of(random_lake), table, HOUR)
    path = committed_file(random_lake, table, HOUR, folder)
    random_lake.write_parquet(edit(random_lake.read_parquet([path])), path)
    outcome = check_hour(tables_of(random_lake), table, rebuilt)[check]
    assert not outcome.passed, outcome
    assert path in outcome.message or "gold/" in outcome.message


def test_late_quotes_of_the_middle_hour_rerun_it_and_the_next_hour(tmp_path):
    """Three recent hours built through Dagster; quotes arrive late for the middle one only:
    the automation requests trades_nbbo for the middle and the last hour (which looks back
    into it), nothing else of it, and no bars (their trades did not change)."""
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    hours = [now - dt.timedelta(hours=back) for back in (4, 3, 2)]
    keys = [hour.strftime("%Y-%m-%d-%H:00") for hour in hours]
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    for index, hour in enumerate(hours):
        start = int(hour.timestamp()) * SECOND
        events = {
            "stocks.trades": [stock_trade(start + i * SECOND, "SPY", 100.0, i) for i in range(5)],
            "stocks.quotes": [quote(start + i * SECOND, "SPY", 99.9, 100.1, i) for i in range(3)],
        }
        for name, messages in events.items():
            rows = bronze_rows(SCHEMAS[name], messages, first_seq=100 * index + 1)
            write_bronze(store, SCHEMAS[name], rows)
    wanted = {("silver", "stocks", "trades"), ("silver", "stocks", "quotes")}
    assets = [a for a in SILVER_ASSETS if tuple(a.key.path) in wanted]
    nbbo_key = dg.AssetKey(["gold", "stocks", "trades_nbbo"])
    bars_key = dg.AssetKey(["gold", "stocks", "bars_1m"])
    gold = [a for a in GOLD_ASSETS if a.key in (nbbo_key, bars_key)]
    resources = {"lake": LakeResource(data_root=store.root)}
    with dg.instance_for_test() as instance:
        for key in keys:
            run = dg.materialize([*assets, *gold], instance=instance, partition_key=key,
                                 resources=resources)  # fmt: skip
            assert run.success
        settled = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert not settled.get_requested_partitions(nbbo_key)
        assert not settled.get_requested_partitions(bars_key)
        middle_ns = int(hours[1].timestamp()) * SECOND
        late = bronze_rows(
            SCHEMAS["stocks.quotes"], [quote(middle_ns + 3_000 * SECOND, "SPY", 1.0, 2.0, 99)], 999
        )
        write_bronze(store, SCHEMAS["stocks.quotes"], late)
        quotes = [a for a in assets if a.key.path[-1] == "quotes"]
        assert dg.materialize(
            quotes, instance=instance, partition_key=keys[1], resources=resources
        ).success
        result = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=settled.cursor
        )
        assert result.get_requested_partitions(nbbo_key) == {keys[1], keys[2]}
        assert not result.get_requested_partitions(bars_key)
