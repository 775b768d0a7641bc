"""The lean pull and the bulk publish of the ingest's NATS client, on a real nats-server."""

import asyncio

import nats.errors
import pytest

from lake_platform.ingest.connection import connect
from lake_platform.ingest.jetstream import (
    DURABLE,
    ConsumerSizing,
    ensure_consumers,
    ensure_streams,
)
from lake_platform.ingest.pull import LeanPull
from lake_platform.local_servers import NatsServer
from lake_platform.settings import LakeSettings

SUBJECTS = [f"market.stocks.trades.S{index}" for index in range(5)]


async def pull_and_ack(url: str) -> None:
    settings = LakeSettings(nats_servers=(url,))
    nc = await connect(settings, name="test-pull")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await ensure_consumers(js, ConsumerSizing.for_settings(settings))
    for index, subject in enumerate(SUBJECTS):
        headers = {"Nats-Msg-Id": f"id-{index}"} if index % 2 else None
        await js.publish(subject, f'{{"n":{index}}}'.encode(), headers=headers)
    pull = LeanPull(nc, "MARKET", DURABLE)
    await pull.start()
    try:
        pulled, drained = await pull.fetch(100, 0.5)
        assert pulled.stream == "MARKET"
        assert pulled.subjects == SUBJECTS
        assert pulled.payloads == [f'{{"n":{index}}}'.encode() for index in range(5)]
        assert [(h or {}).get("Nats-Msg-Id") for h in pulled.headers] == [
            None,
            "id-1",
            None,
            "id-3",
            None,
        ]
        assert all(reply.startswith("$JS.ACK.MARKET.") for reply in pulled.replies)
        assert drained  # the request ended with "no messages" before it was filled

        await nc.publish_all(pulled.replies[:3])
        await nc.flush()
        info = await js.consumer_info("MARKET", DURABLE)
        assert (info.num_pending, info.num_ack_pending) == (0, 2)

        await nc.publish_all(pulled.replies[3:], b"+WPI")  # in progress: still unacked
        await nc.flush()
        assert (await js.consumer_info("MARKET", DURABLE)).num_ack_pending == 2
        await nc.publish_all(pulled.replies[3:])
        await nc.flush()
        assert (await js.consumer_info("MARKET", DURABLE)).num_ack_pending == 0

        again, drained = await pull.fetch(100, 0.2)
        assert len(again) == 0 and drained
    finally:
        await pull.stop()
        await nc.close()
    with pytest.raises(nats.errors.ConnectionClosedError):
        await nc.publish_all(pulled.replies)


def test_lean_pull_takes_messages_as_columns_and_publish_all_acks_them(
    nats_server: NatsServer,
) -> None:
    asyncio.run(pull_and_ack(nats_server.url))
