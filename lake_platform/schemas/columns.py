"""What each column of the lake holds, one short line per name: the UI's column schema.

A column name means the same in every table that has it (`price` is a trade's price in
stock, option and future trades alike), so descriptions are kept by name; a table that gives
a name another meaning says so in its declaration (`DerivedTable.column_docs`). Regular
families are generated: the flattened book levels of `futures/mbp10` (`bid_px_1` …
`ask_sz_10`, from `BOOK_LEVEL_COLUMNS`).
`describe_columns` refuses a column it has no line for, so a new field cannot reach the UI
undescribed (the tests describe every table).
"""

import re
from collections.abc import Iterable, Mapping

COLUMNS: dict[str, str] = {
    # Every event
    "ts_event_ns": "Event time, ns since the Unix epoch (UTC); picks the hour partition.",
    "ts_recv_ns": "Time the publisher received the event, ns since the Unix epoch (UTC).",
    "source": "Where the event came from: direct_feed, replay or sim.",
    "event_id": "Identity of the event: hash of its identifying fields (32 hex characters).",
    "seq": "Publisher's sequence number of the event, when it sends one.",
    # Bronze provenance
    "_stream_seq": "JetStream sequence of the message the row was decoded from.",
    "_subject": "Full NATS subject of that message.",
    # Instruments
    "symbol": "Instrument symbol, e.g. SPY; the partition folder (symbol=…).",
    "underlying": "Underlying symbol of the option or signal; the partition folder.",
    "option_symbol": "OCC option symbol of the contract.",
    "exp_date": "Expiration date of the option contract.",
    "strike": "Strike price of the option contract.",
    "right": "Option right: C (call) or P (put).",
    # Trades
    "price": "Trade price.",
    "size": "Trade size (shares or contracts).",
    "exchange": "Exchange that reported the trade.",
    "conditions": "Trade condition codes of the feed.",
    "aggressor": "Side that initiated the trade: 1 buy, -1 sell, 0 unknown.",
    "opt_bid": "Option's best bid at the time of the trade.",
    "opt_ask": "Option's best ask at the time of the trade.",
    # Quotes and book
    "bid_px": "Best bid price.",
    "bid_sz": "Size at the best bid.",
    "ask_px": "Best ask price.",
    "ask_sz": "Size at the best ask.",
    "bid_exch": "Exchange of the best bid.",
    "ask_exch": "Exchange of the best ask.",
    "is_snapshot": "Whether the message is a full book snapshot rather than an update.",
    "action": "Book action: A add, C cancel, M modify, T trade.",
    "side": "Side of the action: A ask, B bid, N none.",
    "action_price": "Price of the book action.",
    "action_size": "Size of the book action.",
    # Greeks
    "delta": "Option delta.",
    "gamma": "Option gamma.",
    "theta": "Option theta (per day).",
    "vega": "Option vega.",
    "implied_vol": "Implied volatility (annualised, as a fraction).",
    "underlying_price": "Price of the underlying used for the greeks.",
    "open_interest": "Open interest of the contract.",
    # Level signals: context of the signal
    "spot": "Spot price of the underlying when the signal was computed.",
    "bid": "Best bid of the underlying when the signal was computed.",
    "ask": "Best ask of the underlying when the signal was computed.",
    "levels": "The signal's price levels (nested; one row per level in Gold).",
    # Level signals: one level (Gold flattens nested objects as {object}_{field})
    "level_index": "Position of the level in the signal's list, from 0.",
    "level_id": "Identifier of the price level.",
    "level_kind": "Kind of level, e.g. PREMARKET_HIGH, STRIKE.",
    "level_price": "Price of the level.",
    "direction": "Where the level lies from spot: UP or DOWN.",
    "distance": "Distance from spot to the level.",
    "break_score_raw": "Raw score that price breaks through the level.",
    "break_score_smooth": "Smoothed break score.",
    "signal": "Signal at the level, e.g. BREAK.",
    "confidence": "Confidence of the signal, e.g. MEDIUM.",
    "barrier_state": "Liquidity barrier at the level: state (WALL, WEAK, ABSORBING).",
    "barrier_delta_liq": "Liquidity barrier: change in resting liquidity.",
    "barrier_replenishment_ratio": "Liquidity barrier: replenished over consumed liquidity.",
    "barrier_added": "Liquidity barrier: size added.",
    "barrier_canceled": "Liquidity barrier: size canceled.",
    "barrier_filled": "Liquidity barrier: size filled.",
    "tape_imbalance": "Tape at the level: buy/sell volume imbalance.",
    "tape_buy_vol": "Tape at the level: buy volume.",
    "tape_sell_vol": "Tape at the level: sell volume.",
    "tape_velocity": "Tape at the level: trading velocity.",
    "tape_sweep_detected": "Tape at the level: whether a sweep was detected.",
    "fuel_effect": "Dealer positioning at the level: effect (AMPLIFY, DAMPEN).",
    "fuel_net_dealer_gamma": "Dealer positioning: net dealer gamma.",
    "fuel_call_wall": "Dealer positioning: call wall price.",
    "fuel_put_wall": "Dealer positioning: put wall price.",
    "runway_direction": "Runway beyond the level: direction (UP, DOWN).",
    "runway_next_level_price": "Runway: price of the next level.",
    "runway_distance": "Runway: distance to the next level.",
    "runway_quality": "Runway: quality of the path to the next level (CLEAR, CHOPPY).",
}
"""Descriptions by column name, for every table that has the column."""

BOOK_LEVEL_COLUMNS = {
    "bid_px": "Bid price",
    "bid_sz": "Bid size",
    "ask_px": "Ask price",
    "ask_sz": "Ask size",
}
"""Fields of one order-book level, stored flattened as `{field}_{level}` (level 1 is best)."""
_BOOK_LEVEL = re.compile(rf"({'|'.join(BOOK_LEVEL_COLUMNS)})_(\d+)")


def describe_column(table: str, name: str, own: Mapping[str, str] | None = None) -> str:
    """The description of column `name` of the table at lake path `table`: its meaning in that
    table (`own`, from the table's declaration) or the shared one."""
    own = own or {}
    if name in own:
        return own[name]
    if name in COLUMNS:
        return COLUMNS[name]
    level = _BOOK_LEVEL.fullmatch(name)
    if level is not None:
        field, index = level.groups()
        return f"{BOOK_LEVEL_COLUMNS[field]} at book level {index} (1 is the best)."
    raise KeyError(f"column {name!r} of {table} has no description in schemas/columns.py")


def describe_columns(
    table: str, names: Iterable[str], own: Mapping[str, str] | None = None
) -> Mapping[str, str]:
    """Each column's description, in order (KeyError for a column without one)."""
    return {name: describe_column(table, name, own) for name in names}
