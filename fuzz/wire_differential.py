"""The differential check of `wire.RawFirstParser` against nats-py's own `Parser`.

The reference is nats-py's parser reading the stream one byte at a time: it then reads each
control line alone, when its CRLF arrives (then, for a message, its payload), which is how the
NATS protocol delimits frames. Fed bigger reads, nats-py's reading of a *malformed* stream
depends on where the reads split it: its patterns match across CRLFs (`MSG a 1\\r\\n5\\r\\n…`)
and it reports an unknown line only while its whole buffer is under 4 KiB. On well-formed
streams (what nats-server sends) it reads the same whatever the reads: checked here as well.

`RawFirstParser`, fed the stream in any reads (all at once, byte by byte, split in two at
every boundary, random reads), must record what the reference records: the same messages
(subject, reply, payload, header block) in the same order, each raw-delivery subscription's
through its sink and every other through the client; the same client calls (`PING`, `PONG`,
`INFO`, `-ERR`); the same exception (type and text) after the same events; and, when nothing
is raised, the same unfinished frame left in its buffer.

`build_stream` turns any bytes (a fuzzer's input, random bytes) into a stream of frames of
every kind, well-formed or not: sizes too big, too small or not numbers, a sid that is not a
number, odd whitespace, unknown and empty lines, bad `INFO` JSON, lines longer than
`MAX_CONTROL_LINE_SIZE` with and without their CRLF, messages for raw and non-raw sids, a last
frame cut short. A line of 4 KiB or more that no nats-py pattern matches when its CRLF arrives
leaves nats-py waiting forever, and its patterns could match it later across CRLFs as more
bytes arrive; nats-server never sends one, so every long line built here either matches alone
(`INFO`, a message with a long subject) or starts with no frame keyword (nothing can match it).
"""

import itertools
import json
import random
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from nats.protocol.parser import AWAITING_CONTROL_LINE, CRLF_SIZE, MAX_CONTROL_LINE_SIZE, Parser

from lake_platform.ingest.wire import RawFirstParser, RawMessages

CRLF = b"\r\n"
RAW_SIDS = (1, 2)
"""Subscriptions whose messages go to a raw-delivery sink."""
CLIENT_SIDS = (3, 4)
"""Subscriptions whose messages nats-py's client takes (`_process_msg`)."""
MAX_FRAMES = 12
LONG = MAX_CONTROL_LINE_SIZE + 4
SPLIT_EVERY_BOUNDARY_MAX = 1_024
"""Streams up to this size are split in two at every byte boundary; longer ones at every
boundary within `NEAR` bytes of a frame's end and every `STRIDE` bytes."""
NEAR = 2
STRIDE = 61
RANDOM_READS = 3
BYTE_BY_BYTE = "byte by byte"

Event = tuple[Any, ...]
Reads = Callable[[Parser], Iterator[bytes]]
"""The reads of a stream, given the parser they feed (the reference steps by its state)."""


@dataclass(frozen=True)
class Stream:
    data: bytes
    frame_ends: list[int]
    well_formed: bool
    """Only frames nats-server sends (the last one possibly cut short)."""


@dataclass
class Outcome:
    """What a parser did with a stream."""

    events: list[Event] = field(default_factory=list)
    error: tuple[str, str] | None = None
    """Type name, text and arguments of the exception `parse` raised."""
    waiting_for_payload: bool = False
    """nats-py's parser holds a message line and waits for its payload."""
    buffered: bytes = b""
    """The bytes left in the buffer when nothing was raised."""


class RecordingClient:
    """The calls nats-py's parser makes on its client, recorded in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, payload: bytes, headers: bytes | None
    ) -> None:
        text = (subject.decode(errors="replace"), reply.decode(errors="replace"))
        self.events.append(("msg", "client", sid, *text, payload, headers))

    async def _process_ping(self) -> None:
        self.events.append(("ping",))

    async def _process_pong(self) -> None:
        self.events.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.events.append(("info", info))

    async def _process_err(self, message: str) -> None:
        self.events.append(("err", message))


def _raw_sink(events: list[Event], sid: int) -> Callable[[RawMessages], None]:
    def sink(run: RawMessages) -> None:
        columns = (run.subjects, run.replies, run.payloads, run.headers)
        for subject, reply, payload, headers in zip(*columns, strict=True):
            events.append(("msg", "sink", sid, subject, reply, payload, headers))

    return sink


def raw_first_parser(client: RecordingClient) -> RawFirstParser:
    sinks = {sid: _raw_sink(client.events, sid) for sid in RAW_SIDS}
    return RawFirstParser(client, sinks, {"in_msgs": 0, "in_bytes": 0})


async def _feed(parser: Parser, events: list[Event], reads: Reads) -> Outcome:
    outcome = Outcome(events)
    try:
        for data in reads(parser):
            await parser.parse(data)
    except Exception as error:
        outcome.error = (type(error).__name__, f"{error} {error.args!r}")
    else:
        outcome.waiting_for_payload = parser.state != AWAITING_CONTROL_LINE
        outcome.buffered = bytes(parser.buf)
    return outcome


def outcome_of(make_parser: Callable[[RecordingClient], Parser], reads: Reads) -> Outcome:
    client = RecordingClient()
    return _run_at_once(_feed(make_parser(client), client.events, reads))


def _run_at_once(coroutine: Coroutine[None, None, Outcome]) -> Outcome:
    """Run a coroutine that never waits to its end, without an event loop (a new loop for
    each of the hundreds of parses of a stream would take most of the time). The parsers
    and `RecordingClient` never wait."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("a parser waited: run it in an event loop")


def reference_outcome(stream: bytes) -> Outcome:
    """nats-py's parser fed `stream` one byte at a time, each message named by the route
    `RawFirstParser` gives it (a raw sid's to its sink)."""
    outcome = outcome_of(Parser, lambda parser: byte_at_a_time(parser, stream))
    outcome.events = [_routed(event) for event in outcome.events]
    return outcome


def _routed(event: Event) -> Event:
    if event[0] == "msg" and event[2] in RAW_SIDS:
        return (event[0], "sink", *event[2:])
    return event


def byte_at_a_time(parser: Parser, stream: bytes) -> Iterator[bytes]:
    """`stream` as nats-py's `parser` reads it one byte at a time, each run of bytes after
    which it cannot act merged into one read: up to the next CRLF while it waits for a control
    line, up to the end of the payload while it waits for one (it acts only on a CRLF at the
    end of its buffer, or once its buffer holds the payload and its CRLF; a line it could not
    read stays in its buffer and is read again, with what follows, at each later CRLF)."""
    fed = 0
    while fed < len(stream):
        start = fed - len(parser.buf)
        if parser.state == AWAITING_CONTROL_LINE:  # the next CRLF not yet fed
            line_end = stream.find(CRLF, max(start, fed - 1))
            end = len(stream) if line_end < 0 else line_end + len(CRLF)
        else:
            end = min(len(stream), start + parser.needed + CRLF_SIZE)
        yield stream[fed:end]
        fed = end


def chunkings(stream: Stream, seed: int) -> Iterator[tuple[str, list[bytes]]]:
    """Named ways to cut the stream into reads."""
    data = stream.data
    yield "all at once", [data]
    yield BYTE_BY_BYTE, [data[i : i + 1] for i in range(len(data))]
    for cut in split_points(stream):
        yield f"split at {cut}", [data[:cut], data[cut:]]
    if len(data) < 2:
        return
    chooser = random.Random(seed)
    for attempt in range(RANDOM_READS):
        cuts = sorted(chooser.sample(range(1, len(data)), min(len(data) - 1, 8)))
        bounds = [0, *cuts, len(data)]
        yield f"random reads {attempt}: {cuts}", [data[a:b] for a, b in itertools.pairwise(bounds)]


def split_points(stream: Stream) -> list[int]:
    size = len(stream.data)
    if size <= SPLIT_EVERY_BOUNDARY_MAX:
        return list(range(1, size))
    near = {end + shift for end in stream.frame_ends for shift in range(-NEAR, NEAR + 1)}
    return sorted(cut for cut in near.union(range(1, size, STRIDE)) if 0 < cut < size)


def check_stream(stream: Stream, seed: int = 0) -> None:
    """Assert that `RawFirstParser` (and nats-py's parser, on a well-formed stream) reads the
    stream like the reference in every chunking."""
    expected = reference_outcome(stream.data)
    for name, reads in chunkings(stream, seed):
        ours = outcome_of(raw_first_parser, lambda _, reads=reads: iter(reads))
        _assert_same(expected, ours, f"RawFirstParser, {name}", stream)
        if stream.well_formed and name != BYTE_BY_BYTE:  # the reference: nats-py's own reads
            theirs = outcome_of(Parser, lambda _, reads=reads: iter(reads))
            theirs.events = [_routed(event) for event in theirs.events]
            _assert_same(expected, theirs, f"nats-py Parser, {name}", stream)


def _assert_same(expected: Outcome, actual: Outcome, name: str, stream: Stream) -> None:
    context = f"{name}, stream {stream.data!r}"
    assert actual.events == expected.events, f"events differ: {context}"
    assert actual.error == expected.error, f"{actual.error} != {expected.error}: {context}"
    if expected.waiting_for_payload and not actual.waiting_for_payload:
        # A raw sid's message line stays buffered, with its payload, until it is complete;
        # nats-py took the line and waits for the payload.
        held = actual.buffered
        assert held.endswith(expected.buffered) and len(held) > len(expected.buffered), context
    else:
        assert actual.waiting_for_payload == expected.waiting_for_payload, context
        assert actual.buffered == expected.buffered, f"buffers differ: {context}"


class Choices:
    """Decisions read from a byte string, one byte each; past its end every decision is 0."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    @property
    def exhausted(self) -> bool:
        return self._at >= len(self._data)

    def pick(self, count: int) -> int:
        if self.exhausted:
            return 0
        self._at += 1
        return self._data[self._at - 1] % count

    def one(self, options: list[bytes] | tuple[bytes, ...]) -> bytes:
        return options[self.pick(len(options))]

    def some_bytes(self, most: int) -> bytes:
        size = self.pick(most + 1)
        taken = self._data[self._at : self._at + size]
        self._at += size
        return taken


SEPARATORS = (b"  ", b"\t", b" \t ", b"\n", b"\r", b"\x0b", b"\x0c")
BAD_NUMBERS = (b"+5", b"-1", b"5_0", b"x", b"0x1", b"\xd9\xa3")
ERRORS = (b"'Stale Connection'", b"'Permissions Violation for Subscription to a.b'", b"'x'")
INFOS = (b'{"server_id":"n1","max_payload":1048576}', b"{}", b'{"connect_urls":[]}')
UNKNOWN_LINES = (b"HELLO there", b"", b"ping", b"MSG a", b"MSG a 1", b"HMSG a 1 5", b"+OKAY")
ODD_LINES = (b"-ERR ", b"", b"INFO {", b"INFO\t{}", b"MSG a 1 99999999999", b"PING\r")
"""Lines nats-py raises on (`-ERR ` without a text: its bug), or waits after (a size it never
gets)."""
BAD_SIDS = (b"s1", b"1x", b"+1", b"-1", b"01")
LONG_ONE_IN = 12
STATUS_HEADERS = b"NATS/1.0 404 No Messages\r\n\r\n"


def build_stream(data: bytes) -> Stream:
    """A stream of up to `MAX_FRAMES` frames chosen by `data` (an exhausted `data` chooses
    plain, well-formed frames)."""
    choices = Choices(data)
    frames: list[bytes] = []
    well_formed = True
    while len(frames) < MAX_FRAMES and not choices.exhausted:
        frame, frame_well_formed = _frame(choices, len(frames))
        frames.append(frame)
        well_formed = well_formed and frame_well_formed
    if frames and choices.pick(4) == 1:  # the stream ends inside its last frame
        frames[-1] = frames[-1][: len(frames[-1]) * choices.pick(256) // 256]
    return Stream(b"".join(frames), list(itertools.accumulate(map(len, frames))), well_formed)


def _long(choices: Choices) -> bool:
    """Whether to make a line longer than a control line (rarely: each costs time)."""
    return choices.pick(LONG_ONE_IN) == LONG_ONE_IN - 1


def _frame(choices: Choices, index: int) -> tuple[bytes, bool]:
    kind = choices.pick(16)
    if kind <= 7:
        return _message(choices, index)
    if kind == 8:
        return choices.one((b"PING\r\n", b"PONG\r\n", b"+OK\r\n", b"PING \r\n")), True
    if kind == 9:
        return b"-ERR " + choices.one(ERRORS) + CRLF, True
    if kind == 10:
        return _info(choices), True
    if kind == 11:  # an unknown line: nats-py rejects a short one, waits forever on a long one
        if _long(choices):
            return b"X" * LONG + CRLF, False
        return choices.one(UNKNOWN_LINES) + CRLF, False
    if kind == 12:  # a long line without its end, as a large INFO's first read
        return b"INFO " + b"x" * LONG, False
    return choices.one(ODD_LINES) + CRLF, False


def _info(choices: Choices) -> bytes:
    if _long(choices):  # a large cluster's server list: one line longer than 4 KiB
        urls = [f"10.0.{n // 250}.{n % 250}:4222" for n in range(LONG // 16)]
        return b"INFO " + json.dumps({"connect_urls": urls}).encode() + CRLF
    return b"INFO " + choices.one(INFOS) + CRLF


def _message(choices: Choices, index: int) -> tuple[bytes, bool]:
    """A `MSG` or `HMSG` frame for a raw or a client sid, possibly malformed."""
    sid = (*RAW_SIDS, *CLIENT_SIDS)[choices.pick(4)]
    with_headers = choices.pick(2) == 1
    subject = b"a" * LONG if _long(choices) else f"market.stocks.trades.S{index}".encode()
    reply = choices.one((f"$JS.ACK.MARKET.c.1.{index}.1.0".encode(), b"", b"42"))
    headers = b""
    if with_headers:
        headers = STATUS_HEADERS if not reply else b"NATS/1.0\r\nNats-Msg-Id: m%d\r\n\r\n" % index
    payload = choices.some_bytes(24)
    size = len(headers) + len(payload)
    fields = [b"HMSG" if with_headers else b"MSG", subject, b"%d" % sid]
    fields += [reply] if reply else []
    fields += [b"%d" % len(headers)] if with_headers else []
    fields += [b"%d" % size]
    line, well_formed = _malformed(choices, fields, size, with_headers, short=len(subject) < LONG)
    return line + CRLF + headers + payload + CRLF, well_formed


def _malformed(
    choices: Choices, fields: list[bytes], size: int, with_headers: bool, short: bool
) -> tuple[bytes, bool]:
    """The control line of `fields`, with one fault or none (always none on a long line: see
    the module's docstring); whether it is well-formed."""
    separators = [b" "] * (len(fields) - 1)
    lead = trail = b""
    fault = choices.pick(16) if short else 0  # 0 (also once `choices` is exhausted): none
    if fault == 1:
        fields[-1] = b"%d" % (size + 1 + choices.pick(30))
    elif fault == 2:
        fields[-1] = b"%d" % max(0, size - 1 - choices.pick(30))
    elif fault == 3:
        fields[-1 - choices.pick(2 if with_headers else 1)] = choices.one(BAD_NUMBERS)
    elif fault == 4:
        fields[2] = choices.one(BAD_SIDS)
    elif fault == 5 and with_headers:
        fields[-2] = b"%d" % (size + 1 + choices.pick(4))  # header size > size
    elif fault == 6:
        separators[choices.pick(len(separators))] = choices.one(SEPARATORS)
    elif fault == 7:
        lead, trail = choices.one(((b" ", b""), (b"", b" "), (b"", b"\t"), (b"", b"\r")))
    elif fault == 8:
        del fields[choices.pick(len(fields) - 1) + 1]
        separators.pop()
    pairs = zip(separators, fields[1:], strict=True)
    line = lead + fields[0] + b"".join(separator + f for separator, f in pairs) + trail
    return line, fault == 0 or fault > 8
