"""The market simulator: reproducible, valid for every schema, with the mess it promises."""

import asyncio
import json
import time
from collections import Counter

import nats
import polars as pl
import pytest

from lake_platform.cli import main
from lake_platform.schemas import BY_NAME, decode_batch
from lake_platform.simulate.market import Message, SessionSpec, session
from lake_platform.simulate.publisher import replay_file
from lake_platform.timestamps import HOUR_NS
from lake_platform.transforms.asof import options_enriched, trades_nbbo
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.session import EARLIEST_NS

END_NS = 1_765_900_000 * 10**9


def test_same_seed_same_session_and_every_schema_present():
    spec = SessionSpec(minutes=1, rate=200, seed=3, end_ns=END_NS)
    first, second = list(session(spec)), list(session(spec))
    assert first == second
    assert list(session(SessionSpec(minutes=1, rate=200, seed=4, end_ns=END_NS))) != first
    schemas = Counter(message.schema for message in first)
    assert set(schemas) == {*BY_NAME, None}


def test_every_simulated_message_decodes_except_the_malformed_ones():
    messages = list(session(SessionSpec(minutes=1, rate=200, seed=1, end_ns=END_NS)))
    for name in BY_NAME:
        payloads = [m.payload for m in messages if m.schema == name]
        decoded = decode_batch(
            BY_NAME[name],
            payloads,
            received_ns=[END_NS] * len(payloads),
            earliest_ns=EARLIEST_NS,
            now_ns=END_NS,
        )
        assert decoded.rejections == [], (name, decoded.rejections[:1])
    republished = len(messages) - len({(m.subject, m.payload) for m in messages})
    assert 0.01 * len(messages) < republished < 0.04 * len(messages)
    late = [
        m
        for m in messages
        if m.schema and json.loads(m.payload)["ts_event_ns"] < END_NS - 3_600 * 10**9
    ]
    assert late


def test_replay_file_reads_subjects_and_rejects_bad_lines_with_their_number(tmp_path):
    good = tmp_path / "session.jsonl"
    good.write_text(
        json.dumps({"subject": "market.stocks.trades.SPY", "data": {"symbol": "SPY"}})
        + "\n\n"
        + json.dumps({"subject": "market.crypto.x", "data": {}})
        + "\n"
    )
    replayed = list(replay_file(good))
    assert [(m.subject, m.schema) for m in replayed] == [
        ("market.stocks.trades.SPY", "stocks.trades"),
        ("market.crypto.x", None),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"subject": "a", "data": {}}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2:"):
        list(replay_file(bad))


@pytest.mark.slow
def test_publish_command_sends_the_session(nats_server, monkeypatch, capsys):

    monkeypatch.setenv("NATS_URL", nats_server.url)
    assert main(["publish", "--minutes", "0.1", "--rate", "100", "--seed", "2"]) == 0
    published = int(capsys.readouterr().out.split()[1].replace(",", ""))
    assert published == len(
        list(session(SessionSpec(minutes=0.1, rate=100, seed=2, end_ns=time.time_ns())))
    )

    async def stored() -> int:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        total = sum([(await js.stream_info(s)).state.messages for s in ("MARKET", "SIGNALS")])
        await nc.close()
        return total

    assert asyncio.run(stored()) == published


def silver_hour(messages: list[Message], name: str, end_ns: int) -> pl.DataFrame:
    """The Silver rows the lake makes of `messages` of schema `name` for the hour before
    `end_ns`: decoded, one per `event_id`, in Silver order."""
    payloads = [message.payload for message in messages if message.schema == name]
    rows = decode_batch(
        BY_NAME[name],
        payloads,
        received_ns=[end_ns] * len(payloads),
        earliest_ns=EARLIEST_NS,
        now_ns=end_ns,
    ).rows
    silver = deduplicate(rows.with_columns(_stream_seq=pl.int_range(pl.len(), dtype=pl.Int64)))
    return silver.filter(pl.col("ts_event_ns").is_between(end_ns - HOUR_NS, end_ns, "left"))


def enrichment_shares(messages: list[Message], end_ns: int) -> dict[str, float]:
    """What share of the hour's trades (before `end_ns`) the as-of enrichment matches, with
    the previous hour empty and `LAKE_ASOF_MAX_AGE`'s default, and how they are signed."""
    hour = {name: silver_hour(messages, name, end_ns) for name in BY_NAME}
    trades, quotes = hour["stocks.trades"], hour["stocks.quotes"]
    greeks = hour["options.greeks"]
    nbbo = trades_nbbo(trades, quotes, quotes.clear(), trades.clear(), HOUR_NS)
    enriched = options_enriched(
        hour["options.trades"], greeks, greeks.clear(), quotes, quotes.clear(), HOUR_NS
    )
    assert nbbo.height > 100 and enriched.height > 30
    quoted = nbbo.filter(pl.col("quote_event_id").is_not_null())
    matched = pl.col("greeks_event_id").is_not_null() & pl.col("underlying_bid").is_not_null()
    return {
        "stock trades with a quote": quoted.height / nbbo.height,
        "quoted trades within bid..ask": quoted.select(
            pl.col("price").is_between("bid_px", "ask_px").mean()
        ).item(),
        "quoted trades off the mid": quoted.select(
            (pl.col("price") != pl.col("mid")).mean()
        ).item(),
        "stock trades signed": nbbo.select((pl.col("trade_sign").abs() == 1).mean()).item(),
        "option trades with greeks and quote": enriched.select(matched.mean()).item(),
    }


@pytest.mark.parametrize(
    ("minutes", "rate"),
    [(60, 10), (20, 1)],
    ids=["an hour at 10 events per second", "20 minutes at 1 event per second"],
)
def test_simulated_trades_find_their_quote_and_greeks(minutes, rate):
    """The session fills one hour partition (the previous one empty): its trades are
    enriched as `make run`'s are. At 1 event/s each option contract's greeks come minutes
    apart: a trade still finds a snapshot of its contract."""
    end_ns = END_NS // HOUR_NS * HOUR_NS
    messages = list(session(SessionSpec(minutes=minutes, rate=rate, seed=7, end_ns=end_ns)))
    shares = enrichment_shares(messages, end_ns)
    least = {
        "stock trades with a quote": 0.95,
        # Printed at the quote: at the bid or the ask mostly, so that the quote rule, not the
        # tick test, signs most trades.
        "quoted trades within bid..ask": 1.0,
        "quoted trades off the mid": 0.8,
        "stock trades signed": 0.5,
        "option trades with greeks and quote": 0.9,
    }
    assert {name: share for name, share in shares.items() if share < least[name]} == {}
