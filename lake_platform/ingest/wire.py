"""nats-py's protocol parser with a fast path for the messages of raw-delivery subscriptions.

nats-py matches a regular expression against its buffer and deletes the bytes it consumed
once per message (a copy of the rest of the buffer each time). Here, the `MSG`/`HMSG` frames
at the head of the buffer that belong to a raw-delivery subscription (the lean pull's inbox)
are handed to their sink, and the consumed bytes are deleted once per read. A control line as
nats-server writes it (single spaces) is matched by one regular expression on a copy of the
buffer taken once per read, whose slices are the payloads (~3.1 µs a message with the sink's
work, against ~4.5 µs splitting each line in Python); any other form is split field by field.
Every other frame (another subscription's message, `PING`, `-ERR`, `INFO`) goes to nats-py's
parser alone; a frame not yet complete waits for the next read.
Headers reach the sink as their raw block: nats-py parses every message's into a dict
(~4 µs), which the ingest needs only for a quarantined message (`parse_headers`).
"""

import re
from collections.abc import Callable
from typing import NamedTuple

from nats.aio.client import Client
from nats.protocol.parser import MAX_CONTROL_LINE_SIZE, Parser

CRLF = b"\r\n"
MSG = b"MSG "
HMSG = b"HMSG "

HEADER_LINE = b"NATS/1.0"
STATUS = "Status"

MSG_LINE = re.compile(rb"MSG ([^ \r\n]+) ([0-9]+) (?:([^ \r\n]+) )?()([0-9]+)\r\n")
HMSG_LINE = re.compile(rb"HMSG ([^ \r\n]+) ([0-9]+) (?:([^ \r\n]+) )?([0-9]+) ([0-9]+)\r\n")
"""Control lines as nats-server writes them: subject, sid, reply (optional), header size
(HMSG; empty for MSG), total size. A reply subject that is all digits is taken as the reply:
the header size and total size must still follow it."""

RawSink = Callable[[str, str, bytes, bytes | None], None]
"""Receives a message as it is parsed: subject, reply subject, payload, raw header block."""


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
        """Take the whole frames at the head of the buffer: a raw-delivery message goes to its
        sink, any other frame to nats-py's parser alone; an incomplete frame waits for more."""
        self.buf.extend(data)
        position = 0
        while position < len(self.buf):
            position = self._take_raw_messages(position)
            buf = self.buf
            if position >= len(buf):
                break
            line_end = buf.find(CRLF, position)
            if line_end < 0:
                if len(buf) - position <= MAX_CONTROL_LINE_SIZE:
                    break  # the rest of the line is still on its way
                frame_end = len(buf)  # no line: nats-py's parser reports the protocol error
            else:
                message = _message_line(bytes(buf[position:line_end]))
                body = line_end + len(CRLF)
                frame_end = body if message is None else body + message.size + len(CRLF)
                if len(buf) < frame_end:
                    break
                sink = None if message is None else self._sinks.get(message.sid)
                if message is not None and sink is not None:
                    headers = bytes(buf[body : body + message.header_size]) or None
                    payload = bytes(buf[body + message.header_size : frame_end - len(CRLF)])
                    self._stats["in_msgs"] += 1
                    self._stats["in_bytes"] += len(payload)
                    sink(message.subject, message.reply, payload, headers)
                    position = frame_end
                    continue
            del buf[:position]
            frame_end, position = frame_end - position, 0
            await self._parse_alone(frame_end)
        if position:
            del self.buf[:position]

    def _take_raw_messages(self, start: int) -> int:
        """Hand the complete raw-delivery messages from `start` on, whose control lines are in
        nats-server's form, to their sinks; the position after the last one taken."""
        view = bytes(self.buf)
        position, messages, payload_bytes = start, 0, 0
        while True:
            if view.startswith(MSG, position):
                match = MSG_LINE.match(view, position)
            elif view.startswith(HMSG, position):
                match = HMSG_LINE.match(view, position)
            else:
                break
            if match is None:
                break
            subject, sid, reply, header_size, size = match.groups()
            sink = self._sinks.get(int(sid))
            body, header_end = match.end(), match.end() + int(header_size or 0)
            frame_end = body + int(size) + len(CRLF)
            if sink is None or frame_end > len(view) or header_end > frame_end - len(CRLF):
                break
            payload = view[header_end : frame_end - len(CRLF)]
            sink(
                subject.decode(errors="replace"),
                reply.decode(errors="replace") if reply else "",
                payload,
                view[body:header_end] or None,
            )
            messages, payload_bytes = messages + 1, payload_bytes + len(payload)
            position = frame_end
        self._stats["in_msgs"] += messages
        self._stats["in_bytes"] += payload_bytes
        return position

    async def _parse_alone(self, frame_end: int) -> None:
        """nats-py's parser on the buffer's first `frame_end` bytes only."""
        rest = self.buf[frame_end:]
        del self.buf[frame_end:]
        await super().parse()
        self.buf.extend(rest)


class _MessageLine(NamedTuple):
    sid: int
    subject: str
    reply: str
    header_size: int
    size: int


def _message_line(line: bytes) -> _MessageLine | None:
    """The fields of a `MSG`/`HMSG` control line; None for any other line or a malformed one."""
    if line.startswith(MSG):
        fields, header_fields = line[len(MSG) :].split(), 0
    elif line.startswith(HMSG):
        fields, header_fields = line[len(HMSG) :].split(), 1
    else:
        return None
    if not 3 + header_fields <= len(fields) <= 4 + header_fields:
        return None
    subject, sid, *reply = fields[: len(fields) - 1 - header_fields]
    try:
        header_size = int(fields[-2]) if header_fields else 0
        size = int(fields[-1])
        sid_number = int(sid)
    except ValueError:
        return None
    if not 0 <= header_size <= size:
        return None
    return _MessageLine(
        sid_number,
        subject.decode(errors="replace"),
        reply[0].decode(errors="replace") if reply else "",
        header_size,
        size,
    )
