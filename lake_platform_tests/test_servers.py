"""Real-server tests for lake_platform_tests.servers (SeaweedFS S3 and NATS JetStream)."""

from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nats
import pytest
import s3fs

from lake_platform.embedded_nats import HOST, NatsServer
from lake_platform_tests.servers import S3Server

pytestmark = pytest.mark.slow


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _listening_addresses(pid: int) -> set[str]:
    """Hex-encoded local IPv4/IPv6 addresses of the TCP sockets ``pid`` is listening on."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        target = os.readlink(fd)
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A = TCP_LISTEN
                addresses.add(local.rsplit(":", 1)[0])
    return addresses


def _s3_roundtrip(server: S3Server, bucket: str, payload: bytes) -> bytes:
    server.create_bucket(bucket)
    fs = server.filesystem()
    fs.pipe(f"{bucket}/dir/object.bin", payload)
    return fs.cat(f"{bucket}/dir/object.bin")


def test_s3_server_roundtrip_and_stop(tmp_path: Path) -> None:
    server = S3Server.start(tmp_path / "s3")
    pid, port = server.pid, server.ports["s3"]
    try:
        assert server.endpoint == f"http://{HOST}:{port}"
        assert _s3_roundtrip(server, "lake-test", b"hello lake") == b"hello lake"
        server.create_bucket("lake-test")  # idempotent
        assert server.filesystem().ls("lake-test/dir") == ["lake-test/dir/object.bin"]
        if Path("/proc/net/tcp").exists():
            # 0100007F is 127.0.0.1 in /proc/net/tcp's little-endian hex.
            assert _listening_addresses(pid) == {"0100007F"}
    finally:
        server.stop()
    assert not _pid_alive(pid)
    assert not _accepts_connections(port)


def test_s3_rejects_wrong_credentials(tmp_path: Path) -> None:
    with S3Server.start(tmp_path / "s3", secret_key="right-secret") as server:
        server.create_bucket("private")
        intruder = s3fs.S3FileSystem(
            key=server.access_key,
            secret="wrong-secret",
            client_kwargs={"endpoint_url": server.endpoint, "region_name": S3Server.REGION},
            skip_instance_cache=True,
        )
        with pytest.raises(PermissionError):
            intruder.ls("private", refresh=True)


def test_two_s3_servers_run_concurrently(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        servers = list(pool.map(S3Server.start, [tmp_path / "a", tmp_path / "b"]))
    try:
        a, b = servers
        assert not set(a.ports.values()) & set(b.ports.values())
        assert _s3_roundtrip(a, "bucket-a", b"from a") == b"from a"
        assert _s3_roundtrip(b, "bucket-b", b"from b") == b"from b"
        # Separate storage: each server only sees its own bucket.
        assert a.filesystem().ls("", refresh=True) == ["bucket-a"]
        assert b.filesystem().ls("", refresh=True) == ["bucket-b"]
    finally:
        for server in servers:
            server.stop()
    assert not any(_pid_alive(server.pid) for server in servers)


async def _publish(url: str, stream: str, subject: str, payload: bytes) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])  # file storage is the default
        ack = await js.publish(subject, payload)
        return ack.seq
    finally:
        await nc.close()


async def _stored_message(url: str, stream: str, seq: int) -> bytes:
    nc = await nats.connect(url)
    try:
        message = await nc.jetstream().get_msg(stream, seq)
        assert message.data is not None
        return message.data
    finally:
        await nc.close()


def test_nats_messages_survive_restart_and_crash(tmp_path: Path) -> None:
    server = NatsServer.start(tmp_path / "nats")
    try:
        url, first_pid = server.url, server.pid
        assert url == f"nats://{HOST}:{server.port}"
        seq = asyncio.run(_publish(url, "TICKS", "ticks.>", b"tick-1"))

        server.restart()
        assert server.url == url
        assert server.pid != first_pid
        assert not _pid_alive(first_pid)
        assert asyncio.run(_stored_message(url, "TICKS", seq)) == b"tick-1"

        crashed_pid = server.pid
        server.kill()
        assert not _pid_alive(crashed_pid)
        server.restart()
        assert asyncio.run(_stored_message(url, "TICKS", seq)) == b"tick-1"
    finally:
        server.stop()
    assert not _pid_alive(server.pid)
    assert not _accepts_connections(server.port)


def test_nats_context_manager_stops_server(tmp_path: Path) -> None:
    with NatsServer.start(tmp_path / "nats") as server:
        assert _accepts_connections(server.port)
        assert server.store_dir.is_dir()
    assert not _pid_alive(server.pid)


def test_s3_server_killed_then_restarted_keeps_endpoint_and_data(tmp_path: Path) -> None:
    with S3Server.start(tmp_path / "s3") as server:
        endpoint = server.endpoint
        assert _s3_roundtrip(server, "kept", b"before the outage") == b"before the outage"
        server.kill()
        assert not server.running
        assert not _accepts_connections(server.ports["s3"])
        server.restart()
        assert server.running and server.endpoint == endpoint
        assert server.filesystem().cat("kept/dir/object.bin") == b"before the outage"
