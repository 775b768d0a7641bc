"""Silver frames to the as-of enriched Gold frames: every stock trade with the quote that
prevailed (`trades_nbbo`), every option trade with its greeks and its underlying's quote
(`options_enriched`).

A trade's match in an input (quotes, greeks) is the last input row of the same key in Silver
order (`ts_event_ns`, `event_id`) whose `ts_event_ns` is at or before the trade's: a quote at
the trade's very nanosecond counts, and of two quotes at one nanosecond the greater
`event_id` wins. A match older than `max_age_ns` (at most one hour) is no match: its columns
are null. The previous hour's rows count when the hour has none yet at the trade's time; of
them only each key's last row can ever match, so a caller may pass the previous hour whole
or just its tail. Every previous-hour row must lie before every row of the hour (as the
partition bounds guarantee).

The join is Polars' `join_asof` (`strategy="backward"`, by key), which needs each key's
rows in time order on both sides and, among right rows at the same time, takes the last
one (pinned by a test): each side is therefore put in Silver order within its key, cheaply
when it already is (`in_order_within`). `lake_platform.asof_checks` verifies the result
independently of the join.
"""

import polars as pl

from lake_platform.asof_checks import AsofMatch
from lake_platform.schemas import BY_NAME
from lake_platform.schemas.registry import TableSchema
from lake_platform.timestamps import HOUR_NS
from lake_platform.transforms.silver import SILVER_ORDER

STOCK_TRADES = BY_NAME["stocks.trades"]
STOCK_QUOTES = BY_NAME["stocks.quotes"]
OPTION_TRADES = BY_NAME["options.trades"]
GREEKS = BY_NAME["options.greeks"]

MAX_AGE_LIMIT_NS = HOUR_NS
"""The oldest match `max_age_ns` may allow: one hour, the previous hour partition's reach."""
CONTRACT_MULTIPLIER = 100
"""Shares per option contract, `options_enriched`'s default `multiplier`."""
BPS = 10_000

TRADE_COLUMNS = ("ts_event_ns", "symbol", "price", "size", "exchange", "conditions", "event_id")
"""The Silver trade columns of a `trades_nbbo` row (`symbol` is its partition column)."""
QUOTE_FIELDS = ("bid_px", "bid_sz", "ask_px", "ask_sz")
QUOTE_COLUMNS = ("ts_event_ns", "event_id", "symbol", *QUOTE_FIELDS)
"""The Silver quote columns the enrichment reads."""
GREEK_FIELDS = ("delta", "gamma", "theta", "vega", "implied_vol")
GREEK_COLUMNS = ("ts_event_ns", "event_id", "underlying", "option_symbol", *GREEK_FIELDS)
"""The Silver greeks columns `options_enriched` reads (`underlying` is the partition column)."""
OPTION_TRADE_COLUMNS = tuple(OPTION_TRADES.stored_schema.names())
"""Every Silver option trade column, in the registry's order: an enriched row keeps them all."""

QUOTE_MATCH = AsofMatch(
    key="symbol",
    input_key="symbol",
    age="quote_age_ns",
    matched_ts="quote_ts_event_ns",
    columns=(
        ("quote_ts_event_ns", "ts_event_ns"),
        ("quote_event_id", "event_id"),
        *((field, field) for field in QUOTE_FIELDS),
    ),
)
"""How a `trades_nbbo` row holds its quote (for `lake_platform.asof_checks`)."""
GREEKS_MATCH = AsofMatch(
    key="option_symbol",
    input_key="option_symbol",
    age="greeks_age_ns",
    matched_ts="greeks_ts_event_ns",
    columns=(
        ("greeks_ts_event_ns", "ts_event_ns"),
        ("greeks_event_id", "event_id"),
        *((field, field) for field in GREEK_FIELDS),
    ),
)
"""How an `options_enriched` row holds its greeks snapshot."""
UNDERLYING_MATCH = AsofMatch(
    key="underlying",
    input_key="symbol",
    age="underlying_quote_age_ns",
    matched_ts=None,
    columns=(("underlying_bid", "bid_px"), ("underlying_ask", "ask_px")),
)
"""How an `options_enriched` row holds its underlying's quote (no time or id column of its
own: the quote's time is the trade's minus `underlying_quote_age_ns`)."""


def check_max_age(max_age_ns: int) -> None:
    """`ValueError` unless `0 <= max_age_ns <= MAX_AGE_LIMIT_NS`: a match older than an hour
    could lie beyond the previous hour, which is all the enrichment reads."""
    if not 0 <= max_age_ns <= MAX_AGE_LIMIT_NS:
        raise ValueError(f"max_age_ns {max_age_ns} is not within [0, {MAX_AGE_LIMIT_NS}]")


def in_order_within(frame: pl.DataFrame, block: str | None) -> pl.DataFrame:
    """`frame` with each `block` value's rows in Silver order (`block=None`: all rows).

    A frame read from Silver already is (a partition value's files in order, one value after
    the other): that is checked in one linear pass, `event_id`s compared only where
    `ts_event_ns` ties, and the frame returned as it is. Otherwise it is sorted by
    `SILVER_ORDER`, which puts the rows of every key, whatever the key, in Silver order.
    """
    return frame if _blocks_in_order(frame, block) else frame.sort(SILVER_ORDER)


def _blocks_in_order(frame: pl.DataFrame, block: str | None) -> bool:
    """Whether each `block` value's rows are contiguous and strictly in Silver order."""
    ts, ids = frame.get_column("ts_event_ns"), frame.get_column("event_id")
    if ts.has_nulls() or ids.has_nulls():
        return False
    if block is None:
        starts = pl.select(pl.int_range(frame.height) == 0).to_series()
    else:
        values = frame.get_column(block)
        starts = values.ne_missing(values.shift(1))
        if values.filter(starts).n_unique() != starts.sum():
            return False
    steps = ts.diff()
    if ((steps < 0) & ~starts).any():
        return False
    ties = ((steps == 0) & ~starts).arg_true()
    ids = ids.rechunk()  # a gather across chunks of strings costs several times more
    return bool((ids.gather(ties) > ids.gather(ties - 1)).all())


def last_per_key(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    """Each `key`'s last row in Silver order, in any row order of `frame`."""
    latest = frame.filter(pl.col("ts_event_ns") == pl.col("ts_event_ns").max().over(key))
    return latest.filter(pl.col("event_id") == pl.col("event_id").max().over(key))


def _book(
    rows: pl.DataFrame, previous: pl.DataFrame, key: str, block: str, columns: dict[str, str]
) -> pl.DataFrame:
    """The right side of an as-of join: `key`'s last previous-hour row, then the hour's rows
    in Silver order within `block` (hence within `key`), as `columns` (output name: input
    column) plus `_matched_ts`, the join's time."""
    selected = [pl.col(key), pl.col("ts_event_ns").alias("_matched_ts")]
    selected += [pl.col(source).alias(name) for name, source in columns.items()]
    needed = dict.fromkeys([key, *SILVER_ORDER, *columns.values()])
    tail = last_per_key(previous.select(list(needed)), key)
    return pl.concat([tail.select(selected), in_order_within(rows, block).select(selected)])


def _one_value(values: pl.Series) -> bool:
    """Whether `values` are all one and the same (not null), or none at all."""
    if values.is_empty():
        return True
    return values.null_count() == 0 and bool((values == values.first()).all())


def _prevailing(
    trades: pl.DataFrame, book: pl.DataFrame, key: str, book_key: str, max_age_ns: int
) -> pl.DataFrame:
    """`trades` (in Silver order within `key`) with the columns of `book` of their match,
    null when none within `max_age_ns` (`tolerance` keeps a match exactly that old);
    `_matched_ts` is the match's time.

    When every trade and every book row hold one and the same key (a partition value's
    hour, as the rebuild reads it), the join is by time alone: ~5x faster than by a key
    that would put every row in the same group.
    """
    options = {
        "left_on": "ts_event_ns",
        "right_on": "_matched_ts",
        "strategy": "backward",
        "tolerance": max_age_ns,
        "coalesce": False,
        "check_sortedness": False,
    }
    keys = pl.concat([trades.get_column(key), book.get_column(book_key)], rechunk=False)
    if _one_value(keys):
        return trades.join_asof(book.drop(book_key), **options)  # type: ignore[arg-type]
    return trades.join_asof(book, by_left=key, by_right=book_key, **options)  # type: ignore[arg-type]


def _tick_signs(trades: pl.DataFrame, previous_trades: pl.DataFrame) -> pl.Series:
    """Each trade's tick test (Int8): the sign of its price minus the last different price
    of the same symbol before it in Silver order, this hour's or the previous hour's; 0 when
    there is none.

    Of the previous hour only each symbol's last trade and its last trade at another price
    matter (the direction the hour ended on): they are put first, in that order, and the
    hour's trades (in Silver order) after them. A price equal to the previous one carries the
    previous direction (a zero tick repeats the last non-zero one).
    """
    previous = previous_trades.select("symbol", *SILVER_ORDER, "price")
    last = last_per_key(previous, "symbol")
    other_price = previous.join(
        last.select("symbol", pl.col("price").alias("_last_price")), on="symbol"
    ).filter(pl.col("price") != pl.col("_last_price"))
    before = last_per_key(other_price, "symbol")
    prices = pl.concat([frame.select("symbol", "price") for frame in (before, last, trades)])
    step = pl.col("price").diff().sign()
    tick = pl.when(step != 0).then(step).forward_fill()
    if not _one_value(prices.get_column("symbol")):
        tick = tick.over("symbol")
    signs = prices.select(tick.fill_null(0).cast(pl.Int8).alias("tick")).to_series()
    return signs.slice(before.height + last.height)


def trades_nbbo(
    trades: pl.DataFrame,
    quotes: pl.DataFrame,
    previous_quotes: pl.DataFrame,
    previous_trades: pl.DataFrame,
    max_age_ns: int,
) -> pl.DataFrame:
    """The Gold `stocks/trades_nbbo` rows of an hour's Silver `trades` (one symbol or many):
    one per trade, in Silver order, with its prevailing quote (see the module) among the
    hour's `quotes` and the `previous_quotes` hour (whole or its tail), and:

    - `mid`, `spread` (ask − bid), `spread_bps` (spread / mid in basis points, null unless
      mid > 0), `effective_spread` (2·|price − mid|);
    - `trade_sign`: +1 above the mid (a buy), −1 below (a sell); at the mid or without a
      quote, the tick test (`_tick_signs`, over this hour and `previous_trades`, whole or
      its tail); 0 when undecidable;
    - `crossed` (bid > ask) and `locked` (bid = ask): such a quote still joins, flagged.

    Every quote column and derived quote value is null when no quote qualifies.
    """
    check_max_age(max_age_ns)
    in_order = in_order_within(trades.select(TRADE_COLUMNS), None)
    book = _book(
        quotes.select(QUOTE_COLUMNS),
        previous_quotes.select(QUOTE_COLUMNS),
        "symbol",
        "symbol",
        {
            "quote_ts_event_ns": "ts_event_ns",
            "quote_event_id": "event_id",
            **{field: field for field in QUOTE_FIELDS},
        },
    )
    joined = _prevailing(in_order, book, "symbol", "symbol", max_age_ns)
    tick = _tick_signs(in_order, previous_trades)
    price, bid, ask, mid = pl.col("price"), pl.col("bid_px"), pl.col("ask_px"), pl.col("mid")
    return joined.with_columns(
        (pl.col("ts_event_ns") - pl.col("_matched_ts")).alias("quote_age_ns"),
        ((bid + ask) / 2).alias("mid"),
        (ask - bid).alias("spread"),
        tick.alias("_tick"),
    ).select(
        *TRADE_COLUMNS,
        *QUOTE_FIELDS,
        "quote_ts_event_ns",
        "quote_age_ns",
        "quote_event_id",
        "mid",
        "spread",
        pl.when(mid > 0).then(pl.col("spread") / mid * BPS).alias("spread_bps"),
        pl.when(price > mid)
        .then(pl.lit(1, pl.Int8))
        .when(price < mid)
        .then(pl.lit(-1, pl.Int8))
        .otherwise(pl.col("_tick"))
        .alias("trade_sign"),
        (2 * (price - mid).abs()).alias("effective_spread"),
        (bid > ask).alias("crossed"),
        (bid == ask).alias("locked"),
    )


def options_enriched(
    option_trades: pl.DataFrame,
    greeks: pl.DataFrame,
    previous_greeks: pl.DataFrame,
    quotes: pl.DataFrame,
    previous_quotes: pl.DataFrame,
    max_age_ns: int,
    multiplier: int = CONTRACT_MULTIPLIER,
) -> pl.DataFrame:
    """The Gold `options/trades_enriched` rows of an hour's Silver `option_trades` (one
    underlying or many): one per trade, in Silver order, with every trade column and

    - the latest greeks snapshot of its `option_symbol` (see the module) among the hour's
      `greeks` and the `previous_greeks` hour: `delta` … `implied_vol`,
      `greeks_ts_event_ns`, `greeks_age_ns`, `greeks_event_id`;
    - its underlying's prevailing quote among `quotes` and `previous_quotes` (stock quotes
      whose `symbol` is the trade's `underlying`): `underlying_bid`, `underlying_ask`,
      `underlying_mid`, `underlying_quote_age_ns`;
    - `delta_notional` = delta · size · `multiplier` · underlying_mid;
    - `trade_vs_mid`: the price relative to the option's own mid at the trade, from the
      trade's `opt_bid` and `opt_ask`: (price − mid) / mid, null unless both are present
      and the mid is positive.

    A snapshot or quote that comes only after the trade is never used: without an earlier
    one within `max_age_ns` its columns are null.
    """
    check_max_age(max_age_ns)
    in_order = in_order_within(option_trades.select(OPTION_TRADE_COLUMNS), None)
    greeks_book = _book(
        greeks.select(GREEK_COLUMNS),
        previous_greeks.select(GREEK_COLUMNS),
        "option_symbol",
        "underlying",
        {
            "greeks_ts_event_ns": "ts_event_ns",
            "greeks_event_id": "event_id",
            **{field: field for field in GREEK_FIELDS},
        },
    )
    with_greeks = _prevailing(in_order, greeks_book, "option_symbol", "option_symbol", max_age_ns)
    with_greeks = with_greeks.with_columns(
        (pl.col("ts_event_ns") - pl.col("_matched_ts")).alias("greeks_age_ns")
    ).drop("_matched_ts")
    quote_book = _book(
        quotes.select(QUOTE_COLUMNS),
        previous_quotes.select(QUOTE_COLUMNS),
        "symbol",
        "symbol",
        {"underlying_bid": "bid_px", "underlying_ask": "ask_px"},
    )
    joined = _prevailing(with_greeks, quote_book, "underlying", "symbol", max_age_ns)
    underlying_mid = (pl.col("underlying_bid") + pl.col("underlying_ask")) / 2
    option_mid = (pl.col("opt_bid") + pl.col("opt_ask")) / 2
    return joined.select(
        *OPTION_TRADE_COLUMNS,
        *GREEK_FIELDS,
        "greeks_ts_event_ns",
        "greeks_age_ns",
        "greeks_event_id",
        "underlying_bid",
        "underlying_ask",
        underlying_mid.alias("underlying_mid"),
        (pl.col("ts_event_ns") - pl.col("_matched_ts")).alias("underlying_quote_age_ns"),
        (pl.col("delta") * pl.col("size") * multiplier * underlying_mid).alias("delta_notional"),
        pl.when(option_mid > 0)
        .then((pl.col("price") - option_mid) / option_mid)
        .alias("trade_vs_mid"),
    )


def _empty(schema: TableSchema) -> pl.DataFrame:
    return pl.DataFrame(schema=schema.stored_schema)


GOLD_TRADES_NBBO_SCHEMA = trades_nbbo(
    _empty(STOCK_TRADES), _empty(STOCK_QUOTES), _empty(STOCK_QUOTES), _empty(STOCK_TRADES), 0
).schema
"""The columns and types of a `trades_nbbo` frame (`symbol`, the partition column, second)."""
GOLD_OPTIONS_ENRICHED_SCHEMA = options_enriched(
    _empty(OPTION_TRADES),
    _empty(GREEKS),
    _empty(GREEKS),
    _empty(STOCK_QUOTES),
    _empty(STOCK_QUOTES),
    0,
).schema
"""The columns and types of an `options_enriched` frame (`underlying` third)."""
