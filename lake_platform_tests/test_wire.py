"""`wire.RawFirstParser` reads the wire as nats-py's parser does, never loops without
progress, and refuses to import over a nats-py whose parser it does not know."""

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.protocol.parser import Parser

from fuzz.wire_differential import (
    RecordingClient,
    Stream,
    build_stream,
    byte_at_a_time,
    check_stream,
    outcome_of,
    raw_first_parser,
)
from lake_platform.ingest import wire

MOST_PARSER_CALLS = 200
"""Calls of nats-py's `Parser.parse` a test allows: a loop that hands it the same bytes
without returning reaches this at once."""
LONG_INFO = b'INFO {"connect_urls":["' + b"x" * 5000 + b'"]}\r\n'
ACK = "$JS.ACK.MARKET.c.1.1.1.1.0"
RAW_MESSAGE = b"MSG market.stocks.trades.SPY 1 %s 5\r\nhello\r\n" % ACK.encode()


@pytest.fixture(autouse=True)
def bounded_nats_py_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counts the calls of nats-py's parser within each `RawFirstParser.parse`; fails the
    test past `MOST_PARSER_CALLS` (a loop that never returns would never end the test)."""
    calls = [0]
    nats_py_parse, raw_first_parse = Parser.parse, wire.RawFirstParser.parse

    async def counted(self: Parser, data: bytes = b"") -> None:
        if isinstance(self, wire.RawFirstParser):
            calls[0] += 1
            if calls[0] > MOST_PARSER_CALLS:
                raise AssertionError(f"nats-py's parser called {calls[0]} times in one read")
        await nats_py_parse(self, data)

    async def counting(self: wire.RawFirstParser, data: bytes = b"") -> None:
        calls[0] = 0
        await raw_first_parse(self, data)

    monkeypatch.setattr(Parser, "parse", counted)
    monkeypatch.setattr(wire.RawFirstParser, "parse", counting)


def parse_reads(*reads: bytes) -> tuple[RecordingClient, wire.RawFirstParser]:
    client = RecordingClient()
    parser = raw_first_parser(client)

    async def feed() -> None:
        for data in reads:
            await parser.parse(data)

    asyncio.run(feed())
    return client, parser


def test_a_long_line_without_its_end_is_buffered_like_nats_py() -> None:
    """The first read of a large cluster's `INFO` line: more than 4 KiB and no CRLF yet."""
    data = b"INFO " + b"x" * 5000
    client, parser = parse_reads(data)
    nats_py = Parser(RecordingClient())
    asyncio.run(nats_py.parse(data))
    assert (
        (client.events, bytes(parser.buf)) == (nats_py.nc.events, bytes(nats_py.buf)) == ([], data)
    )


def test_a_long_line_arriving_in_several_reads_is_read_once_complete() -> None:
    reads = [LONG_INFO[:10], LONG_INFO[10:4500], LONG_INFO[4500:-1], LONG_INFO[-1:] + RAW_MESSAGE]
    client, parser = parse_reads(*reads)
    assert client.events == [
        ("info", {"connect_urls": ["x" * 5000]}),
        (
            "msg",
            "sink",
            1,
            "market.stocks.trades.SPY",
            "$JS.ACK.MARKET.c.1.1.1.1.0",
            b"hello",
            None,
        ),
    ]
    assert not parser.buf


def test_a_long_unknown_line_waits_like_nats_py_without_looping() -> None:
    """nats-py never reports a line of 4 KiB or more that it cannot read: it waits (until the
    connection's pings time out); so does the fast path, without spinning on it."""
    data = RAW_MESSAGE + b"X" * 5000 + b"\r\n" + RAW_MESSAGE
    client, parser = parse_reads(data, RAW_MESSAGE)
    assert [event[0] for event in client.events] == ["msg"]
    assert bytes(parser.buf) == data[len(RAW_MESSAGE) :] + RAW_MESSAGE


SAME_AS_NATS_PY = {
    "a frame of another kind after raw messages": RAW_MESSAGE * 2 + b"PING\r\n" + RAW_MESSAGE,
    "a size with a sign": b"MSG a.b 1 +2\r\nhi\r\n" + RAW_MESSAGE,
    "a size with an underscore": b"HMSG a.b 1 1_2 14\r\nNATS/1.0\r\n\r\nhi\r\n" + RAW_MESSAGE,
    "a header size above the size": b"HMSG a.b 1 r 12 10\r\nNATS/1.0\r\n\r\nhi\r\n" + RAW_MESSAGE,
    "a trailing space": b"MSG a.b 1 2 \r\nhi\r\n" + RAW_MESSAGE,
    "a leading space": b" MSG a.b 1 2\r\nhi\r\n" + RAW_MESSAGE,
    "a line feed before the size": b"MSG a.b 1 r\n2\r\nhi\r\n" + RAW_MESSAGE,
    "tabs and double spaces": b"HMSG a.b 1  12\t14\r\nNATS/1.0\r\n\r\nhi\r\n" + RAW_MESSAGE,
    "a client message split across reads": b"MSG c.d 3 r 10\r\n0123456789\r\n" + RAW_MESSAGE,
    "a sid that is not a number": RAW_MESSAGE + b"MSG a.b x 2\r\nhi\r\n",
    "a size too big": b"MSG a.b 1 9\r\nhi\r\n" + RAW_MESSAGE + RAW_MESSAGE,
    "an unknown short line": RAW_MESSAGE + b"HELLO\r\n" + RAW_MESSAGE,
}


@pytest.mark.parametrize("data", SAME_AS_NATS_PY.values(), ids=SAME_AS_NATS_PY.keys())
def test_frames_are_read_as_nats_py_reads_them_one_byte_at_a_time(data: bytes) -> None:
    check_stream(Stream(data, [], well_formed=False))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=120))
def test_random_streams_are_read_as_nats_py_reads_them(choices: bytes) -> None:
    check_stream(build_stream(choices))


def test_the_reference_reads_as_nats_py_fed_single_bytes() -> None:
    """`byte_at_a_time` merges only reads after which nats-py's parser cannot act."""
    chooser = random.Random(5)
    for _ in range(30):
        data = build_stream(chooser.randbytes(60)).data
        stepped = outcome_of(Parser, lambda parser, data=data: byte_at_a_time(parser, data))
        single = outcome_of(
            Parser, lambda _, data=data: (data[i : i + 1] for i in range(len(data)))
        )
        assert stepped == single, data


def test_the_nats_py_this_fast_path_was_written_for_imports() -> None:
    wire.check_nats_py(wire.SUPPORTED_NATS_PY + ".0", Parser)


def test_another_nats_py_minor_version_fails_the_import() -> None:
    with pytest.raises(ImportError, match=r"nats-py 2\.17\.0 .*2\.16\.\*"):
        wire.check_nats_py("2.17.0", Parser)


def test_a_parser_without_the_state_the_fast_path_reads_fails_the_import() -> None:
    class OtherParser(Parser):
        def reset(self) -> None:
            self.buf = bytearray()

    with pytest.raises(ImportError, match="state"):
        wire.check_nats_py(wire.SUPPORTED_NATS_PY + ".0", OtherParser)
