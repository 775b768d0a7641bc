"""nats-py's protocol parser with a fast path for the messages of raw-delivery subscriptions.

nats-py matches a regular expression against its buffer and deletes the bytes it consumed
once per message (a copy of the rest of the buffer each time). Here, the `MSG`/`HMSG` frames
at the head of the buffer that belong to a raw-delivery subscription (the lean pull's inbox)
are split with `find`/`split` and handed to their sink in one pass, and the consumed bytes are
deleted once per read. The first frame of anything else (another subscription, `PING`,
`-ERR`, `INFO`, a frame not yet complete) hands the rest of the buffer to nats-py's parser.
Headers reach the sink as their raw block: nats-py parses every message's into a dict
(~4 µs), which the ingest needs only for a quarantined message (`parse_headers`).
"""

from collections.abc import Callable

from nats.aio.client import Client
from nats.protocol.parser import AWAITING_CONTROL_LINE, Parser

CRLF = b"\r\n"
MSG = b"MSG "
HMSG = b"HMSG "

HEADER_LINE = b"NATS/1.0"
STATUS = "Status"

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
    """Parses the raw-delivery frames at the head of each read itself, the rest as nats-py."""

    def __init__(self, nc: object, sinks: dict[int, RawSink], stats: dict[str, int]) -> None:
        super().__init__(nc)
        self._sinks = sinks
        self._stats = stats

    async def parse(self, data: bytes = b"") -> None:
        buf = self.buf
        buf.extend(data)
        position = 0
        while self.state == AWAITING_CONTROL_LINE:
            if buf.startswith(MSG, position):
                start = position + len(MSG)
            elif buf.startswith(HMSG, position):
                start = position + len(HMSG)
            else:
                break
            line_end = buf.find(CRLF, start)
            if line_end < 0:
                break
            fields = bytes(buf[start:line_end]).split()
            with_headers = start - position == len(HMSG)
            header_size = int(fields.pop(-2)) if with_headers and len(fields) >= 4 else 0
            if len(fields) not in (3, 4) or (with_headers and not header_size):
                break  # malformed: nats-py's parser raises its protocol error
            subject, sid, *reply, size = fields
            sink = self._sinks.get(int(sid))
            body = line_end + len(CRLF)
            end = body + int(size)
            if sink is None or len(buf) < end + len(CRLF):
                break
            headers = bytes(buf[body : body + header_size]) if header_size else None
            payload = bytes(buf[body + header_size : end])
            self._stats["in_msgs"] += 1
            self._stats["in_bytes"] += len(payload)
            sink(
                subject.decode(errors="replace"),
                reply[0].decode(errors="replace") if reply else "",
                payload,
                headers,
            )
            position = end + len(CRLF)
        if position:
            del buf[:position]
        if buf:
            await super().parse()
