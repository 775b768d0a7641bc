"""The lean pull and the bulk publish of the ingest's NATS client, on a real nats-server."""

import asyncio
import time

import nats.errors
import pytest
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.connection import LakeNatsClient, connect
from lake_platform.ingest.jetstream import (
    DURABLE,
    ConsumerSizing,
    ensure_consumers,
    ensure_streams,
)
from lake_platform.ingest.pull import LeanPull
from lake_platform.ingest.wire import parse_headers
from lake_platform.settings import LakeSettings

SUBJECTS = [f"market.stocks.trades.S{index}" for index in range(5)]
WAIT_S = 10.0
SETTLE_S = 0.3


async def unacked_once_settled(js: JetStreamContext, expected: int) -> int:
    """The consumer's unacked count once it is `expected` or `WAIT_S` passed: the server
    applies acks asynchronously, after the publisher's flush."""
    deadline = time.monotonic() + WAIT_S
    while True:
        info = await js.consumer_info("MARKET", DURABLE)
        if info.num_ack_pending == expected or time.monotonic() > deadline:
            assert info.num_pending == 0
            return info.num_ack_pending
        await asyncio.sleep(0.05)


async def pull_and_ack(url: str) -> None:
    settings = LakeSettings(nats_servers=(url,))
    nc = await connect(settings, name="test-pull")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await ensure_consumers(js, ConsumerSizing.for_settings(settings))
    for index, subject in enumerate(SUBJECTS):
        headers = {"Nats-Msg-Id": f"id-{index}"} if index % 2 else None
        await js.publish(subject, f'{{"n":{index}}}'.encode(), headers=headers)
    pull = LeanPull(nc, "MARKET", DURABLE)
    await pull.start()
    try:
        pulled, drained = await pull.fetch(100, 0.5)
        assert pulled.stream == "MARKET"
        assert pulled.subjects == SUBJECTS
        assert pulled.payloads == [f'{{"n":{index}}}'.encode() for index in range(5)]
        assert [parse_headers(h).get("Nats-Msg-Id") for h in pulled.headers] == [
            None,
            "id-1",
            None,
            "id-3",
            None,
        ]
        assert all(reply.startswith("$JS.ACK.MARKET.") for reply in pulled.replies)
        assert drained  # the request ended with "no messages" before it was filled

        await nc.publish_all(pulled.replies[:3])
        assert await unacked_once_settled(js, 2) == 2
        await nc.publish_all(pulled.replies[3:], b"+WPI")  # in progress: still unacked
        await nc.flush()
        await asyncio.sleep(SETTLE_S)
        assert (await js.consumer_info("MARKET", DURABLE)).num_ack_pending == 2
        await nc.publish_all(pulled.replies[3:])
        assert await unacked_once_settled(js, 0) == 0

        again, drained = await pull.fetch(100, 0.2)
        assert len(again) == 0 and drained
    finally:
        await pull.stop()
        await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await nc.publish_all(pulled.replies)


def test_lean_pull_takes_messages_as_columns_and_publish_all_acks_them(
    nats_server: NatsServer,
) -> None:
    asyncio.run(pull_and_ack(nats_server.url))


FRAMES = [
    b"MSG market.stocks.trades.SPY 1 $JS.ACK.MARKET.c.1.1.1.1.0 5\r\nhello\r\n",
    b"+OK\r\n",  # not a message: nats-py's parser takes it
    b"MSG other.subscription 2 5\r\nskip!\r\n",  # nor is this one raw: nats-py's parser
    b"MSG a.b 1 r.1 0\r\n\r\n",
    b"HMSG signals.levels.ES 1 $JS.ACK.SIGNALS.c.1.2.2.1.0 29 34\r\n"
    b"NATS/1.0\r\nNats-Msg-Id: m1\r\n\r\nworld\r\n",
    b"MSG market.\xff 1 r.2 2\r\n{}\r\n",
    b"HMSG a.b 1 12 14\r\nNATS/1.0\r\n\r\nhi\r\n",  # no reply: 12 is the header size
    b"MSG a.b 1 42 2\r\nhi\r\n",  # a reply of digits
    b"MSG a.b  1\tr.3 2\r\nok\r\n",  # fields apart by any whitespace, as nats-py reads them
]
RECEIVED = [
    ("market.stocks.trades.SPY", "$JS.ACK.MARKET.c.1.1.1.1.0", b"hello", None),
    ("a.b", "r.1", b"", None),
    (
        "signals.levels.ES",
        "$JS.ACK.SIGNALS.c.1.2.2.1.0",
        b"world",
        b"NATS/1.0\r\nNats-Msg-Id: m1\r\n\r\n",
    ),
    ("market.\ufffd", "r.2", b"{}", None),
    ("a.b", "", b"hi", b"NATS/1.0\r\n\r\n"),
    ("a.b", "42", b"hi", None),
    ("a.b", "r.3", b"ok", None),
]


async def parse_in_chunks(size: int) -> list[tuple[str, str, bytes, bytes | None]]:
    client = LakeNatsClient()
    received: list[tuple[str, str, bytes, bytes | None]] = []
    columns = ("subjects", "replies", "payloads", "headers")
    client.deliver_raw(
        Subscription(client, id=1),
        lambda run: received.extend(zip(*(getattr(run, c) for c in columns), strict=True)),
    )
    wire = b"".join(FRAMES)
    for start in range(0, len(wire), size):
        await client._ps.parse(wire[start : start + size])
    assert not client._ps.buf
    assert client.stats["in_msgs"] == len(RECEIVED) + 1
    return received


@pytest.mark.parametrize("size", [1, 2, 3, 7, 16, 33, 64, 1000])
def test_raw_frames_are_parsed_whole_whatever_the_reads(size: int) -> None:
    """Frames split anywhere across reads, with and without headers, reach the sink as one
    message each, in order (the fast path and nats-py's parser take turns)."""
    assert asyncio.run(parse_in_chunks(size)) == RECEIVED


def test_parse_headers_reads_fields_and_the_inline_status() -> None:
    assert parse_headers(None) == {}
    assert parse_headers(b"NATS/1.0\r\nNats-Msg-Id: a-1\r\nX: \xff\r\n\r\n") == {
        "Nats-Msg-Id": "a-1",
        "X": "\ufffd",
    }
    assert parse_headers(b"NATS/1.0 404 No Messages\r\n\r\n") == {"Status": "404"}
    assert parse_headers(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n") == {
        "Status": "408",
        "Nats-Pending-Messages": "5",
    }


def test_a_malformed_message_line_is_a_protocol_error_after_the_messages_before_it() -> None:
    async def parse() -> list[bytes]:
        client = LakeNatsClient()
        payloads: list[bytes] = []
        client.deliver_raw(Subscription(client, id=1), lambda run: payloads.extend(run.payloads))
        with pytest.raises(nats.errors.ProtocolError):
            await client._ps.parse(b"MSG a.b 1 2\r\nhi\r\nMSG a.b 1 x\r\nzz\r\n")
        return payloads

    assert asyncio.run(parse()) == [b"hi"]
