"""The market simulator: reproducible, valid for every schema, with the mess it promises."""

import asyncio
import json
import time
from collections import Counter

import nats
import pytest

from lake_platform.cli import main
from lake_platform.schemas import BY_NAME, decode_batch
from lake_platform.simulate.market import SessionSpec, session
from lake_platform.simulate.publisher import replay_file
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
