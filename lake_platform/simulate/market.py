"""A realistic, reproducible synthetic market session for every schema of the registry.

SPY/QQQ stock trades and quotes, SPY option trades and greeks, ES futures trades and MBP-10
books, and SPY level signals, on random-walk prices. A share of events is re-published (as a
redelivering producer would), some arrive late (event time hours in the past), and a few
messages are malformed, so every path of the platform is exercised.
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
    """Random-walk prices and the events they produce."""

    def __init__(self, spec: SessionSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.prices = {s: START_PRICES.get(s, 100.0 + 10 * i) for i, s in enumerate(spec.symbols)}
        self.prices["ESZ5"] = START_PRICES["ESZ5"]
        self.seq = 0

    def _walk(self, symbol: str, tick: float) -> float:
        price = self.prices[symbol] + self.rng.choice((-1, 0, 0, 1)) * tick
        self.prices[symbol] = round(max(price, tick), 2)
        return self.prices[symbol]

    def event(self, schema: str, ts: int) -> tuple[str, dict[str, object]]:
        """The subject and fields of one event of `schema` at `ts`."""
        self.seq += 1
        rng = self.rng
        symbol = rng.choice(self.spec.symbols)
        base: dict[str, object] = {"ts_event_ns": ts, "seq": self.seq, "source": "sim"}
        if schema == "stocks.trades":
            price = self._walk(symbol, 0.01)
            fields = {
                "symbol": symbol,
                "price": price,
                "size": rng.choice((1, 10, 100, 200, 500)),
                "exchange": rng.randrange(1, 20),
                "conditions": [rng.choice((0, 12, 14, 37))],
            }
            return f"market.stocks.trades.{symbol}", {**base, **fields}
        if schema == "stocks.quotes":
            mid = self._walk(symbol, 0.01)
            fields = {
                "symbol": symbol,
                "bid_px": round(mid - 0.01, 2),
                "bid_sz": rng.randrange(1, 40),
                "ask_px": round(mid + 0.01, 2),
                "ask_sz": rng.randrange(1, 40),
                "bid_exch": rng.randrange(1, 20),
                "ask_exch": rng.randrange(1, 20),
            }
            return f"market.stocks.quotes.{symbol}", {**base, **fields}
        spot = self.prices[self.spec.symbols[0]]
        underlying = self.spec.symbols[0]
        if schema in ("options.trades", "options.greeks"):
            strike = round(spot) + rng.randrange(-5, 6)
            right = rng.choice(("C", "P"))
            contract = {
                "underlying": underlying,
                "exp_date": "2025-12-19",
                "strike": float(strike),
                "right": right,
                "option_symbol": f"O:{underlying}251219{right}{strike * 1000:08d}",
            }
            if schema == "options.trades":
                price = round(max(0.05, rng.gauss(2.0, 0.8)), 2)
                fields = {
                    "price": price,
                    "size": rng.randrange(1, 50),
                    "opt_bid": round(price - 0.02, 2),
                    "opt_ask": round(price + 0.02, 2),
                    "aggressor": rng.choice((-1, 0, 1)),
                }
            else:
                delta = round(rng.uniform(0.05, 0.95) * (1 if right == "C" else -1), 4)
                fields = {
                    "delta": delta,
                    "gamma": round(rng.uniform(0.001, 0.1), 4),
                    "theta": round(-rng.uniform(0.1, 3), 4),
                    "vega": round(rng.uniform(0.01, 0.3), 4),
                    "implied_vol": round(rng.uniform(0.1, 0.3), 4),
                    "underlying_price": spot,
                    "open_interest": rng.randrange(100, 50_000),
                }
            subject = "trades" if schema == "options.trades" else "greeks"
            return f"market.options.{subject}.{underlying}", {**base, **contract, **fields}
        if schema == "futures.trades":
            price = self._walk("ESZ5", 0.25)
            fields = {
                "symbol": "ESZ5",
                "price": price,
                "size": rng.randrange(1, 20),
                "aggressor": rng.choice((-1, 1)),
                "exchange": "XCME",
            }
            return "market.futures.trades.ESZ5", {**base, **fields}
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
            return "market.futures.mbp10.ESZ5", {**base, **fields}
        return f"levels.signals.{underlying}", {**base, **self._signal(underlying, spot)}

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
    before `spec.end_ns`, with re-publishes, late events and malformed messages mixed in."""
    market = Market(spec)
    rng = random.Random(spec.seed + 1)
    names = [name for name, _ in MIX]
    weights = [weight for _, weight in MIX]
    span_ns = int(spec.minutes * 60 * 10**9)
    start_ns = spec.end_ns - span_ns
    count = spec.events
    for i in range(count):
        ts = start_ns + span_ns * i // max(count, 1) + rng.randrange(1_000_000)
        if rng.random() < spec.late_rate:
            ts -= rng.choice((1, 2)) * HOUR_NS
        if rng.random() < spec.bad_rate:
            subject, payload = rng.choice(MALFORMED)
            yield Message(subject, payload, None)
            continue
        schema = rng.choices(names, weights)[0]
        subject, fields = market.event(schema, ts)
        message = Message(subject, json.dumps(fields).encode(), schema)
        yield message
        if rng.random() < spec.dup_rate:
            yield message
