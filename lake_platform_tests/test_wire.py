"""`wire.RawFirstParser` reads the wire as nats-py's parser does, never loops without
progress, and refuses to import over a nats-py whose parser it does not know."""

import asyncio
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.protocol.parser import Parser

from fuzz.wire_differential import (
    SPLIT_EVERY_BOUNDARY_MAX,
    Event,
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
CLIENT_SID = 3
"""A subscription nats-py's client takes (`wire_differential.CLIENT_SIDS`)."""
INBOX = "_INBOX.k1.t"


def puback(seq: int) -> bytes:
    """A PubAck as nats-server sends it to `publish_async`'s inbox."""
    payload = b'{"stream":"R","seq":%d}' % seq
    return b"MSG %s%d %d %d\r\n%s\r\n" % (INBOX.encode(), seq, CLIENT_SID, len(payload), payload)


def puback_event(seq: int) -> Event:
    payload = b'{"stream":"R","seq":%d}' % seq
    return ("msg", "client", CLIENT_SID, f"{INBOX}{seq}", "", payload, None)


RAW_EVENT = ("msg", "sink", 1, "market.stocks.trades.SPY", ACK, b"hello", None)


@pytest.fixture(autouse=True)
def bounded_nats_py_parse(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the calls of nats-py's parser within each `RawFirstParser.parse` (the count of
    the last one is returned); fails the test past `MOST_PARSER_CALLS` (a loop that never
    returns would never end the test)."""
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
    return calls


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
    "a client header block starting with a number, in a run": (
        puback(1) + b"HMSG a.b 3 5 9\r\n12\r\n\r\nabc\r\n" + puback(2) + RAW_MESSAGE
    ),
    "a client header size above the size, in a run": (
        puback(1) + b"HMSG a.b 3 r 20 10\r\nNATS/1.0\r\n\r\n" + puback(2) + puback(3)
    ),
    "a client sid that is not a number, in a run": puback(1) + b"MSG a.b x 2\r\nhi\r\n" + puback(2),
    "a client size too small, in a run": puback(1) + b"MSG a.b 3 1\r\nhi\r\n" + puback(2),
    "a client size too big, in a run": puback(1) + b"MSG a.b 3 9\r\nhi\r\n" + puback(2) * 2,
}


@pytest.mark.parametrize("data", SAME_AS_NATS_PY.values(), ids=SAME_AS_NATS_PY.keys())
def test_frames_are_read_as_nats_py_reads_them_one_byte_at_a_time(data: bytes) -> None:
    check_stream(Stream(data, [], well_formed=False))


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=120))
def test_random_streams_are_read_as_nats_py_reads_them(choices: bytes) -> None:
    check_stream(build_stream(choices))


def test_pubacks_among_raw_messages_reach_both_in_order_a_run_per_call(
    bounded_nats_py_parse: list[int],
) -> None:
    """A publisher's PubAcks, runs of 1 to 40, between raw deliveries: nats-py's parser gets
    each run in one call (it got each PubAck in a call of its own: ~600 here)."""
    data, expected, seq = b"", [], 0
    runs = [1 + index * 7 % 40 for index in range(30)]
    for run in runs:
        data += b"".join(puback(seq + n) for n in range(run)) + RAW_MESSAGE
        expected += [puback_event(seq + n) for n in range(run)] + [RAW_EVENT]
        seq += run
    client, parser = parse_reads(data)
    assert client.events == expected
    assert bounded_nats_py_parse[0] == len(runs)
    assert not parser.buf
    client, parser = parse_reads(*(data[at : at + 4096] for at in range(0, len(data), 4096)))
    assert client.events == expected
    assert not parser.buf


def frames_stream(*frames: bytes) -> Stream:
    """A well-formed stream of `frames`, for `check_stream`."""
    ends = list(itertools.accumulate(map(len, frames)))
    return Stream(b"".join(frames), ends, well_formed=True)


def test_runs_split_at_every_byte_are_read_as_nats_py_reads_them() -> None:
    """Runs of client messages (with and without headers, a status message) around raw
    messages and a `PING`, split in two at every byte, byte by byte and in random reads."""
    headers = b"NATS/1.0\r\nNats-Msg-Id: m1\r\n\r\n"
    with_headers = b"HMSG a.b 3 r %d %d\r\n%sok\r\n" % (len(headers), len(headers) + 2, headers)
    status = b"HMSG a.b 4 28 28\r\nNATS/1.0 404 No Messages\r\n\r\n\r\n"
    stream = frames_stream(
        *map(puback, range(4)),
        RAW_MESSAGE,
        puback(4),
        with_headers,
        puback(5),
        b"PING\r\n",
        status,
        puback(6),
        RAW_MESSAGE,
        puback(7),
        puback(8)[:-9],
    )
    assert len(stream.data) <= SPLIT_EVERY_BOUNDARY_MAX
    check_stream(stream)


def test_long_lines_within_runs_progress_or_wait_as_nats_py_does() -> None:
    """A long `INFO`, a message with a long subject and a long unknown line (nats-py waits on
    it for good) between runs of PubAcks, split in two near every frame's end."""
    long_subject = b"MSG %s 3 2\r\nhi\r\n" % (b"a" * 5000)
    stream = frames_stream(
        *map(puback, range(3)),
        LONG_INFO,
        *map(puback, range(3, 6)),
        long_subject,
        *map(puback, range(6, 9)),
        b"X" * 5000 + b"\r\n",
        *map(puback, range(9, 12)),
    )
    check_stream(stream)


class ResettingClient(RecordingClient):
    """Resets its parser on a `PING`, as nats-py's client does when it reconnects."""

    parser: Parser

    async def _process_ping(self) -> None:
        await super()._process_ping()
        self.parser.reset()


def test_a_reset_from_a_callback_drops_the_rest_like_nats_py() -> None:
    """A reconnect started from a callback resets the parser: nats-py reads none of the old
    connection's bytes after it, and neither does the fast path."""
    data = puback(1) + b"PING\r\n" + RAW_MESSAGE + puback(2)

    def outcome(make_parser: Callable[[RecordingClient], Parser]) -> tuple[list[Event], bytes]:
        client = ResettingClient()
        client.parser = make_parser(client)
        asyncio.run(client.parser.parse(data))
        return client.events, bytes(client.parser.buf)

    assert outcome(raw_first_parser) == outcome(Parser) == ([puback_event(1), ("ping",)], b"")


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
