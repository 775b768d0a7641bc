"""The harness's JetStream reads (lake_platform_tests/jetstream_reads.py, what the topology
test reads the streams and the ingest consumers' backlog with) on a real 3-node cluster whose
leaders are SIGKILLed: at the moment of a fetch, and in a loop of stream leader kills."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js import JetStreamContext

from lake_platform.ingest.jetstream import (
    ConsumerSizing,
    ensure_consumers,
    ensure_streams,
    retrying,
)
from lake_platform.settings import LakeSettings
from lake_platform_tests.jetstream_reads import FETCH_BATCH, consumer_backlog, stream_messages
from lake_platform_tests.servers import NatsCluster, NatsNode
from lake_platform_tests.topology import first_value

pytestmark = pytest.mark.slow

MARKET_MESSAGES = 2 * FETCH_BATCH + 500
"""Three fetches: a kill before the second one leaves a read half done."""
SIGNALS_MESSAGES = 50
LEADER_KILLS = 3
ELECTION_TIMEOUT_S = 60.0


async def _fill(urls: list[str]) -> None:
    """Both streams (3 replicas) and their durable ingest consumers, as `init` makes them,
    holding messages whose payload is their stream sequence."""
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        settings = LakeSettings(nats_stream_replicas=3)
        await ensure_streams(js, settings)
        await ensure_consumers(js, ConsumerSizing.for_settings(settings))
        for stream, subject, count in (
            ("MARKET", "market.test", MARKET_MESSAGES),
            ("SIGNALS", "levels.test", SIGNALS_MESSAGES),
        ):
            # Retried (a new cluster's stream may not answer from every node yet) under a
            # message id, so a retry after a lost answer is not stored twice.
            acks = [
                retrying(
                    f"publish {subject}",
                    js.publish,
                    subject,
                    str(seq).encode(),
                    headers={"Nats-Msg-Id": f"{stream}-{seq}"},
                )
                for seq in range(1, count + 1)
            ]
            stored = await asyncio.gather(*acks)
            assert [ack.seq for ack in stored] == list(range(1, count + 1)), stream
    finally:
        await nc.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    with NatsCluster.start(tmp_path / "nats") as running:
        asyncio.run(_fill(running.urls))
        yield running


def _assert_whole_market(cluster: NatsCluster) -> None:
    messages = asyncio.run(stream_messages(cluster.urls, "MARKET"))
    sequences = [message.metadata.sequence.stream for message in messages]
    assert sequences == list(range(1, MARKET_MESSAGES + 1))
    assert [int(message.data) for message in messages] == sequences


def _another_leader(cluster: NatsCluster, stream: str, killed: NatsNode) -> NatsNode | None:
    try:
        leader = cluster.stream_leader(stream)
    except LookupError:  # mid-election
        return None
    return None if leader is killed else leader


def test_stream_read_resumes_when_its_consumers_node_is_killed_mid_read(cluster):
    """The failure of the topology test (issue 20): a fetch of the reader's ephemeral consumer
    answered by a 503 status (no responders: the consumer's node is gone, or its interest has
    not reached the client's node yet), which nats-py raises as a bare ServiceUnavailableError."""
    fetches: list[int] = []
    killed: list[str] = []

    async def kill_consumer_leader_before_second_fetch(
        reader: JetStreamContext.PullSubscription,
    ) -> None:
        fetches.append(len(fetches) + 1)
        if len(fetches) == 2:
            leader = (await reader.consumer_info()).cluster.leader
            cluster.kill(cluster.node(leader))
            killed.append(leader)

    messages = asyncio.run(
        stream_messages(
            cluster.urls, "MARKET", before_fetch=kill_consumer_leader_before_second_fetch
        )
    )
    assert killed, "the reader's consumer was never killed"
    sequences = [message.metadata.sequence.stream for message in messages]
    assert sequences == list(range(1, MARKET_MESSAGES + 1)), "each message read once, in order"


def test_harness_reads_wait_out_stream_leader_elections(cluster):
    """SIGKILL the MARKET stream leader `LEADER_KILLS` times; the reads are made at once
    (mid-election), again once another node leads (the killed one still down), and after the
    killed node is back: each returns everything, none raises."""
    expected_backlog = {"MARKET": (MARKET_MESSAGES, 0), "SIGNALS": (SIGNALS_MESSAGES, 0)}
    for _ in range(LEADER_KILLS):
        leader = cluster.stream_leader("MARKET")
        cluster.kill(leader)
        _assert_whole_market(cluster)
        assert asyncio.run(consumer_backlog(cluster.urls)) == expected_backlog
        first_value(
            lambda: _another_leader(cluster, "MARKET", leader),  # noqa: B023 (called at once)
            ELECTION_TIMEOUT_S,
            "another MARKET stream leader",
        )
        _assert_whole_market(cluster)
        assert asyncio.run(consumer_backlog(cluster.urls)) == expected_backlog
        cluster.restart(leader)
        _assert_whole_market(cluster)


def test_init_waits_out_a_stream_leader_election(cluster):
    """`lake-platform init` run while the MARKET stream leader was just SIGKILLed: its
    existence checks and stream reads wait out the election instead of failing."""
    from lake_platform.commands.init import init_nats

    leader = cluster.stream_leader("MARKET")
    cluster.kill(leader)
    said: list[str] = []
    settings = LakeSettings(nats_servers=tuple(cluster.urls), nats_stream_replicas=3)
    asyncio.run(init_nats(settings, said.append))
    assert [line.split(" (")[0] for line in said] == [
        "exists stream MARKET",
        "exists stream SIGNALS",
        "exists consumer MARKET/lake-bronze",
        "exists consumer SIGNALS/lake-bronze",
    ]
