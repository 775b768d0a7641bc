"""A realistic, reproducible synthetic market session for every schema of the registry.

SPY/QQQ stock trades and quotes, SPY option trades and greeks, ES futures trades and MBP-10
books, and SPY level signals, on random-walk prices. A share of events is re-published (as a
redelivering producer would), some arrive late (event time hours in the past), and a few
messages are malformed, so every path of the platform is exercised.

Trades are made to be enriched as of their time (`lake_platform.transforms.asof`): a stock
trade prints at its symbol's prevailing quote (at the bid or the ask mostly, sometimes at the
mid), and no trade comes without a recent enough quote of its symbol, nor an option trade
without a recent greeks snapshot of its contract and quote of its underlying (see
`STALE_NS`).
"""

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

from lake_platform.timestamps import HOUR_NS

MIX = (
    ("stocks.quotes", 0.33),
    ("stocks.trades", 0.25),
    ("options.trades", 0.10),
    ("options.greeks", 0.08),
    ("futures.trades", 0.08),
    ("futures.mbp10", 0.11),
    ("levels.signals", 0.05),
)
START_PRICES = {"SPY": 681.0, "QQQ": 612.0, "IWM": 244.0, "AAPL": 272.0, "ESZ5": 6850.0}
LEVEL_KINDS = (("PM_HIGH", "PREMARKET_HIGH"), ("PM_LOW", "PREMARKET_LOW"), ("VWAP", "VWAP"))
STOCK_TICK = 0.01
HALF_SPREAD = 0.01
"""A stock quote's bid and ask lie this far from its mid."""
TRADE_SIDES = (("bid", 0.45), ("ask", 0.45), ("mid", 0.10))
"""Where in its prevailing quote a stock trade prints, and how often."""
STRIKES_AROUND_SPOT = 3
"""Option strikes traded: whole dollars this far from the spot, calls and puts (a small
chain, so that each contract's greeks are refreshed every few seconds at 100 events/s)."""
STALE_NS = 300 * 10**9
"""The oldest (in event time) a trade's symbol quote, or an option trade's greeks snapshot of
its contract or quote of its underlying, may be: when one is older or missing, the market
publishes it in the trade's place, so that every trade has one to be enriched with."""


@dataclass(frozen=True)
class SessionSpec:
    """What to generate: `rate` events/s over `minutes`, event times ending at `end_ns`."""

    minutes: float = 10.0
    rate: float = 100.0
    symbols: tuple[str, ...] = ("SPY", "QQQ")
    dup_rate: float = 0.02
    late_rate: float = 0.005
    bad_rate: float = 0.001
    seed: int = 0
    end_ns: int = 0

    @property
    def events(self) -> int:
        return int(self.minutes * 60 * self.rate)


@dataclass(frozen=True)
class Message:
    """One message to publish; `schema` is None for a deliberately malformed one."""

    subject: str
    payload: bytes
    schema: str | None


class Market:
    """Random-walk prices and the events they produce.

    It holds each symbol's prevailing quote and the event time of the latest quote of each
    symbol and greeks snapshot of each option contract: a late event (event time before the
    latest) moves none of them, as it is not the latest in the lake either.
    """

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.prices = {s: START_PRICES.get(s, 100.0 + 10 * i) for i, s in enumerate(spec.symbols)}
        self.prices["ESZ5"] = START_PRICES["ESZ5"]
        self.seq = 0
        self.quotes: dict[str, dict[str, float]] = {}
        """Each symbol's prevailing quote: `bid`, `ask` and `mid`."""
        self.quoted_ns: dict[str, int] = {}
        self.greeks_ns: dict[str, int] = {}

    def _walk(self, symbol: str, tick: float) -> float:
        price = self.prices[symbol] + self.rng.choice((-1, 0, 0, 1)) * tick
        self.prices[symbol] = round(max(price, tick), 2)
        return self.prices[symbol]

    @staticmethod
    def _fresh(latest_ns: dict[str, int], key: str, ts: int) -> bool:
        return key in latest_ns and ts - latest_ns[key] <= STALE_NS

    @staticmethod
    def _seen(latest_ns: dict[str, int], key: str, ts: int) -> bool:
        """Record an event of `key` at `ts`; whether it is the latest of `key`."""
        if ts < latest_ns.get(key, ts):
            return False
        latest_ns[key] = ts
        return True

    def event(self, schema: str, ts: int) -> tuple[str, str, dict[str, object]]:
        """The schema, subject and fields of one event of `schema` at `ts`, or of the quote
        or greeks snapshot a trade of `schema` needs first (see `STALE_NS`)."""
        self.seq += 1
        rng = self.rng
        symbol = rng.choice(self.spec.symbols)
        base: dict[str, object] = {"ts_event_ns": ts, "seq": self.seq, "source": "sim"}
        if schema == "stocks.trades" and self._fresh(self.quoted_ns, symbol, ts):
            fields = self._stock_trade(symbol)
            return "stocks.trades", f"market.stocks.trades.{symbol}", {**base, **fields}
        if schema in ("stocks.trades", "stocks.quotes"):
            fields = self._quote(symbol, ts)
            return "stocks.quotes", f"market.stocks.quotes.{symbol}", {**base, **fields}
        underlying = self.spec.symbols[0]
        if schema == "options.trades" and not self._fresh(self.quoted_ns, underlying, ts):
            fields = self._quote(underlying, ts)
            return "stocks.quotes", f"market.stocks.quotes.{underlying}", {**base, **fields}
        spot = self.prices[underlying]
        if schema in ("options.trades", "options.greeks"):
            contract = self._contract(underlying, spot)
            if schema == "options.trades" and self._fresh(
                self.greeks_ns, str(contract["option_symbol"]), ts
            ):
                fields = {**contract, **self._option_trade()}
                return "options.trades", f"market.options.trades.{underlying}", {**base, **fields}
            fields = {**contract, **self._greeks(contract, spot, ts)}
            return "options.greeks", f"market.options.greeks.{underlying}", {**base, **fields}
        if schema == "futures.trades":
            price = self._walk("ESZ5", 0.25)
            fields = {
                "symbol": "ESZ5",
                "price": price,
                "size": rng.randrange(1, 20),
                "aggressor": rng.choice((-1, 1)),
                "exchange": "XCME",
            }
            return schema, "market.futures.trades.ESZ5", {**base, **fields}
        if schema == "futures.mbp10":
            mid = self.prices["ESZ5"]
            levels = [
                {
                    "bid_px": mid - 0.25 * (i + 1),
                    "bid_sz": rng.randrange(1, 200),
                    "ask_px": mid + 0.25 * i,
                    "ask_sz": rng.randrange(1, 200),
                }
                for i in range(10)
            ]
            fields = {
                "symbol": "ESZ5",
                "is_snapshot": False,
                "action": rng.choice("ACMT"),
                "side": rng.choice("AB"),
                "action_price": mid,
                "action_size": rng.randrange(1, 50),
                "levels": levels,
            }
            return schema, "market.futures.mbp10.ESZ5", {**base, **fields}
        fields = self._signal(underlying, spot)
        return schema, f"levels.signals.{underlying}", {**base, **fields}

    def _quote(self, symbol: str, ts: int) -> dict[str, object]:
        """A quote around the walked price, which prevails from `ts` unless it is late."""
        mid = self._walk(symbol, STOCK_TICK)
        quote = {"bid": round(mid - HALF_SPREAD, 2), "ask": round(mid + HALF_SPREAD, 2), "mid": mid}
        if self._seen(self.quoted_ns, symbol, ts):
            self.quotes[symbol] = quote
        rng = self.rng
        return {
            "symbol": symbol,
            "bid_px": quote["bid"],
            "bid_sz": rng.randrange(1, 40),
            "ask_px": quote["ask"],
            "ask_sz": rng.randrange(1, 40),
            "bid_exch": rng.randrange(1, 20),
            "ask_exch": rng.randrange(1, 20),
        }

    def _stock_trade(self, symbol: str) -> dict[str, object]:
        """A trade at the bid, the ask or the mid of `symbol`'s prevailing quote."""
        rng = self.rng
        side = rng.choices([side for side, _ in TRADE_SIDES], [w for _, w in TRADE_SIDES])[0]
        return {
            "symbol": symbol,
            "price": self.quotes[symbol][side],
            "size": rng.choice((1, 10, 100, 200, 500)),
            "exchange": rng.randrange(1, 20),
            "conditions": [rng.choice((0, 12, 14, 37))],
        }

    def _contract(self, underlying: str, spot: float) -> dict[str, object]:
        strike = round(spot) + self.rng.randrange(-STRIKES_AROUND_SPOT, STRIKES_AROUND_SPOT + 1)
        right = self.rng.choice(("C", "P"))
        return {
            "underlying": underlying,
            "exp_date": "2025-12-19",
            "strike": float(strike),
            "right": right,
            "option_symbol": f"O:{underlying}251219{right}{strike * 1000:08d}",
        }

    def _option_trade(self) -> dict[str, object]:
        rng = self.rng
        price = round(max(0.05, rng.gauss(2.0, 0.8)), 2)
        return {
            "price": price,
            "size": rng.randrange(1, 50),
            "opt_bid": round(price - 0.02, 2),
            "opt_ask": round(price + 0.02, 2),
            "aggressor": rng.choice((-1, 0, 1)),
        }

    def _greeks(self, contract: dict[str, object], spot: float, ts: int) -> dict[str, object]:
        """A greeks snapshot of `contract` at `ts`."""
        self._seen(self.greeks_ns, str(contract["option_symbol"]), ts)
        rng = self.rng
        return {
            "delta": round(rng.uniform(0.05, 0.95) * (1 if contract["right"] == "C" else -1), 4),
            "gamma": round(rng.uniform(0.001, 0.1), 4),
            "theta": round(-rng.uniform(0.1, 3), 4),
            "vega": round(rng.uniform(0.01, 0.3), 4),
            "implied_vol": round(rng.uniform(0.1, 0.3), 4),
            "underlying_price": spot,
            "open_interest": rng.randrange(100, 50_000),
        }

    def _signal(self, underlying: str, spot: float) -> dict[str, object]:
        rng = self.rng
        levels = []
        for level_id, kind in LEVEL_KINDS[: rng.randrange(1, len(LEVEL_KINDS) + 1)]:
            price = round(spot + rng.uniform(-3, 3), 2)
            level: dict[str, object] = {
                "level_id": level_id,
                "level_kind": kind,
                "level_price": price,
                "direction": "UP" if price > spot else "DOWN",
                "distance": round(abs(price - spot), 2),
                "break_score_raw": round(rng.random(), 3),
            }
            if rng.random() < 0.7:
                level["barrier"] = {
                    "state": rng.choice(("WALL", "WEAK", "ABSORBING")),
                    "delta_liq": round(rng.gauss(0, 1000), 1),
                    "replenishment_ratio": round(rng.random(), 3),
                }
            if rng.random() < 0.7:
                level["tape"] = {
                    "imbalance": round(rng.uniform(-1, 1), 3),
                    "buy_vol": rng.randrange(1_000, 90_000),
                    "sell_vol": rng.randrange(1_000, 90_000),
                    "sweep_detected": rng.random() < 0.1,
                }
            if rng.random() < 0.5:
                level["fuel"] = {
                    "effect": rng.choice(("AMPLIFY", "DAMPEN")),
                    "net_dealer_gamma": round(rng.gauss(0, 5e8)),
                }
            if rng.random() < 0.5:
                level["runway"] = {
                    "direction": level["direction"],
                    "quality": rng.choice(("CLEAR", "CHOPPY")),
                }
            levels.append(level)
        return {
            "underlying": underlying,
            "spot": spot,
            "bid": round(spot - 0.01, 2),
            "ask": round(spot + 0.01, 2),
            "levels": levels,
        }


MALFORMED = (
    ("market.stocks.trades.SPY", b"{not json"),
    ("market.stocks.trades.SPY", b'{"symbol": "SPY", "price": 1.0}'),
    ("market.stocks.quotes.QQQ", b'{"ts_event_ns": 1, "symbol": "QQQ"}'),
    ("market.options.trades.SPY", b"[1, 2, 3]"),
)


def session(spec: SessionSpec) -> Iterator[Message]:
    """The session's messages in publishing order: event times spread over the `minutes`
    before `spec.end_ns`, increasing (each event at a random time of its own slot: a quote
    prevails from its time on, in the lake as in the market), with re-publishes, late events
    and malformed messages mixed in."""
    market = Market(spec)
    rng = random.Random(spec.seed + 1)
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    span_ns = int(spec.minutes * 60 * 10**9)
    start_ns = spec.end_ns - span_ns
    count = spec.events
    slot_ns = max(span_ns // max(count, 1), 1)
    for i in range(count):
        ts = start_ns + span_ns * i // count + rng.randrange(slot_ns)
        if rng.random() < spec.late_rate:
            ts -= rng.choice((1, 2)) * HOUR_NS
        if rng.random() < spec.bad_rate:
            subject, payload = rng.choice(MALFORMED)
            yield Message(subject, payload, None)
            continue
        schema, subject, fields = market.event(rng.choices(names, weights)[0], ts)
        message = Message(subject, json.dumps(fields).encode(), schema)
        yield message
        if rng.random() < spec.dup_rate:
            yield message
