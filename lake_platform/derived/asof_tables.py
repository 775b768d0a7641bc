"""The as-of enriched Gold tables: every stock trade with the quote that prevailed
(`gold/stocks/trades_nbbo`), every option trade with its greeks and its underlying's quote
(`gold/options/trades_enriched`).

Each is one `GoldTable` declaration: its source (the Silver trades of the hour, one partition
value at a time), its lookups (the value's Silver quotes or greeks of the hour and of the hour
before, read from the same pinned snapshots), the pure transform of `transforms/asof.py`, and
its checks: besides the common ones, no joined time after its trade (`no_look_ahead`), every
match the latest one (`match_is_latest`, a sorted search over the lookups independent of the
join), and one row per Silver trade.

`LAKE_ASOF_MAX_AGE` and `LAKE_OPTION_MULTIPLIER` are read from the environment when an hour is
rebuilt or checked (`_settings`), so a wrong value fails that run with its one-line error,
never the import of the tables.
"""

from collections.abc import Mapping

import polars as pl

from lake_platform.asof_checks import AsofMatch, match_is_latest, no_look_ahead
from lake_platform.checks import (
    GREEKS_ARE_LATEST,
    NO_LOOK_AHEAD,
    QUOTE_IS_LATEST,
    UNDERLYING_QUOTE_IS_LATEST,
    CheckOutcome,
)
from lake_platform.derived.declaration import (
    FileCheck,
    GoldTable,
    Lookup,
    LookupCheck,
    Reconciliation,
)
from lake_platform.schemas import TableSchema
from lake_platform.schemas.registry import partition_column_last
from lake_platform.settings import LakeSettings
from lake_platform.transforms.asof import (
    GOLD_OPTIONS_ENRICHED_SCHEMA,
    GOLD_TRADES_NBBO_SCHEMA,
    GREEK_COLUMNS,
    GREEKS,
    GREEKS_MATCH,
    OPTION_TRADE_COLUMNS,
    OPTION_TRADES,
    QUOTE_COLUMNS,
    QUOTE_MATCH,
    STOCK_QUOTES,
    STOCK_TRADES,
    TRADE_COLUMNS,
    UNDERLYING_MATCH,
    options_enriched,
    trades_nbbo,
)
from lake_platform.transforms.silver import SILVER_ORDER

ROWS_MATCH_SILVER = "row_count_matches_silver_trades"
PREVIOUS_HOUR = -1
"""The hour before the rebuilt one: where an hour's first trades find their quote."""


def _settings() -> LakeSettings:
    return LakeSettings.from_env()


def _without(columns: tuple[str, ...], partition_column: str) -> tuple[str, ...]:
    return tuple(column for column in columns if column != partition_column)


def _lookup(name: str, schema: TableSchema, columns: tuple[str, ...], hour_offset: int) -> Lookup:
    """A lookup of `columns` of Silver `schema`'s table (its partition column from the folder)."""
    partition = schema.partition_column
    read = _without(columns, partition)
    stored = schema.stored_schema
    return Lookup(
        name=name,
        source=f"silver/{schema.table}",
        partition_column=partition,
        columns=read,
        schema=pl.Schema({**{column: stored[column] for column in read}, partition: pl.String()}),
        hour_offset=hour_offset,
    )


def _latest(match: AsofMatch, *lookups: str) -> LookupCheck:
    """The check that each row holds the latest `match` among the value-hour's `lookups`."""

    def check(frame: pl.DataFrame, path: str, frames: Mapping[str, pl.DataFrame]) -> CheckOutcome:
        inputs = [frames[name] for name in lookups]
        return match_is_latest(frame, inputs, match, _settings().asof_max_age_ns, path)

    return check


def _no_look_ahead(*matches: AsofMatch) -> FileCheck:
    """The check that no time joined by `matches` lies after its trade."""
    return lambda frame, path, _: no_look_ahead(frame, matches, path)


ONE_ROW_PER_TRADE = Reconciliation("rows (Silver trades of the hour)", pl.len(), pl.len())

QUOTE_DOCS = {
    "bid_px": "Bid of the prevailing quote (null without one within LAKE_ASOF_MAX_AGE).",
    "bid_sz": "Bid size of the prevailing quote.",
    "ask_px": "Ask of the prevailing quote.",
    "ask_sz": "Ask size of the prevailing quote.",
    "quote_ts_event_ns": "Event time of the prevailing quote: the symbol's last Silver quote "
    "at or before the trade (this hour or the previous one).",
    "quote_age_ns": "Trade time minus the prevailing quote's time, ns (0: same nanosecond).",
    "quote_event_id": "event_id of the prevailing quote in silver/stocks/quotes.",
    "mid": "(bid_px + ask_px) / 2 of the prevailing quote.",
    "spread": "ask_px - bid_px of the prevailing quote (negative when crossed).",
    "spread_bps": "spread / mid in basis points (null unless mid > 0).",
    "trade_sign": "+1 buy (above mid), -1 sell (below mid); at the mid or without a quote the "
    "tick test against the last different price (this hour or the previous); 0 undecidable.",
    "effective_spread": "2 * |price - mid|.",
    "crossed": "Whether the prevailing quote is crossed (bid > ask).",
    "locked": "Whether the prevailing quote is locked (bid = ask).",
}


def _trades_nbbo(
    trades: pl.DataFrame,
    quotes: pl.DataFrame,
    previous_quotes: pl.DataFrame,
    previous_trades: pl.DataFrame,
) -> pl.DataFrame:
    max_age_ns = _settings().asof_max_age_ns
    return trades_nbbo(trades, quotes, previous_quotes, previous_trades, max_age_ns)


GOLD_TRADES_NBBO = GoldTable(
    description=(
        "Every Silver stock trade with the quote that prevailed: the symbol's last Silver "
        "quote at or before the trade (looking into the previous hour), within "
        "`LAKE_ASOF_MAX_AGE`; mid, spread, trade sign (quote rule, then tick test), effective "
        "spread, crossed/locked flags. One row per trade, in Silver order."
    ),
    column_docs=QUOTE_DOCS,
    source=f"silver/{STOCK_TRADES.table}",
    target="gold/stocks/trades_nbbo",
    partition_column=STOCK_TRADES.partition_column,
    source_columns=_without(TRADE_COLUMNS, STOCK_TRADES.partition_column),
    transform=_trades_nbbo,
    schema=partition_column_last(GOLD_TRADES_NBBO_SCHEMA, STOCK_TRADES.partition_column),
    order=SILVER_ORDER,
    unique_keys=("event_id",),
    extra_file_checks={NO_LOOK_AHEAD: _no_look_ahead(QUOTE_MATCH)},
    lookups=(
        _lookup("quotes", STOCK_QUOTES, QUOTE_COLUMNS, 0),
        _lookup("previous_quotes", STOCK_QUOTES, QUOTE_COLUMNS, PREVIOUS_HOUR),
        _lookup("previous_trades", STOCK_TRADES, (*SILVER_ORDER, "price"), PREVIOUS_HOUR),
    ),
    lookup_checks={QUOTE_IS_LATEST: _latest(QUOTE_MATCH, "previous_quotes", "quotes")},
    reconciliations={ROWS_MATCH_SILVER: ONE_ROW_PER_TRADE},
)


def _options_enriched(
    option_trades: pl.DataFrame,
    greeks: pl.DataFrame,
    previous_greeks: pl.DataFrame,
    quotes: pl.DataFrame,
    previous_quotes: pl.DataFrame,
) -> pl.DataFrame:
    settings = _settings()
    return options_enriched(
        option_trades,
        greeks,
        previous_greeks,
        quotes,
        previous_quotes,
        settings.asof_max_age_ns,
        settings.option_multiplier,
    )


GOLD_OPTIONS_ENRICHED = GoldTable(
    description=(
        "Every Silver option trade with the latest greeks snapshot of its contract and its "
        "underlying's prevailing stock quote at or before the trade (looking into the "
        "previous hour), within `LAKE_ASOF_MAX_AGE`; delta notional and the price against "
        "the option's own mid. One row per trade, in Silver order."
    ),
    column_docs={
        "delta": "Delta of the latest greeks snapshot at or before the trade (null: none).",
        "gamma": "Gamma of that greeks snapshot.",
        "theta": "Theta of that greeks snapshot (per day).",
        "vega": "Vega of that greeks snapshot.",
        "implied_vol": "Implied volatility of that greeks snapshot.",
        "greeks_ts_event_ns": "Event time of that greeks snapshot.",
        "greeks_age_ns": "Trade time minus the greeks snapshot's time, ns.",
        "greeks_event_id": "event_id of that snapshot in silver/options/greeks_snapshots.",
        "underlying_bid": "Bid of the underlying's prevailing stock quote.",
        "underlying_ask": "Ask of the underlying's prevailing stock quote.",
        "underlying_mid": "(underlying_bid + underlying_ask) / 2.",
        "underlying_quote_age_ns": "Trade time minus the underlying quote's time, ns.",
        "delta_notional": "delta * size * LAKE_OPTION_MULTIPLIER (100) * underlying_mid.",
        "trade_vs_mid": "(price - option mid) / option mid, the mid from opt_bid and opt_ask "
        "(null unless both are present and the mid is positive).",
    },
    source=f"silver/{OPTION_TRADES.table}",
    target="gold/options/trades_enriched",
    partition_column=OPTION_TRADES.partition_column,
    source_columns=_without(OPTION_TRADE_COLUMNS, OPTION_TRADES.partition_column),
    transform=_options_enriched,
    schema=partition_column_last(GOLD_OPTIONS_ENRICHED_SCHEMA, OPTION_TRADES.partition_column),
    order=SILVER_ORDER,
    unique_keys=("event_id",),
    extra_file_checks={NO_LOOK_AHEAD: _no_look_ahead(GREEKS_MATCH, UNDERLYING_MATCH)},
    lookups=(
        _lookup("greeks", GREEKS, GREEK_COLUMNS, 0),
        _lookup("previous_greeks", GREEKS, GREEK_COLUMNS, PREVIOUS_HOUR),
        _lookup("quotes", STOCK_QUOTES, QUOTE_COLUMNS, 0),
        _lookup("previous_quotes", STOCK_QUOTES, QUOTE_COLUMNS, PREVIOUS_HOUR),
    ),
    lookup_checks={
        GREEKS_ARE_LATEST: _latest(GREEKS_MATCH, "previous_greeks", "greeks"),
        UNDERLYING_QUOTE_IS_LATEST: _latest(UNDERLYING_MATCH, "previous_quotes", "quotes"),
    },
    reconciliations={ROWS_MATCH_SILVER: ONE_ROW_PER_TRADE},
)
