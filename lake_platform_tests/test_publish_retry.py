"""Publishers retry unacked messages with their `Nats-Msg-Id`: a server restart mid-session
leaves every message in the stream exactly once, and the stats count each once."""

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import nats
import pytest

from lake_platform.embedded_nats import NatsServer
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import Message, SessionSpec, session
from lake_platform.simulate.publisher import MSG_ID_HEADER, publish

END_NS = 1_765_900_000 * 10**9
KILL_AT = 1_500
DOWN_S = 1.5


def killing_at(messages: list[Message], server: NatsServer) -> Iterator[Message]:
    """`messages`, with the server SIGKILLed when the publisher asks for message `KILL_AT`
    (hundreds are awaiting their PubAck then) and started again shortly after."""
    for index, message in enumerate(messages):
        if index == KILL_AT:
            server.kill()
            threading.Timer(DOWN_S, server.restart).start()
        yield message


async def stored_ids(url: str) -> Counter[str]:
    """The `Nats-Msg-Id` of every message in both streams, with how often each is stored."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    ids: Counter[str] = Counter()
    for stream in ("MARKET", "SIGNALS"):
        last = (await js.stream_info(stream)).state.last_seq
        for seq in range(1, last + 1):
            message = await js.get_msg(stream, seq)
            ids[(message.headers or {}).get(MSG_ID_HEADER, "")] += 1
    await nc.close()
    return ids


@pytest.mark.slow
def test_a_server_restart_mid_publish_stores_every_message_once(nats_server):
    messages = list(session(SessionSpec(minutes=0.5, rate=100, seed=5, end_ns=END_NS)))
    settings = LakeSettings(nats_servers=(nats_server.url,))
    stats = asyncio.run(
        publish(settings, killing_at(messages, nats_server), progress=False, msg_id_prefix="t")
    )
    assert stats.retries > 0  # the restart was felt
    assert stats.total == len(messages)
    assert stats.by_schema == Counter(message.schema for message in messages)
    assert asyncio.run(stored_ids(nats_server.url)) == {f"t-{i}": 1 for i in range(len(messages))}
