"""nats-py's protocol parser with a fast path for the messages of raw-delivery subscriptions.

nats-py matches a regular expression against its buffer and deletes the bytes it consumed
once per message, then builds a `Msg`, a header dict and a queue entry for each. Here, the
`MSG`/`HMSG` frames at the head of the buffer that belong to a raw-delivery subscription (the
lean pull's inbox) are read on one copy of the buffer per read (its slices are the payloads),
with nats-py's own message patterns bounded to the line, and handed to their sink as columns,
one call per run of messages (`benchmarks/wire.py`, 200,000 JetStream deliveries: ~1.8 µs of
CPU a message, against ~2.7 µs for nats-py's own parser before its `Msg` and header dict).
The consumed bytes are deleted once per read. Every other frame goes to nats-py's parser,
which reads it exactly as it reads a stream fed one byte at a time: a run of messages of its
client's subscriptions as nats-server writes them (PubAcks to an inbox) in one call
(`benchmarks/wire.py --pubacks`, bursts of 512 PubAcks: ~2.8 µs a PubAck, against ~1.9 µs
for nats-py's parser alone and ~7.5 µs when each frame was a call of its own); any other
frame (`PING`, `-ERR`, `INFO`, a malformed line) one control line, then its payload, at a
time. A frame not yet complete waits for the next read. `fuzz/wire_target.py` checks this
against nats-py's parser.
Headers reach the sink as their raw block: nats-py parses every message's into a dict
(~4 µs), which the ingest needs only for a quarantined message (`parse_headers`).

The parser's internals are nats-py's (`SUPPORTED_NATS_PY`); importing this module over
another minor version, or a parser without the state read here, fails (`check_nats_py`).
"""

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

from nats.aio.client import Client
from nats.protocol.parser import AWAITING_CONTROL_LINE, CRLF_SIZE, HMSG_RE, MSG_RE, Parser

CRLF = b"\r\n"
HEADER_LINE = b"NATS/1.0"
STATUS = "Status"

SUPPORTED_NATS_PY = "2.16"
"""The nats-py minor version whose parser `RawFirstParser` extends (pin `nats-py==2.16.*`)."""
PARSER_STATE = ("buf", "state", "needed", "header_needed", "msg_arg")
"""What nats-py's `Parser` keeps between reads, read or driven here."""
MESSAGE_PATTERN_GROUPS = ((MSG_RE, 5), (HMSG_RE, 6))
"""nats-py's patterns of `MSG <subject> <sid> [reply] <size>` and `HMSG <subject> <sid> [reply]
<header size> <size>`, and their groups: subject, sid, reply with its space, reply, [header
size,] size."""


def check_nats_py(installed: str, parser: type[Parser]) -> None:
    """Fail loudly when the installed nats-py (`installed`, its `parser`) is not the one whose
    internals `RawFirstParser` reads: another minor version, or a parser without its state,
    its message patterns or its coroutine `parse`."""
    problems = []
    if installed.split(".")[:2] != SUPPORTED_NATS_PY.split("."):
        problems.append(
            f"nats-py {installed} is installed, the fast path is written for {SUPPORTED_NATS_PY}.*"
        )
    missing = [name for name in PARSER_STATE if name not in vars(parser())]
    if missing:
        problems.append(f"its Parser keeps no {', '.join(missing)} (parser state read here)")
    if not inspect.iscoroutinefunction(parser.parse):
        problems.append("its Parser.parse is not a coroutine function")
    for pattern, groups in MESSAGE_PATTERN_GROUPS:
        if not pattern.pattern.startswith(rb"\A") or pattern.groups != groups:
            problems.append(f"its message pattern {pattern.pattern!r} is not the one read here")
    if not callable(getattr(Client, "_parse_header_lines", None)):
        problems.append("its Client has no _parse_header_lines")
    if problems:
        raise ImportError(
            "lake_platform.ingest.wire overrides nats-py's protocol parser: "
            + "; ".join(problems)
            + f". Install nats-py=={SUPPORTED_NATS_PY}.* (uv.lock), or port RawFirstParser."
        )


def _installed_nats_py() -> str:
    try:
        return version("nats-py")
    except PackageNotFoundError:
        return "(no distribution metadata)"


check_nats_py(_installed_nats_py(), Parser)

MSG_LINE = re.compile(MSG_RE.pattern.removeprefix(rb"\A"), MSG_RE.flags)
HMSG_LINE = re.compile(HMSG_RE.pattern.removeprefix(rb"\A"), HMSG_RE.flags)
"""nats-py's message patterns without their start-of-buffer anchor. Matched from a line's
start to the end of its CRLF (`match(view, line_start, line_end + 2)`), they read the line as
nats-py does when it holds just that line (as when it reads the stream one byte at a time);
unbounded, they can match across CRLFs."""
MSG_START, HMSG_START = ord("M"), ord("H")
MESSAGE_SHAPES = {
    (b"MSG", 4): (False, False),
    (b"MSG", 5): (False, True),
    (b"HMSG", 5): (True, False),
    (b"HMSG", 6): (True, True),
}
"""Message lines by first word and number of fields: whether they hold a header size, and a
reply (`MSG <subject> <sid> [reply] <size>`, `HMSG <subject> <sid> [reply] <header size>
<size>`)."""


def _nats_py_reading(
    view: bytes, start: int, end: int
) -> tuple[list[bytes], tuple[bool, bool]] | tuple[None, None]:
    """The fields of the line from `start` to `end` (after its CRLF) as nats-py's patterns
    read the line alone, and its shape (`MESSAGE_SHAPES`); (None, None) when they do not read
    a message line there. For the lines nats-server does not write (odd whitespace, sizes
    not in digits), which nats-py's patterns read in their own way."""
    first = view[start]
    pattern = MSG_LINE if first == MSG_START else HMSG_LINE if first == HMSG_START else None
    match = pattern.match(view, start, end) if pattern is not None else None
    if match is None:
        return None, None
    subject, sid, _, reply, *sizes = match.groups()
    with_headers = len(sizes) == 2
    fields = [b"HMSG" if with_headers else b"MSG", subject, sid, *([reply] if reply else [])]
    return [*fields, *sizes], (with_headers, bool(reply))


@dataclass
class RawMessages:
    """Messages of one raw-delivery subscription, column by column, in the order received."""

    subjects: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    headers: list[bytes | None] = field(default_factory=list)
    """Raw header blocks (`parse_headers` reads one)."""

    def __len__(self) -> int:
        return len(self.subjects)

    def extend(self, more: "RawMessages") -> None:
        """Append the messages of `more`, in order."""
        self.subjects.extend(more.subjects)
        self.replies.extend(more.replies)
        self.payloads.extend(more.payloads)
        self.headers.extend(more.headers)

    def one(self, index: int) -> "RawMessages":
        """The message at `index` alone."""
        return RawMessages(
            [self.subjects[index]],
            [self.replies[index]],
            [self.payloads[index]],
            [self.headers[index]],
        )


RawSink = Callable[[RawMessages], None]
"""Receives a subscription's messages as they are parsed, a run of them at a time."""


def parse_headers(raw: bytes | None) -> dict[str, str]:
    """A raw header block as nats-py reads it, with the inline status of a status message
    (`NATS/1.0 404 No Messages`) as `Status`."""
    if not raw:
        return {}
    first, _, lines = raw.partition(CRLF)
    headers: dict[str, str] = {}
    status = first[len(HEADER_LINE) :].split(maxsplit=1)
    if status and status[0].isdigit():
        headers[STATUS] = status[0].decode()
    headers.update(Client._parse_header_lines(lines))
    return headers


class RawFirstParser(Parser):
    """Takes the raw-delivery frames of each read itself; gives nats-py the others, a run of
    complete client messages at a time, any other frame alone."""

    def __init__(self, nc: object, sinks: dict[int, RawSink], stats: dict[str, int]) -> None:
        super().__init__(nc)
        self._sinks = sinks
        self._stats = stats

    async def parse(self, data: bytes = b"") -> None:
        """Take the complete frames at the head of the buffer: raw-delivery messages go to
        their sinks, any other frame to nats-py's parser (`_take_raw_messages` says how many
        bytes at a time); an incomplete frame waits for more bytes.

        Progress or wait: each pass of the loop removes at least one byte from the buffer, or
        returns. It returns when the raw message or the line at the head is not complete, or
        when nats-py's parser consumed none of the bytes it was handed: it waits for more (as
        it does for a line of 4 KiB or more that it cannot read yet). So `parse` ends after at
        most one pass per byte, and never hands nats-py the same bytes twice in one call. It
        also returns when the parser was reset meanwhile (a reconnect from a callback): the
        old connection's bytes are dropped, as nats-py drops them.

        The buffer is copied to bytes once per call (`view`; its slices are the raw payloads):
        from then on, while a control line is awaited, the buffer is `view[start:]`.
        """
        self.buf.extend(data)
        buf, view, start = self.buf, b"", 0
        while buf:
            if self.state == AWAITING_CONTROL_LINE:
                if len(view) - start != len(buf):  # no view yet
                    view, start = bytes(buf), 0
                start, handed = self._take_raw_messages(view, start)
                if handed is None:
                    return
            else:  # nats-py's parser took a message line and waits for its payload
                handed = self.needed + CRLF_SIZE
            consumed = await self._parse_alone(handed)
            if not consumed:
                return
            start += consumed

    def _take_raw_messages(self, view: bytes, start: int) -> tuple[int, int | None]:
        """Hand the complete raw-delivery messages at `start` in `view` to their sinks, and
        delete them from the buffer (`view[start:]`).

        Returns where they end in `view` (the buffer's new start) and how many bytes from
        there nats-py's parser is handed next: the run of client messages there
        (`_client_run_end`), else the control line there (another frame, a line nats-py
        rejects, a message without its payload yet); or None when the buffer ends first: a
        line without its CRLF yet, or a raw message without its payload. Each line is read as
        nats-py reads it alone (split when nats-server wrote it, else `_nats_py_reading`). The
        CRLF's 2 bytes are written out: this loop is the hot path.
        """
        sinks = self._sinks
        position, handed = start, None
        run, run_sink = RawMessages(), None
        subjects, replies, payloads, headers = run.subjects, run.replies, run.payloads, run.headers
        while (line_end := view.find(CRLF, position)) >= 0:
            body = line_end + 2
            line = view[position:line_end]
            fields = line.split()
            shape = MESSAGE_SHAPES.get((fields[0], len(fields))) if fields else None
            if not (  # as nats-server writes it: nats-py's patterns read the same fields
                shape is not None
                and line == b" ".join(fields)
                and fields[-1].isdigit()
                and (not shape[0] or fields[-2].isdigit())
            ):
                fields, shape = _nats_py_reading(view, position, body)
            try:
                sink = sinks.get(int(fields[2])) if shape is not None else None
            except ValueError:  # a sid that is not a number: nats-py reports the line
                sink = None
            if sink is None:
                handed = (self._client_run_end(view, position) or body) - position
                break
            payload_end = body + int(fields[-1])
            if payload_end + 2 > len(view):
                break
            with_headers, with_reply = shape
            header_end = body + int(fields[-2]) if with_headers else body
            if header_end > payload_end:  # as nats-py slices a header size above the size
                header_end = min(header_end, payload_end + 2)
            if sink is not run_sink:
                self._deliver(run, run_sink)
                run, run_sink = RawMessages(), sink
                subjects, replies = run.subjects, run.replies
                payloads, headers = run.payloads, run.headers
            subjects.append(fields[1].decode("utf-8", "replace"))
            replies.append(fields[3].decode("utf-8", "replace") if with_reply else "")
            payloads.append(view[header_end:payload_end])
            headers.append(view[body:header_end] or None)
            position = payload_end + 2
        del self.buf[: position - start]
        self._deliver(run, run_sink)
        return position, handed

    def _client_run_end(self, view: bytes, position: int) -> int:
        """The end in `view` of the run of messages at `position` that nats-py's parser
        reads in one call as it reads each alone; 0 when there is none.

        Such messages are for subscriptions nats-py's client takes, each with a line as
        nats-server writes it (single spaces, sizes in digits, as `_take_raw_messages`
        checks): nats-py's patterns, matched at its start with the rest of the run after it,
        read it up to its CRLF. Two such lines end the run instead: an `HMSG <subject> <sid>
        <header size> <size>` (no reply) whose header block does not start with `NATS/1.0`
        (followed by `<digits>\\r\\n`, it reads as a reply, a header size and the next
        line's size), and a header size above the size (the header block would take bytes
        past the payload, from the next frame). nats-py's parser takes the whole run. Its last
        message may not be complete yet (the run then ends past `view`): nats-py's parser
        takes its line and waits for its payload, as when handed the line alone.
        """
        sinks, run_end = self._sinks, 0
        while (line_end := view.find(CRLF, position)) >= 0:
            line = view[position:line_end]
            fields = line.split()
            shape = MESSAGE_SHAPES.get((fields[0], len(fields))) if fields else None
            if shape is None or line != b" ".join(fields) or not fields[-1].isdigit():
                break
            body, size = line_end + 2, int(fields[-1])
            if shape[0] and not (
                fields[-2].isdigit()
                and int(fields[-2]) <= size
                and (shape[1] or view.startswith(HEADER_LINE, body))
            ):
                break
            try:
                if int(fields[2]) in sinks:
                    break
            except ValueError:  # nats-py raises on the line: read alone
                break
            position = run_end = body + size + 2
        return run_end

    def _deliver(self, run: RawMessages, sink: RawSink | None) -> None:
        if sink is not None and run.subjects:
            self._stats["in_msgs"] += len(run)
            self._stats["in_bytes"] += sum(map(len, run.payloads))
            sink(run)

    async def _parse_alone(self, size: int) -> int | None:
        """nats-py's parser on the buffer's first `size` bytes alone (a copy of them, or the
        buffer itself when it holds no more): how many it consumed (none when it waits for
        more bytes), or None when the parser was reset meanwhile."""
        buf = self.buf
        alone = buf if size >= len(buf) else buf[:size]
        held = len(alone)
        self.buf = alone
        try:
            await super().parse()
        finally:
            if self.buf is alone and alone is not buf:
                self.buf = buf
                del buf[: held - len(alone)]
        return held - len(alone) if self.buf is buf else None
