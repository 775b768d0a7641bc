"""Hostile subjects and headers on a real nats-server, through the real ingest.

What the server does with them (checked here, not assumed): it stores subjects of any token
count its streams capture, wildcard characters included (`*`/`>` are literal tokens in a
published subject unless the client is pedantic), non-ASCII tokens, and subjects that are not
UTF-8 at all (a raw publisher); it refuses a subject no stream captures (the publisher gets
"no response from stream"), headers over 64 KiB, and a `Nats-Msg-Id` seen within the stream's
duplicate window (acknowledged as a duplicate, not stored). Every message it stored ends up
in Bronze or in the quarantine (docs/contract.md §2): matched by stream sequence.
"""

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path

import nats
from nats.js.errors import BadRequestError, NoStreamResponseError

from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.settings import LakeSettings
from lake_platform.storage.paths import bounded_folder_name
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.session import read_table
from lake_platform_tests.test_ingest_hardening import _pending, run_service, trade

LONG_HEADER = "h" * 60_000
"""Just under the server's 64 KiB header limit."""


@dataclass(frozen=True)
class Sent:
    """One publish: where, what, and what the test expects (a Bronze `seq` or a reason)."""

    subject: str
    payload: bytes
    headers: dict[str, str] | None = None
    quarantine_reason: str | None = None


def signal() -> bytes:
    return json.dumps(
        {**SAMPLES["levels.signals"], "ts_event_ns": json.loads(trade("X", 0))["ts_event_ns"]}
    ).encode()


def hostile_messages() -> list[Sent]:
    good = [
        Sent("market.stocks.trades" + "".join(f".t{i}" for i in range(extra)), trade("SPY", extra))
        for extra in range(8)  # 3 to 10 tokens
    ]
    return [
        *good,
        Sent("levels.signals", signal()),
        Sent("market.stocks", trade("SPY", 20), quarantine_reason="no schema for subject"),
        Sent("market.stocks.trades.*", trade("SPY", 21)),
        Sent("market.stocks.>", trade("SPY", 22), quarantine_reason="no schema for subject"),
        Sent("market.*.trades", trade("SPY", 23), quarantine_reason="no schema for subject"),
        Sent("market.stocks.trades.ÄPFEL", trade("ÄPFEL", 24)),
        Sent("market.données.trades.é", trade("é", 25), quarantine_reason="no schema"),
        Sent("market.stocks.trades." + "ü" * 150, b"{", quarantine_reason="not a JSON object"),
        Sent("market.stocks.trades.H", trade("SPY", 26), {"X-Trace": LONG_HEADER}),
        Sent("market.stocks.trades.H", b"nope", {"X-Trace": LONG_HEADER}, "not a JSON object"),
        Sent("market.stocks.trades.D", trade("SPY", 27), {"Nats-Msg-Id": "same"}),
    ]


async def publish(url: str, messages: list[Sent]) -> dict[tuple[str, int], Sent]:
    """Publish each message; the stored ones by (stream, sequence)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        stored = {}
        for sent in messages:
            ack = await js.publish(sent.subject, sent.payload, headers=sent.headers)
            assert not ack.duplicate, sent.subject
            stored[(ack.stream, ack.seq)] = sent
        return stored
    finally:
        await nc.close()


async def refused_publishes(url: str) -> dict[str, bool]:
    """What the server refuses to store, and a reused `Nats-Msg-Id` (acked as duplicate)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        refused = {}
        try:
            await js.publish("market", trade("SPY", 90), timeout=2)
            refused["one token, no stream"] = False
        except NoStreamResponseError:
            refused["one token, no stream"] = True
        try:
            await js.publish(
                "market.stocks.trades.H", trade("SPY", 91), headers={"X": "v" * 70_000}
            )
            refused["70 kB header"] = False
        except BadRequestError as error:
            refused["70 kB header"] = "header size exceeds" in str(error)
        for subject in ("market.stocks.trades.D", "market.stocks.quotes.D"):
            ack = await js.publish(subject, trade("SPY", 92), headers={"Nats-Msg-Id": "same"})
            refused[f"reused Nats-Msg-Id on {subject}"] = ack.duplicate
        return refused
    finally:
        await nc.close()


def raw_publish(port: int, subject: bytes, payload: bytes) -> None:
    """Publish over the NATS text protocol, subject bytes as given (clients encode UTF-8)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.recv(4096)  # INFO
        command = b"PUB %s %d\r\n%s\r\nPING\r\n" % (subject, len(payload), payload)
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n' + command)
        assert sock.recv(4096).startswith(b"PONG")


def assert_each_stored_message_landed(
    settings: LakeSettings, stored: dict[tuple[str, int], Sent]
) -> None:
    root = settings.data_root
    bronze = read_table(root, "bronze/stocks/trades")
    signals = read_table(root, "bronze/levels/signals")
    quarantine = read_table(root, "_quarantine")
    landed = {("MARKET", seq) for seq in bronze.get_column("_stream_seq")}
    landed |= {("SIGNALS", seq) for seq in signals.get_column("_stream_seq")}
    by_seq = {(row["stream"], row["stream_seq"]): row for row in quarantine.iter_rows(named=True)}
    assert landed.isdisjoint(by_seq)
    assert landed | set(by_seq) == set(stored)
    for key, sent in stored.items():
        if sent.quarantine_reason is None:
            assert key in landed, sent.subject
            continue
        row = by_seq[key]
        assert sent.quarantine_reason in row["error"], (sent.subject, row["error"])
        assert (row["subject"], row["payload"]) == (sent.subject, sent.payload)
        assert json.loads(row["headers"]) == (sent.headers or {})
        folder = Path(row["_file"]).parts[1]
        assert folder == bounded_folder_name(sent.subject) and len(folder.encode()) <= 200


def test_hostile_subjects_and_headers_are_stored_or_quarantined(ingest_settings):
    url = ingest_settings.nats_servers[0]
    stored = asyncio.run(publish(url, hostile_messages()))
    assert all(asyncio.run(refused_publishes(url)).values())

    service = run_service(ingest_settings, until_idle=True, max_seconds=60)
    assert service.stats.storage_errors == 0
    assert asyncio.run(_pending(url)) == 0
    assert_each_stored_message_landed(ingest_settings, stored)
    bronze = read_table(ingest_settings.data_root, "bronze/stocks/trades")
    assert "ÄPFEL" in bronze.get_column("symbol").to_list()
    assert 92 not in bronze.get_column("seq").to_list()  # the duplicate Nats-Msg-Id


def test_a_subject_that_is_not_utf8_does_not_block_the_stream(ingest_settings, nats_server):
    """nats-py decodes subjects strictly: such a message used to fail the client's read loop
    on every delivery, so it and every message pulled after it stayed pending forever."""
    url = ingest_settings.nats_servers[0]
    before = asyncio.run(publish(url, [Sent("market.stocks.trades.A", trade("SPY", 1))]))
    raw_publish(nats_server.port, b"market.stocks.trades.\xff\xfe", trade("SPY", 2))
    raw_publish(nats_server.port, b"market.\xff.trades", trade("SPY", 3))
    after = asyncio.run(publish(url, [Sent("market.stocks.trades.B", trade("SPY", 4))]))

    run_service(ingest_settings, until_idle=True, max_seconds=60)
    assert asyncio.run(_pending(url)) == 0
    bronze = read_table(ingest_settings.data_root, "bronze/stocks/trades")
    assert sorted(bronze.get_column("seq").to_list()) == [1, 2, 4]
    (row,) = read_table(ingest_settings.data_root, "_quarantine").iter_rows(named=True)
    assert row["subject"] == "market.\ufffd.trades"
    assert "no schema for subject" in row["error"]
    assert row["stream_seq"] == 3 and set(before) | set(after) == {("MARKET", 1), ("MARKET", 4)}
