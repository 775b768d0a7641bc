"""nats-py's protocol parser with a fast path for the messages of raw-delivery subscriptions.

nats-py matches a regular expression against its buffer and deletes the bytes it consumed
once per message (a copy of the rest of the buffer each time), then builds a `Msg`, a header
dict and a queue entry for each. Here, the `MSG`/`HMSG` frames at the head of the buffer that
belong to a raw-delivery subscription (the lean pull's inbox) are split with `find`/`split`
on one copy of the buffer per read (its slices are the payloads) and handed to their sink as
columns, one call per run of messages: ~2.4 µs a message, against ~3.5 µs for nats-py's own
parser before its `Msg` and header dict, and ~4.5 µs when each message was handed over alone
(`benchmarks/wire.py`, 200,000 JetStream deliveries). The consumed bytes are deleted once
per read. Every other frame (another subscription's message, `PING`, `-ERR`, `INFO`, a
malformed line) goes to nats-py's parser alone; a frame not yet complete waits for the next
read.
Headers reach the sink as their raw block: nats-py parses every message's into a dict
(~4 µs), which the ingest needs only for a quarantined message (`parse_headers`).
"""

from collections.abc import Callable
from dataclasses import dataclass, field

from nats.aio.client import Client
from nats.protocol.parser import MAX_CONTROL_LINE_SIZE, Parser

CRLF = b"\r\n"
HEADER_LINE = b"NATS/1.0"
STATUS = "Status"

HEADER_FIELDS = {(b"MSG", 4): 0, (b"MSG", 5): 0, (b"HMSG", 5): 1, (b"HMSG", 6): 1}
"""Message control lines by first word and number of fields, and whether they hold a header
size: `MSG <subject> <sid> [reply] <size>`, `HMSG <subject> <sid> [reply] <header size>
<size>`."""


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
    """Takes the raw-delivery frames of each read itself; gives nats-py the others one by one."""

    def __init__(self, nc: object, sinks: dict[int, RawSink], stats: dict[str, int]) -> None:
        super().__init__(nc)
        self._sinks = sinks
        self._stats = stats

    async def parse(self, data: bytes = b"") -> None:
        """Take the whole frames at the head of the buffer: raw-delivery messages go to their
        sinks, any other frame to nats-py's parser alone; an incomplete frame waits for more."""
        self.buf.extend(data)
        position = 0
        while position < len(self.buf):
            position, frame_end = self._take_raw_messages(position)
            if frame_end is None:
                break
            del self.buf[:position]
            frame_end, position = frame_end - position, 0
            await self._parse_alone(frame_end)
        if position:
            del self.buf[:position]

    def _take_raw_messages(self, start: int) -> tuple[int, int | None]:
        """Hand the complete raw-delivery messages from `start` on to their sinks.

        Returns the position after the last message taken, and the end of the frame there
        when it is a whole frame of another kind (None: the buffer ends there, or the frame
        is not complete yet). A line without its end after `MAX_CONTROL_LINE_SIZE` bytes is
        such a frame, up to the buffer's end: nats-py's parser reports the protocol error.
        """
        view = bytes(self.buf)
        position, frame_end = start, None
        run, run_sink = RawMessages(), None
        while position < len(view):
            line_end = view.find(CRLF, position)
            if line_end < 0:
                if len(view) - position > MAX_CONTROL_LINE_SIZE:
                    frame_end = len(view)
                break
            body = line_end + len(CRLF)
            fields = view[position:line_end].split()
            header_fields = HEADER_FIELDS.get((fields[0], len(fields))) if fields else None
            if header_fields is not None:
                try:
                    sid, size = int(fields[2]), int(fields[-1])
                    header_size = int(fields[-2]) if header_fields else 0
                except ValueError:
                    header_fields = None
            if header_fields is None or not 0 <= header_size <= size:
                frame_end = body  # not a message line: nats-py's parser takes (or rejects) it
                break
            payload_end = body + size
            if payload_end + len(CRLF) > len(view):
                break
            sink = self._sinks.get(sid)
            if sink is None:
                frame_end = payload_end + len(CRLF)
                break
            if sink is not run_sink:
                self._deliver(run, run_sink)
                run, run_sink = RawMessages(), sink
            run.subjects.append(fields[1].decode(errors="replace"))
            reply = fields[3] if len(fields) == 5 + header_fields else b""
            run.replies.append(reply.decode(errors="replace"))
            run.payloads.append(view[body + header_size : payload_end])
            run.headers.append(view[body : body + header_size] or None)
            position = payload_end + len(CRLF)
        self._deliver(run, run_sink)
        return position, frame_end

    def _deliver(self, run: RawMessages, sink: RawSink | None) -> None:
        if sink is not None and run.subjects:
            self._stats["in_msgs"] += len(run)
            self._stats["in_bytes"] += sum(map(len, run.payloads))
            sink(run)

    async def _parse_alone(self, frame_end: int) -> None:
        """nats-py's parser on the buffer's first `frame_end` bytes only."""
        rest = self.buf[frame_end:]
        del self.buf[frame_end:]
        await super().parse()
        self.buf.extend(rest)
