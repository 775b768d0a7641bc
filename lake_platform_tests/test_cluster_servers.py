"""Real-server tests of the launchers the topology test builds on: PostgreSQL (Debian's
binaries, run as the `postgres` account when we are root) and a 3-node NATS JetStream cluster."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import nats
import psycopg2
import pytest
from nats.js import api as js_api

from lake_platform.ingest.jetstream import (
    ConsumerSizing,
    ensure_consumers,
    ensure_streams,
    retrying,
)
from lake_platform.settings import LakeSettings
from lake_platform_tests.servers import NatsCluster, PostgresServer
from lake_platform_tests.test_servers import _accepts_connections, _listening_addresses, _pid_alive
from lake_platform_tests.topology import require_postgres

pytestmark = pytest.mark.slow
LOOPBACK_HEX = "0100007F"  # 127.0.0.1 in /proc/net/tcp's little-endian hex


def test_postgres_server_serves_its_database_by_password_on_loopback_only(tmp_path: Path) -> None:
    require_postgres()
    server = PostgresServer.start(tmp_path / "pg", user="dagster", database="runs")
    pid, port, data_dir = server.pid, server.port, server.data_dir
    try:
        with (
            psycopg2.connect(
                host="127.0.0.1", port=port, user="dagster", password=server.password, dbname="runs"
            ) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute("select current_database(), current_user")
            assert cursor.fetchone() == ("runs", "dagster")
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host="127.0.0.1", port=port, user="dagster", password="wrong")
        assert _listening_addresses(pid) == {LOOPBACK_HEX}
        assert server.url.startswith("postgresql+psycopg2://dagster:")
    finally:
        server.stop()
    assert not _pid_alive(pid)
    assert not _accepts_connections(port)
    assert not data_dir.exists()
    assert "database system is shut down" in server.log_path.read_text()


async def _publish(urls: list[str], payloads: range, create: bool = False) -> None:
    """Publish `payloads` (to a new R3 stream when `create`), retrying while a leader is
    being elected."""
    nc = await nats.connect(servers=urls)
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(name="TICKS", subjects=["ticks.>"], num_replicas=3)
        for index in payloads:
            await _publish_once(js, index)
    finally:
        await nc.close()


async def _publish_once(js: nats.js.JetStreamContext, index: int) -> None:
    """Publish tick ``index``; its message id makes a retried publish store it once."""
    headers = {"Nats-Msg-Id": f"tick-{index}"}
    payload = str(index).encode()
    await retrying(f"tick {index}", js.publish, "ticks.a", payload, timeout=1, headers=headers)


async def _stream_state(url: str) -> js_api.StreamState:
    nc = await nats.connect(url)
    try:
        return (await retrying("stream TICKS", nc.jetstream().stream_info, "TICKS")).state
    finally:
        await nc.close()


def test_nats_cluster_survives_the_stream_leader_crash(tmp_path: Path) -> None:
    with NatsCluster.start(tmp_path / "nats") as cluster:
        assert [node.name for node in cluster.nodes] == ["nats-1", "nats-2", "nats-3"]
        for node in cluster.nodes:
            assert _listening_addresses(node.pid) == {LOOPBACK_HEX}
        asyncio.run(_publish(cluster.urls, range(100), create=True))
        leader = cluster.stream_leader("TICKS")
        crashed_pid = leader.pid
        cluster.kill(leader)
        assert not _pid_alive(crashed_pid)
        asyncio.run(_publish(cluster.urls, range(100, 200)))
        new_leader = cluster.stream_leader("TICKS")
        assert new_leader is not leader
        cluster.restart(leader)
        assert leader.running and leader.pid != crashed_pid
        state = asyncio.run(_stream_state(leader.url))
        assert (state.messages, state.first_seq, state.last_seq) == (200, 1, 200)
        pids = [node.pid for node in cluster.nodes]
    assert not any(map(_pid_alive, pids))
    assert not any(_accepts_connections(node.port) for node in cluster.nodes)


class _FirstRetry(logging.Handler):
    """Set once the JetStream set-up logs its first retry."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "no answer from JetStream" in record.getMessage():
            self.seen.set()


async def _set_up_while_quorum_returns(cluster: NatsCluster, lost: list) -> float:
    """`ensure_streams` and `ensure_consumers` through the one node left; the two others come
    back once the set-up has had to retry. Returns the consumers' ack wait."""
    first_retry = _FirstRetry()
    jetstream_log = logging.getLogger("lake_platform.ingest.jetstream")
    jetstream_log.addHandler(first_retry)

    def bring_back() -> None:
        if first_retry.seen.wait(60):
            for node in lost:
                cluster.restart(node)

    nc = await nats.connect(cluster.nodes[0].url)
    try:
        js = nc.jetstream()
        settings = LakeSettings(nats_stream_replicas=3)
        returning = asyncio.create_task(asyncio.to_thread(bring_back))
        try:
            await ensure_streams(js, settings)
            return await ensure_consumers(js, ConsumerSizing.for_settings(settings))
        finally:
            first_retry.seen.set()  # never leave the thread waiting
            await returning
    finally:
        jetstream_log.removeHandler(first_retry)
        await nc.close()


def test_ingest_set_up_waits_for_a_cluster_without_quorum(tmp_path: Path, caplog) -> None:
    """A worker starting while the cluster elects a leader waits instead of exiting: with two
    of three nodes down no JetStream request is answered until they are back."""
    with NatsCluster.start(tmp_path / "nats") as cluster:
        lost = cluster.nodes[1:]
        for node in lost:
            cluster.kill(node)
        with caplog.at_level(logging.WARNING, logger="lake_platform.ingest.jetstream"):
            ack_wait = asyncio.run(_set_up_while_quorum_returns(cluster, lost))
        assert ack_wait > 0
        assert "no answer from JetStream" in caplog.text
        state = asyncio.run(_stream_info(cluster.urls, "MARKET"))
        assert state.config.num_replicas == 3
        assert state.cluster.leader in {node.name for node in cluster.nodes}


async def _stream_info(urls: list[str], stream: str) -> js_api.StreamInfo:
    nc = await nats.connect(servers=urls)
    try:
        return await retrying(f"stream {stream}", nc.jetstream().stream_info, stream)
    finally:
        await nc.close()
