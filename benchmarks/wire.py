"""Parser throughput: `wire.RawFirstParser` against nats-py's own, on the frames the platform
receives.

Default, the ingest's JetStream deliveries: N `HMSG` frames as nats-server delivers a pulled
stock trade (subject, ack subject, a `Nats-Msg-Id` header, the JSON payload), cut into 32 KiB
reads as nats-py reads its socket, timed, best of `--repeat` in turn:

* nats-py: its `Parser` handing each message to a client whose `_process_msg` only keeps it
  (the regular-expression parse of nats-py, without the `Msg` object, queue and header dict
  its client then adds: the floor of the stock path);
* ours: `RawFirstParser` handing the messages, as columns, to a raw-delivery sink.

`--pubacks`: a publisher's PubAcks (`MSG` frames to the inbox of nats-py's `publish_async`,
not a raw-delivery subscription), N of them in bursts of `IN_FLIGHT` (512) frames, each burst
cut into 32 KiB reads: both parsers hand every PubAck to the same keeping client; ours gives
nats-py's parser each run of complete PubAcks in one call.

Both must deliver the payload of every message (exit 1 otherwise). Parsing is timed in
process CPU time: on a machine shared with other work, wall time measures the others too.

`--publish N`: N messages published with `publish_async`, `IN_FLIGHT` PubAcks awaited oldest
first (the replay's loop, `benchmarks/replay.py`'s lean publisher), through nats-py's stock
`Client` and through `LakeNatsClient` (whose parser is `RawFirstParser`), in turn, each into a
fresh stream of a nats-server started here on 127.0.0.1 (stopped by its process id); the
stream must hold N messages. Medians of `--repeat`, and LakeNatsClient's throughput over the
stock client's.

    uv run python benchmarks/wire.py [--messages 200000] [--repeat 5]
    uv run python benchmarks/wire.py --pubacks [--messages 102400]
    uv run python benchmarks/wire.py --publish 100000 [--repeat 5]
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.protocol.parser import Parser

from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.connection import LakeNatsClient
from lake_platform.ingest.wire import RawFirstParser, RawMessages
from lake_platform.simulate.publisher import IN_FLIGHT, MSG_ID_HEADER

SID = 7
READ_BYTES = 32_768
HEADERS = b"NATS/1.0\r\nNats-Msg-Id: bench-123456789\r\n\r\n"
PAYLOAD = (
    b'{"ts_event_ns":1765893600123456789,"price":601.25,"size":100,"exchange":4,'
    b'"conditions":[0,12],"seq":123456,"source":"SIP"}'
)
INBOX = "_INBOX.4ZpK2mCUAbQ3CWeR5Bj0Hc.4ZpK2mCUAbQ3CWeR5Bj0Jq"
"""`publish_async`'s reply prefix: the client's inbox prefix and a NUID."""
STREAM, SUBJECT = "BENCH", "bench.trades"

Parse = Callable[[list[bytes]], Awaitable[list[bytes]]]


def _cut(wire: bytes) -> list[bytes]:
    return [wire[start : start + READ_BYTES] for start in range(0, len(wire), READ_BYTES)]


def deliveries(messages: int) -> tuple[list[bytes], set[bytes]]:
    """The deliveries of `messages` pulled trades, as the socket reads them; their payloads."""
    frames = []
    for seq in range(1, messages + 1):
        reply = f"$JS.ACK.MARKET.lake-bronze.1.{seq}.{seq}.1765893600123456789.{messages - seq}"
        sizes = f"{len(HEADERS)} {len(HEADERS) + len(PAYLOAD)}"
        line = f"HMSG market.stocks.trades.SPY {SID} {reply} {sizes}\r\n".encode()
        frames.append(line + HEADERS + PAYLOAD + b"\r\n")
    return _cut(b"".join(frames)), {PAYLOAD}


def pubacks(messages: int) -> tuple[list[bytes], set[bytes]]:
    """`messages` PubAcks, `IN_FLIGHT` at a time, as the socket reads them; their payloads."""
    chunks, payloads = [], set()
    for burst in range(0, messages, IN_FLIGHT):
        frames = []
        for seq in range(burst + 1, min(messages, burst + IN_FLIGHT) + 1):
            payload = b'{"stream":"%s","seq":%d}' % (STREAM.encode(), seq)
            payloads.add(payload)
            token = f"{seq:022d}{seq % 65536:04x}"
            frames.append(
                b"MSG %s.%s %d %d\r\n%s\r\n"
                % (INBOX.encode(), token.encode(), SID, len(payload), payload)
            )
        chunks += _cut(b"".join(frames))
    return chunks, payloads


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


async def ours_raw(chunks: list[bytes]) -> list[bytes]:
    payloads: list[bytes] = []

    def sink(run: RawMessages) -> None:
        payloads.extend(run.payloads)

    parser = RawFirstParser(None, {SID: sink}, {"in_msgs": 0, "in_bytes": 0})
    for chunk in chunks:
        await parser.parse(chunk)
    return payloads


async def ours_client(chunks: list[bytes]) -> list[bytes]:
    client = KeepingClient()
    parser = RawFirstParser(client, {}, {"in_msgs": 0, "in_bytes": 0})
    for chunk in chunks:
        await parser.parse(chunk)
    return client.payloads


def parse_benchmark(
    chunks: list[bytes], expected: set[bytes], ours: Parse, args: argparse.Namespace
) -> int:
    """Best of `args.repeat` for nats-py's parser and `ours`, in turn; 1 when one of them
    did not deliver every payload."""
    best = {"nats-py": float("inf"), "ours": float("inf")}
    for _ in range(args.repeat):
        for name, parse in (("nats-py", nats_py), ("ours", ours)):
            start = time.process_time()
            payloads = asyncio.run(parse(chunks))
            best[name] = min(best[name], time.process_time() - start)
            if len(payloads) != args.messages or set(payloads) != expected:
                print(f"{name}: {len(payloads):,} payloads, expected {args.messages:,}")
                return 1
    for name, seconds in best.items():
        per_message_us = seconds / args.messages * 1e6
        print(f"{name:8s} {per_message_us:5.2f} µs a message (best of {args.repeat})")
    print(f"ours vs nats-py (nats-py s / ours s): {best['nats-py'] / best['ours']:.2f}x")
    return 0


async def publish_loop(url: str, client: Client, messages: int) -> tuple[float, float]:
    """Wall and process CPU seconds to publish `messages` into a fresh stream, `IN_FLIGHT`
    PubAcks awaited oldest first, from the first publish to the last PubAck; fails unless the
    stream holds them."""
    await client.connect(url)
    try:
        js = client.jetstream(publish_async_max_pending=2 * IN_FLIGHT)
        await js.add_stream(name=STREAM, subjects=[f"{SUBJECT}.>"])
        pending: deque[asyncio.Future[object]] = deque()
        wall, cpu = time.perf_counter(), time.process_time()
        for seq in range(messages):
            if len(pending) >= IN_FLIGHT:
                await pending.popleft()
            headers = {MSG_ID_HEADER: f"bench-{seq}"}
            pending.append(await js.publish_async(f"{SUBJECT}.SPY", PAYLOAD, headers=headers))
        for future in pending:
            await future
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stored = (await js.stream_info(STREAM)).state.messages
        await js.delete_stream(STREAM)
    finally:
        await client.close()
    if stored != messages:
        raise SystemExit(f"the stream holds {stored:,} messages, expected {messages:,}")
    return wall, cpu


def publish_benchmark(messages: int, repeat: int, clients: dict[str, Callable[[], Client]]) -> int:
    """The publish loop through each client, in turn, `repeat` rounds; medians, and each
    client's against the first's (the stock client's)."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    with tempfile.TemporaryDirectory() as scratch, NatsServer.start(Path(scratch)) as server:
        for _ in range(repeat):
            for name, make in clients.items():
                runs[name].append(asyncio.run(publish_loop(server.url, make(), messages)))
    medians = {
        name: tuple(statistics.median(figure) for figure in zip(*timed, strict=True))
        for name, timed in runs.items()
    }
    (stock_name, (stock_wall, stock_cpu)), *others = medians.items()
    for name, (wall, cpu) in medians.items():
        print(
            f"{name:14s} {messages / wall:9,.0f} messages/s, {cpu / messages * 1e6:5.1f} µs CPU"
            f" a message (medians of {repeat})"
        )
    for name, (wall, cpu) in others:
        print(
            f"{name} vs {stock_name}: throughput {stock_wall / wall:.2f}x,"
            f" CPU a message {cpu / stock_cpu:.2f}x"
        )
    print(f"load average {' '.join(f'{load:.1f}' for load in os.getloadavg())}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int)
    parser.add_argument("--repeat", type=int, default=5)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--pubacks", action="store_true")
    mode.add_argument("--publish", type=int, metavar="N")
    args = parser.parse_args()
    if args.publish:
        clients = {"stock Client": nats.NATS, "LakeNatsClient": LakeNatsClient}
        return publish_benchmark(args.publish, args.repeat, clients)
    if args.pubacks:
        args.messages = args.messages or 200 * IN_FLIGHT
        return parse_benchmark(*pubacks(args.messages), ours_client, args)
    args.messages = args.messages or 200_000
    return parse_benchmark(*deliveries(args.messages), ours_raw, args)


if __name__ == "__main__":
    raise SystemExit(main())
