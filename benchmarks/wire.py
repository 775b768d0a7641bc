"""Parser throughput: JetStream deliveries through `wire.RawFirstParser` against nats-py's own.

Builds N `HMSG` frames as nats-server delivers a pulled stock trade (subject, ack subject,
a `Nats-Msg-Id` header, the JSON payload), cut into 32 KiB reads as nats-py reads its socket,
and times, best of `--repeat` in turn:

* nats-py: its `Parser` handing each message to a client whose `_process_msg` only keeps it
  (the regular-expression parse of nats-py, without the `Msg` object, queue and header dict
  its client then adds: the floor of the stock path);
* ours: `RawFirstParser` handing the messages, as columns, to a raw-delivery sink.

Both must deliver the payload of every message (exit 1 otherwise).

    uv run python benchmarks/wire.py [--messages 200000] [--repeat 5]
"""

import argparse
import asyncio
import time

from nats.protocol.parser import Parser

from lake_platform.ingest.wire import RawFirstParser, RawMessages

SID = 7
READ_BYTES = 32_768
HEADERS = b"NATS/1.0\r\nNats-Msg-Id: bench-123456789\r\n\r\n"
PAYLOAD = (
    b'{"ts_event_ns":1765893600123456789,"price":601.25,"size":100,"exchange":4,'
    b'"conditions":[0,12],"seq":123456,"source":"SIP"}'
)


def reads(messages: int) -> list[bytes]:
    """The deliveries of `messages` pulled trades, as the socket reads them."""
    frames = []
    for seq in range(1, messages + 1):
        reply = f"$JS.ACK.MARKET.lake-bronze.1.{seq}.{seq}.1765893600123456789.{messages - seq}"
        sizes = f"{len(HEADERS)} {len(HEADERS) + len(PAYLOAD)}"
        line = f"HMSG market.stocks.trades.SPY {SID} {reply} {sizes}\r\n".encode()
        frames.append(line + HEADERS + PAYLOAD + b"\r\n")
    wire = b"".join(frames)
    return [wire[start : start + READ_BYTES] for start in range(0, len(wire), READ_BYTES)]


class KeepingClient:
    """What nats-py's parser calls back: keeps each payload, nothing more."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, payload: bytes, headers: bytes
    ) -> None:
        self.payloads.append(payload)


async def nats_py(chunks: list[bytes]) -> list[bytes]:
    client = KeepingClient()
    parser = Parser(client)
    for chunk in chunks:
        await parser.parse(chunk)
    return client.payloads


async def ours(chunks: list[bytes]) -> list[bytes]:
    payloads: list[bytes] = []

    def sink(run: RawMessages) -> None:
        payloads.extend(run.payloads)

    parser = RawFirstParser(None, {SID: sink}, {"in_msgs": 0, "in_bytes": 0})
    for chunk in chunks:
        await parser.parse(chunk)
    return payloads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    chunks = reads(args.messages)
    best = {"nats-py": float("inf"), "ours": float("inf")}
    for _ in range(args.repeat):
        for name, parse in (("nats-py", nats_py), ("ours", ours)):
            start = time.perf_counter()
            payloads = asyncio.run(parse(chunks))
            best[name] = min(best[name], time.perf_counter() - start)
            if len(payloads) != args.messages or set(payloads) != {PAYLOAD}:
                print(f"{name}: {len(payloads):,} payloads, expected {args.messages:,}")
                return 1
    for name, seconds in best.items():
        per_message_us = seconds / args.messages * 1e6
        print(f"{name:8s} {per_message_us:5.2f} µs a message (best of {args.repeat})")
    print(f"ours vs nats-py (nats-py s / ours s): {best['nats-py'] / best['ours']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
