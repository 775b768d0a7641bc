"""As-of enrichment (`lake_platform.transforms.asof`) and its checks
(`lake_platform.asof_checks`): the issue's edge cases, a brute-force reference on random
inputs, byte identity under input shuffles, and crafted bad rows failing each check."""

import io
import random
from dataclasses import dataclass

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lake_platform.asof_checks import match_is_latest, no_look_ahead
from lake_platform.checks import CheckOutcome
from lake_platform.schemas import BY_NAME
from lake_platform.schemas.registry import TableSchema
from lake_platform.storage.parquet import PARQUET_OPTIONS
from lake_platform.timestamps import HOUR_NS
from lake_platform.transforms.asof import (
    GOLD_OPTIONS_ENRICHED_SCHEMA,
    GOLD_TRADES_NBBO_SCHEMA,
    GREEKS_MATCH,
    QUOTE_MATCH,
    UNDERLYING_MATCH,
    in_order_within,
    options_enriched,
    trades_nbbo,
)
from lake_platform.transforms.silver import SILVER_ORDER

TRADES = BY_NAME["stocks.trades"]
QUOTES = BY_NAME["stocks.quotes"]
OPTION_TRADES = BY_NAME["options.trades"]
GREEKS = BY_NAME["options.greeks"]
T0 = 1_765_897_200 * 10**9
"""2025-12-16 15:00 UTC: the hour enriched; the previous hour ends just before."""
SECOND = 10**9
CALL = "SPY251219C00680000"
FILE = "gold/stocks/trades_nbbo/symbol=SPY/date=2025-12-16/hour=15/part-00000.parquet"


def silver(schema: TableSchema, rows: list[dict]) -> pl.DataFrame:
    """Silver rows of `schema` from dicts (columns not given null)."""
    return pl.DataFrame(rows, schema=schema.stored_schema)


def trade(ts: int, price: float, event_id: str, symbol: str = "SPY") -> dict:
    return {"ts_event_ns": ts, "symbol": symbol, "price": price, "size": 100, "event_id": event_id}


def quote(ts: int, bid: float, ask: float, event_id: str, symbol: str = "SPY") -> dict:
    return {
        "ts_event_ns": ts,
        "symbol": symbol,
        "bid_px": bid,
        "bid_sz": 3,
        "ask_px": ask,
        "ask_sz": 4,
        "event_id": event_id,
    }


def option_trade(ts: int, event_id: str, option_symbol: str = CALL, **fields) -> dict:
    return {
        "ts_event_ns": ts,
        "underlying": "SPY",
        "option_symbol": option_symbol,
        "strike": 680.0,
        "right": "C",
        "price": 2.0,
        "size": 10,
        "event_id": event_id,
        **fields,
    }


def greek(ts: int, delta: float, event_id: str, option_symbol: str = CALL) -> dict:
    return {
        "ts_event_ns": ts,
        "underlying": "SPY",
        "option_symbol": option_symbol,
        "strike": 680.0,
        "right": "C",
        "delta": delta,
        "gamma": 0.01,
        "theta": -0.2,
        "vega": 0.3,
        "implied_vol": 0.25,
        "event_id": event_id,
    }


def nbbo(
    trades: list[dict],
    quotes: list[dict] = (),  # type: ignore[assignment]
    previous_quotes: list[dict] = (),  # type: ignore[assignment]
    previous_trades: list[dict] = (),  # type: ignore[assignment]
    max_age_ns: int = HOUR_NS,
) -> pl.DataFrame:
    return trades_nbbo(
        silver(TRADES, trades),
        silver(QUOTES, list(quotes)),
        silver(QUOTES, list(previous_quotes)),
        silver(TRADES, list(previous_trades)),
        max_age_ns,
    )


def quote_of(row: dict) -> tuple:
    return row["quote_event_id"], row["quote_age_ns"], row["bid_px"], row["ask_px"]


def test_polars_join_asof_takes_the_last_of_right_rows_at_the_same_time():
    """`trades_nbbo` relies on it (two quotes at one nanosecond: the later in Silver order)."""
    right = pl.DataFrame({"k": ["a"] * 3, "t": [1, 5, 5], "id": ["x", "y", "z"]})
    left = pl.DataFrame({"k": ["a", "a"], "t": [5, 7]})
    for by in ({"by": "k"}, {}):
        joined = left.join_asof(right, on="t", strategy="backward", check_sortedness=False, **by)
        assert joined.get_column("id").to_list() == ["z", "z"]


def test_a_quote_at_the_trades_nanosecond_counts():
    gold = nbbo(
        [trade(T0 + 10, 10.0, "t1")], [quote(T0 + 5, 9, 11, "q1"), quote(T0 + 10, 9.5, 10.5, "q2")]
    )
    assert quote_of(gold.row(0, named=True)) == ("q2", 0, 9.5, 10.5)
    assert gold.get_column("quote_ts_event_ns").to_list() == [T0 + 10]


def test_of_two_quotes_at_one_nanosecond_the_later_in_silver_order_wins():
    quotes = [quote(T0 + 5, 9.9, 10.1, "qb"), quote(T0 + 5, 9.8, 10.2, "qa")]
    for given_order in (quotes, quotes[::-1]):
        gold = nbbo([trade(T0 + 6, 10.0, "t1")], given_order)
        assert quote_of(gold.row(0, named=True)) == ("qb", 1, 9.9, 10.1)


def test_the_first_trade_of_an_hour_matches_the_previous_hours_last_quote():
    previous = [
        quote(T0 - 3_600 * SECOND, 1, 2, "p0"),
        quote(T0 - SECOND, 9, 10, "p2"),
        quote(T0 - 2 * SECOND, 7, 8, "p1"),
        quote(T0 - SECOND, 8, 9, "p1b"),
    ]
    trades = [trade(T0 + 1, 9.5, "t1"), trade(T0 + 2 * SECOND, 9.5, "t2")]
    hour = [quote(T0 + SECOND, 9.2, 9.6, "q1")]
    whole = nbbo(trades, hour, previous)
    assert [quote_of(row) for row in whole.iter_rows(named=True)] == [
        ("p2", SECOND + 1, 9.0, 10.0),
        ("q1", SECOND, 9.2, 9.6),
    ]
    assert nbbo(trades, hour, previous[1:2]).equals(whole)


def test_a_symbol_with_trades_and_no_quotes_has_nulls():
    gold = nbbo(
        [trade(T0 + 1, 5.0, "t1", "QQQ"), trade(T0 + 2, 6.0, "t2", "SPY")],
        [quote(T0, 5.9, 6.1, "q1", "SPY")],
    )
    qqq = gold.filter(pl.col("symbol") == "QQQ").row(0, named=True)
    quote_columns = [name for name in GOLD_TRADES_NBBO_SCHEMA if name not in TRADES.stored_schema]
    assert {name: qqq[name] for name in quote_columns} == {
        **dict.fromkeys(quote_columns),
        "trade_sign": 0,
    }
    assert gold.filter(pl.col("symbol") == "SPY")["quote_event_id"].to_list() == ["q1"]


def test_a_quote_older_than_the_max_age_is_no_match():
    max_age = 10 * SECOND
    trades = [trade(T0 + 5 * SECOND, 10.0, "t1"), trade(T0 + 5 * SECOND + 1, 10.0, "t2")]
    gold = nbbo(trades, previous_quotes=[quote(T0 - 5 * SECOND, 9, 11, "p1")], max_age_ns=max_age)
    assert gold.get_column("quote_event_id").to_list() == ["p1", None]
    assert gold.get_column("quote_age_ns").to_list() == [max_age, None]
    assert gold.get_column("mid").to_list() == [10.0, None]
    with pytest.raises(ValueError, match="max_age_ns"):
        nbbo(trades, max_age_ns=HOUR_NS + 1)
    with pytest.raises(ValueError, match="max_age_ns"):
        nbbo(trades, max_age_ns=-1)


def test_crossed_and_locked_quotes_join_flagged():
    gold = nbbo(
        [trade(T0 + 2, 10.0, "t1"), trade(T0 + 4, 10.0, "t2"), trade(T0 + 6, 10.0, "t3")],
        [
            quote(T0 + 1, 10.1, 9.9, "q1"),
            quote(T0 + 3, 10.0, 10.0, "q2"),
            quote(T0 + 5, 9, 11, "q3"),
        ],
    )
    assert gold.select("quote_event_id", "crossed", "locked", "spread").rows() == [
        ("q1", True, False, pytest.approx(-0.2)),
        ("q2", False, True, 0.0),
        ("q3", False, False, 2.0),
    ]


def test_derived_values_and_the_trade_sign():
    previous_trades = [
        trade(T0 - 3 * SECOND, 10.00, "p1"),
        trade(T0 - 2 * SECOND, 10.02, "p2"),
        trade(T0 - SECOND, 10.02, "p3"),
    ]
    trades = [
        trade(T0 + 1, 10.08, "t1"),  # above the mid: buy
        trade(T0 + 2, 10.00, "t2"),  # at the mid: down-tick from 10.08
        trade(T0 + 3, 10.00, "t3"),  # at the mid, same price: the last tick (down) again
        trade(T0 + 4, 9.90, "t4"),  # below the mid: sell
        trade(T0 + 5, 10.02, "u1", "QQQ"),  # no quote; same price as the previous hour: up
        trade(T0 + 6, 5.0, "v1", "IWM"),  # no quote, no trade before: undecidable
    ]
    previous_qqq = [{**row, "symbol": "QQQ"} for row in previous_trades]
    gold = nbbo(trades, [quote(T0, 9.95, 10.05, "q1")], previous_trades=previous_qqq)
    assert gold.get_column("trade_sign").to_list() == [1, -1, -1, -1, 1, 0]
    first = gold.row(0, named=True)
    assert first["mid"] == 10.0 and first["spread"] == pytest.approx(0.1)
    assert first["spread_bps"] == pytest.approx(100.0)
    assert first["effective_spread"] == pytest.approx(0.16)
    assert gold.schema == GOLD_TRADES_NBBO_SCHEMA
    assert gold.get_column("event_id").to_list() == ["t1", "t2", "t3", "t4", "u1", "v1"]


def options(
    trades: list[dict],
    greeks: list[dict] = (),  # type: ignore[assignment]
    previous_greeks: list[dict] = (),  # type: ignore[assignment]
    quotes: list[dict] = (),  # type: ignore[assignment]
    previous_quotes: list[dict] = (),  # type: ignore[assignment]
    max_age_ns: int = HOUR_NS,
    **multiplier: int,
) -> pl.DataFrame:
    return options_enriched(
        silver(OPTION_TRADES, trades),
        silver(GREEKS, list(greeks)),
        silver(GREEKS, list(previous_greeks)),
        silver(QUOTES, list(quotes)),
        silver(QUOTES, list(previous_quotes)),
        max_age_ns,
        **multiplier,
    )


def test_option_trades_with_their_greeks_and_underlying_quote():
    gold = options(
        [
            option_trade(T0 + 10, "o1", opt_bid=1.9, opt_ask=2.1, price=2.05),
            option_trade(T0 + 20, "o2", option_symbol="SPY251219P00680000"),
        ],
        [greek(T0 + 10, 0.5, "g1"), greek(T0 + 5, 0.4, "g0")],
        [greek(T0 - 1, -0.45, "gp", "SPY251219P00680000")],
        [quote(T0 + 7, 679.9, 680.1, "q1")],
    )
    assert gold.schema == GOLD_OPTIONS_ENRICHED_SCHEMA
    first, second = gold.iter_rows(named=True)
    assert (first["greeks_event_id"], first["delta"], first["greeks_age_ns"]) == ("g1", 0.5, 0)
    assert (first["underlying_bid"], first["underlying_ask"]) == (679.9, 680.1)
    assert (first["underlying_mid"], first["underlying_quote_age_ns"]) == (680.0, 3)
    assert first["delta_notional"] == pytest.approx(0.5 * 10 * 100 * 680.0)
    assert first["trade_vs_mid"] == pytest.approx(0.025)
    assert (second["greeks_event_id"], second["greeks_age_ns"]) == ("gp", 21)
    assert second["trade_vs_mid"] is None
    assert second["delta_notional"] == pytest.approx(-0.45 * 10 * 100 * 680.0)
    assert first["strike"] == 680.0 and first["right"] == "C"
    tenfold = options(
        [option_trade(T0 + 10, "o1")],
        [greek(T0, 0.5, "g1")],
        quotes=[quote(T0, 679.9, 680.1, "q1")],
        multiplier=10,
    )
    assert tenfold.get_column("delta_notional").to_list() == [pytest.approx(0.5 * 10 * 10 * 680)]


def test_greeks_that_arrive_only_after_the_trade_are_never_used():
    gold = options(
        [option_trade(T0 + 10, "o1"), option_trade(T0 + 30, "o2")],
        [greek(T0 + 11, 0.5, "late"), greek(T0 + 20, 0.6, "g2")],
        quotes=[quote(T0 + 25, 679, 681, "q1")],
    )
    first, second = gold.iter_rows(named=True)
    greek_columns = ["delta", "gamma", "theta", "vega", "implied_vol", "greeks_event_id"]
    assert [first[name] for name in greek_columns] == [None] * len(greek_columns)
    assert first["underlying_mid"] is None and first["delta_notional"] is None
    assert (second["greeks_event_id"], second["delta"], second["underlying_mid"]) == (
        "g2",
        0.6,
        680,
    )


def test_many_symbols_at_once_equal_one_symbol_at_a_time():
    case = random_case(random.Random(7), trades=300, quotes=900, symbols=("SPY", "QQQ", "IWM"))
    together = trades_nbbo(*case.frames(), max_age_ns=case.max_age_ns)
    apart = pl.concat(
        [
            trades_nbbo(
                *(frame.filter(pl.col("symbol") == symbol) for frame in case.frames()),
                case.max_age_ns,
            )
            for symbol in ("IWM", "QQQ", "SPY")
        ]
    ).sort(SILVER_ORDER)
    assert together.equals(apart)
    assert together.get_column("quote_event_id").null_count() < together.height


@dataclass
class Case:
    """Inputs of `trades_nbbo`: the hour's trades and quotes, the previous hour's."""

    trades: pl.DataFrame
    quotes: pl.DataFrame
    previous_quotes: pl.DataFrame
    previous_trades: pl.DataFrame
    max_age_ns: int

    def frames(self) -> tuple[pl.DataFrame, ...]:
        return self.trades, self.quotes, self.previous_quotes, self.previous_trades


def random_case(rng: random.Random, trades: int, quotes: int, symbols: tuple[str, ...]) -> Case:
    """Random inputs over a few nanoseconds (so that times tie) on both sides of the hour
    start, in Silver order within each symbol; `event_id`s random and distinct."""
    ids = iter(rng.sample(range(10**6), 2 * (trades + quotes)))
    span = max(trades, quotes) // 4 + 2

    def rows(count: int, first: int, make) -> list[dict]:
        made = [make(T0 + rng.randrange(first, span), f"{next(ids):06d}") for _ in range(count)]
        return sorted(made, key=lambda row: (row["symbol"], row["ts_event_ns"], row["event_id"]))

    def a_trade(ts: int, event_id: str) -> dict:
        return trade(ts, rng.choice((9.99, 10.0, 10.01)), event_id, rng.choice(symbols))

    def a_quote(ts: int, event_id: str) -> dict:
        bid = rng.choice((9.98, 9.99, 10.0))
        return quote(
            ts, bid, bid + rng.choice((-0.01, 0.0, 0.01, 0.02)), event_id, rng.choice(symbols)
        )

    hour_trades, previous_trades = rows(trades, 0, a_trade), rows(trades // 4, -span, a_trade)
    hour_quotes, previous_quotes = rows(quotes, 0, a_quote), rows(quotes // 4, -span, a_quote)
    return Case(
        silver(TRADES, hour_trades),
        silver(QUOTES, [row for row in hour_quotes if row["ts_event_ns"] >= T0]),
        silver(QUOTES, [row for row in previous_quotes if row["ts_event_ns"] < T0]),
        silver(TRADES, [row for row in previous_trades if row["ts_event_ns"] < T0]),
        rng.choice((0, 3, span // 2, HOUR_NS)),
    )


def reference(case: Case) -> list[tuple]:
    """Per trade, by brute force: its quote's `event_id` and age, and its trade sign."""
    quotes = case.quotes.to_dicts() + case.previous_quotes.to_dicts()
    silver_order = sorted(
        case.previous_trades.to_dicts(), key=lambda row: (row["ts_event_ns"], row["event_id"])
    ) + sorted(case.trades.to_dicts(), key=lambda row: (row["ts_event_ns"], row["event_id"]))
    expected = []
    for index, row in enumerate(silver_order):
        if index < case.previous_trades.height:
            continue
        ts, symbol, price = row["ts_event_ns"], row["symbol"], row["price"]
        earlier = [q for q in quotes if q["symbol"] == symbol and q["ts_event_ns"] <= ts]
        best = max(earlier, key=lambda q: (q["ts_event_ns"], q["event_id"]), default=None)
        if best is not None and ts - best["ts_event_ns"] > case.max_age_ns:
            best = None
        other = [
            before["price"]
            for before in silver_order[:index]
            if before["symbol"] == symbol and before["price"] != price
        ]
        tick = 0 if not other else (1 if price > other[-1] else -1)
        sign = tick
        if best is not None:
            mid = (best["bid_px"] + best["ask_px"]) / 2
            sign = 1 if price > mid else -1 if price < mid else tick
        quoted = (None, None) if best is None else (best["event_id"], ts - best["ts_event_ns"])
        expected.append((row["event_id"], *quoted, sign))
    return expected


def shuffled(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    return frame.sample(fraction=1.0, shuffle=True, seed=seed)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shuffle=st.booleans(), size=st.integers(1, 30))
def test_trades_nbbo_equals_a_brute_force_reference(seed, shuffle, size):
    rng = random.Random(seed)
    case = random_case(rng, trades=size, quotes=2 * size, symbols=("SPY", "QQQ"))
    if shuffle:
        case = Case(*(shuffled(frame, seed) for frame in case.frames()), case.max_age_ns)
    gold = trades_nbbo(*case.frames(), max_age_ns=case.max_age_ns)
    got = gold.select("event_id", "quote_event_id", "quote_age_ns", "trade_sign").rows()
    assert got == reference(case)
    inputs = [case.quotes, case.previous_quotes]
    assert no_look_ahead(gold, [QUOTE_MATCH], FILE).passed
    outcome = match_is_latest(gold, inputs, QUOTE_MATCH, case.max_age_ns, FILE)
    assert outcome.passed, outcome.message


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, **PARQUET_OPTIONS)  # type: ignore[arg-type]
    return buffer.getvalue()


def test_same_silver_in_any_row_order_gives_the_same_bytes():
    case = random_case(random.Random(3), trades=400, quotes=1200, symbols=("SPY", "QQQ", "IWM"))
    first = parquet_bytes(trades_nbbo(*case.frames(), max_age_ns=case.max_age_ns))
    for seed in (1, 2):
        frames = [shuffled(frame, seed) for frame in case.frames()]
        assert parquet_bytes(trades_nbbo(*frames, max_age_ns=case.max_age_ns)) == first
    option_inputs = option_case(random.Random(5))
    first = parquet_bytes(options_enriched(*option_inputs, max_age_ns=HOUR_NS))
    frames = [shuffled(frame, 4) for frame in option_inputs]
    assert parquet_bytes(options_enriched(*frames, max_age_ns=HOUR_NS)) == first


def option_case(rng: random.Random, trades: int = 100) -> list[pl.DataFrame]:
    """Option trades, greeks, previous greeks, quotes, previous quotes of two underlyings,
    times tied often, in Silver order within each underlying (each symbol for quotes)."""
    contracts = [("SPY", CALL), ("SPY", "SPY251219P00680000"), ("QQQ", "QQQ251219C00600000")]
    ids = iter(rng.sample(range(10**6), 5 * trades))
    span = trades // 2 + 2

    def at(first: int) -> int:
        return T0 + rng.randrange(first, span)

    def one(make, first: int) -> dict:
        underlying, option_symbol = rng.choice(contracts)
        return {**make(at(first), f"{next(ids):06d}", option_symbol), "underlying": underlying}

    def a_quote() -> dict:
        bid = rng.choice((1.0, 1.1))
        return quote(at(-span), bid, bid + 0.1, f"{next(ids):06d}", rng.choice(("SPY", "QQQ")))

    def frame(schema: TableSchema, rows: list[dict]) -> pl.DataFrame:
        return silver(schema, rows).sort(schema.partition_column, *SILVER_ORDER)

    greeks = [one(lambda ts, i, o: greek(ts, rng.random(), i, o), -span) for _ in range(2 * trades)]
    quotes = [a_quote() for _ in range(trades)]
    return [
        frame(OPTION_TRADES, [one(option_trade, 0) for _ in range(trades)]),
        frame(GREEKS, [row for row in greeks if row["ts_event_ns"] >= T0]),
        frame(GREEKS, [row for row in greeks if row["ts_event_ns"] < T0]),
        frame(QUOTES, [row for row in quotes if row["ts_event_ns"] >= T0]),
        frame(QUOTES, [row for row in quotes if row["ts_event_ns"] < T0]),
    ]


def option_reference(frames: list[pl.DataFrame], max_age_ns: int) -> list[tuple]:
    """Per option trade, by brute force: its greeks' `event_id`, and its underlying quote's
    age, bid and ask (the option rows hold no quote id)."""
    trades, *inputs = (frame.to_dicts() for frame in frames)
    greeks, quotes = inputs[0] + inputs[1], inputs[2] + inputs[3]

    def latest(rows: list[dict], key: str, value: str, ts: int) -> dict | None:
        earlier = [row for row in rows if row[key] == value and row["ts_event_ns"] <= ts]
        best = max(earlier, key=lambda row: (row["ts_event_ns"], row["event_id"]), default=None)
        return None if best is None or ts - best["ts_event_ns"] > max_age_ns else best

    expected = []
    for row in sorted(trades, key=lambda row: (row["ts_event_ns"], row["event_id"])):
        ts = row["ts_event_ns"]
        greeks_row = latest(greeks, "option_symbol", row["option_symbol"], ts)
        quote_row = latest(quotes, "symbol", row["underlying"], ts)
        expected.append(
            (
                row["event_id"],
                None if greeks_row is None else greeks_row["event_id"],
                None if quote_row is None else ts - quote_row["ts_event_ns"],
                None if quote_row is None else quote_row["bid_px"],
                None if quote_row is None else quote_row["ask_px"],
            )
        )
    return expected


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shuffle=st.booleans(),
    size=st.integers(1, 30),
    max_age_ns=st.sampled_from((0, 3, 10, HOUR_NS)),
)
def test_options_enriched_equals_a_brute_force_reference(seed, shuffle, size, max_age_ns):
    frames = option_case(random.Random(seed), trades=size)
    if shuffle:
        frames = [shuffled(frame, seed) for frame in frames]
    gold = options_enriched(*frames, max_age_ns=max_age_ns)
    got = gold.select(
        "event_id",
        "greeks_event_id",
        "underlying_quote_age_ns",
        "underlying_bid",
        "underlying_ask",
    ).rows()
    assert got == option_reference(frames, max_age_ns)
    matches = [GREEKS_MATCH, UNDERLYING_MATCH]
    assert no_look_ahead(gold, matches, FILE).passed
    for match, inputs in ((GREEKS_MATCH, frames[1:3]), (UNDERLYING_MATCH, frames[3:])):
        outcome = match_is_latest(gold, inputs, match, max_age_ns, FILE)
        assert outcome.passed, outcome.message


def at_row(frame: pl.DataFrame, row: int, **values: object) -> pl.DataFrame:
    """`frame` with `values` in row `row`."""
    here = pl.int_range(pl.len()) == row
    return frame.with_columns(
        pl.when(here).then(pl.lit(value, frame.schema[name])).otherwise(pl.col(name)).alias(name)
        for name, value in values.items()
    )


def failed(outcome: CheckOutcome, *fragments: str) -> bool:
    return not outcome.passed and all(
        fragment in outcome.message for fragment in (FILE, *fragments)
    )


def test_crafted_bad_rows_fail_each_quote_check():
    quotes = silver(
        QUOTES,
        [
            quote(T0 + 1, 9, 11, "q1"),
            quote(T0 + 5, 9.5, 10.5, "q2"),
            quote(T0 + 5, 9.6, 10.4, "q3"),
            quote(T0 + 9, 9.7, 10.3, "q4"),
        ],
    )
    previous = silver(QUOTES, [quote(T0 - 20, 8, 12, "p1")])
    trades = silver(
        TRADES, [trade(T0, 10.0, "t0"), trade(T0 + 6, 10.0, "t1"), trade(T0 + 8, 10.0, "t2")]
    )
    good = trades_nbbo(trades, quotes, previous, silver(TRADES, []), 30)
    inputs = [quotes, previous]
    assert good.get_column("quote_event_id").to_list() == ["p1", "q3", "q3"]
    assert no_look_ahead(good, [QUOTE_MATCH], FILE).passed
    assert match_is_latest(good, inputs, QUOTE_MATCH, 30, FILE).passed

    look_ahead = at_row(good, 1, quote_ts_event_ns=T0 + 9, quote_age_ns=-3, quote_event_id="q4")
    assert failed(no_look_ahead(look_ahead, [QUOTE_MATCH], FILE), "row 1", "quote_age_ns")
    assert failed(match_is_latest(look_ahead, inputs, QUOTE_MATCH, 30, FILE), "row 1")

    older = at_row(
        good,
        2,
        quote_ts_event_ns=T0 + 1,
        quote_age_ns=7,
        quote_event_id="q1",
        bid_px=9.0,
        ask_px=11.0,
    )
    assert no_look_ahead(older, [QUOTE_MATCH], FILE).passed
    assert failed(
        match_is_latest(older, inputs, QUOTE_MATCH, 30, FILE), "row 2", "q3 at", "lies in"
    )

    earlier_tie = at_row(good, 1, quote_event_id="q2", bid_px=9.5, ask_px=10.5)
    assert failed(
        match_is_latest(earlier_tie, inputs, QUOTE_MATCH, 30, FILE),
        "row 1",
        "latest input row is q3",
    )

    other_bid = at_row(good, 1, bid_px=9.55)
    assert failed(match_is_latest(other_bid, inputs, QUOTE_MATCH, 30, FILE), "row 1", "bid_px")

    missed = at_row(
        good, 0, **dict.fromkeys(["quote_ts_event_ns", "quote_age_ns", "quote_event_id"])
    )
    missed = at_row(missed, 0, **dict.fromkeys(["bid_px", "bid_sz", "ask_px", "ask_sz"]))
    assert failed(
        match_is_latest(missed, inputs, QUOTE_MATCH, 30, FILE), "row 0", "holds no match", "p1"
    )

    too_old = match_is_latest(good, inputs, QUOTE_MATCH, 19, FILE)
    assert failed(too_old, "row 0", "no symbol row of its key")

    half_null = at_row(good, 1, quote_age_ns=None)
    assert failed(match_is_latest(half_null, inputs, QUOTE_MATCH, 30, FILE), "row 1")


def test_crafted_bad_rows_fail_each_option_check():
    trades = silver(OPTION_TRADES, [option_trade(T0 + 10, "o1"), option_trade(T0 + 30, "o2")])
    greeks = silver(GREEKS, [greek(T0 + 20, 0.5, "g1"), greek(T0 + 40, 0.6, "g2")])
    quotes = silver(QUOTES, [quote(T0 + 5, 679, 681, "q1"), quote(T0 + 25, 680, 682, "q2")])
    none = silver(GREEKS, [])
    good = options_enriched(trades, greeks, none, quotes, silver(QUOTES, []), HOUR_NS)
    matches = [GREEKS_MATCH, UNDERLYING_MATCH]
    assert no_look_ahead(good, matches, FILE).passed
    assert match_is_latest(good, [greeks, none], GREEKS_MATCH, HOUR_NS, FILE).passed
    assert match_is_latest(good, [quotes], UNDERLYING_MATCH, HOUR_NS, FILE).passed

    later = at_row(
        good, 1, greeks_ts_event_ns=T0 + 40, greeks_age_ns=-10, greeks_event_id="g2", delta=0.6
    )
    assert failed(no_look_ahead(later, matches, FILE), "row 1", "greeks_age_ns")
    assert failed(match_is_latest(later, [greeks, none], GREEKS_MATCH, HOUR_NS, FILE), "row 1")

    made_up = at_row(good, 0, greeks_ts_event_ns=T0 + 20, greeks_age_ns=-10, greeks_event_id="g1")
    assert failed(match_is_latest(made_up, [greeks, none], GREEKS_MATCH, HOUR_NS, FILE), "row 0")

    stale = at_row(good, 1, underlying_bid=679.0, underlying_ask=681.0, underlying_quote_age_ns=25)
    assert no_look_ahead(stale, matches, FILE).passed
    assert failed(
        match_is_latest(stale, [quotes], UNDERLYING_MATCH, HOUR_NS, FILE), "row 1", "lies in"
    )

    future_quote = at_row(good, 0, underlying_quote_age_ns=-15)
    assert failed(no_look_ahead(future_quote, matches, FILE), "row 0", "underlying_quote_age_ns")


def test_match_is_latest_with_times_too_far_apart_for_int64():
    """Keys times a range of times beyond Int64 take the Int128 search."""
    symbols = [f"S{index}" for index in range(8)]
    quotes = silver(QUOTES, [quote(T0 + 1, 1, 2, f"q{s}", s) for s in symbols[:4]])
    ancient = silver(QUOTES, [quote(1, 1, 2, f"a{s}", s) for s in symbols])
    trades = silver(TRADES, [trade(T0 + 2, 1.5, f"t{s}", s) for s in symbols])
    gold = trades_nbbo(trades, quotes, ancient, silver(TRADES, []), HOUR_NS)
    assert (
        gold.get_column("quote_event_id").to_list() == [f"q{s}" for s in symbols[:4]] + [None] * 4
    )
    assert match_is_latest(gold, [quotes, ancient], QUOTE_MATCH, HOUR_NS, FILE).passed
    bad = at_row(
        gold,
        5,
        quote_ts_event_ns=1,
        quote_age_ns=T0 + 1,
        quote_event_id="aS5",
        bid_px=1.0,
        ask_px=2.0,
        bid_sz=3,
        ask_sz=4,
    )
    assert failed(match_is_latest(bad, [quotes, ancient], QUOTE_MATCH, HOUR_NS, FILE), "row 5")


def test_rows_already_in_silver_order_within_each_value_are_not_sorted():
    rows = silver(
        QUOTES,
        [
            quote(T0 + 2, 1, 2, "b", "QQQ"),
            quote(T0 + 2, 1, 2, "c", "QQQ"),
            quote(T0 + 1, 1, 2, "a", "SPY"),
            quote(T0 + 3, 1, 2, "d", "SPY"),
        ],
    )
    assert in_order_within(rows, "symbol") is rows
    for bad in (rows[[1, 0, 2, 3]], rows[[0, 1, 3, 2]], rows[[2, 0, 1, 3]]):
        assert in_order_within(bad, "symbol").equals(rows.sort(SILVER_ORDER))
    assert in_order_within(rows, None).equals(rows.sort(SILVER_ORDER))
