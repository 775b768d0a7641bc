"""Faults under a running `lake-platform ingest` process, each ending with nothing lost and
the process still running: nats-server SIGKILLed and restarted, and the lake's disk full
(a small tmpfs the test mounts) until space is freed. SeaweedFS killed and restarted
mid-ingest is `test_s3_outage.py`."""

import asyncio
import dataclasses
import errno
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import fsspec
import nats
import nats.js.errors
import polars as pl
import pytest

from lake_platform.storage import LakeStore, StorageError
from lake_platform_tests.kill_loop import ingest_process
from lake_platform_tests.session import Session, build_session, publish, read_table
from lake_platform_tests.test_ingest_recovery import _pending, assert_everything_landed

WAIT_S = 120
TMPFS_SIZE = "16m"
CHUNK = 1 << 20


def landed(root: str, session: Session) -> bool:
    """Every good event of the session is in Bronze."""
    for table, event_ids in session.expected_event_ids().items():
        rows = read_table(root, f"bronze/{table}")
        if not rows.height or not event_ids <= set(rows.get_column("event_id")):
            return False
    return True


def all_acked(url: str) -> bool:
    """The consumers exist and hold nothing pending or unacked."""
    try:
        return asyncio.run(_pending(url)) == 0
    except nats.js.errors.NotFoundError:  # the ingest has not created them yet
        return False


async def stored(url: str) -> int:
    """Messages the streams hold."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return sum([(await js.stream_info(s)).state.messages for s in ("MARKET", "SIGNALS")])
    finally:
        await nc.close()


def wait_for(condition, what: str, process: subprocess.Popen[bytes]) -> None:
    """Until `condition()`, while the ingest keeps running (bounded)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert process.poll() is None, f"the ingest exited ({process.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT_S}s"
        time.sleep(0.2)


def both(first: Session, second: Session) -> Session:
    return Session(good=first.good + second.good, bad=first.bad + second.bad)


def stop(process: subprocess.Popen[bytes], log: Path) -> str:
    """SIGTERM the ingest (it must still be running); its exit code must be 0."""
    assert process.poll() is None, log.read_text()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, log.read_text()
    return log.read_text()


@pytest.mark.slow
def test_nats_server_sigkilled_mid_ingest_loses_nothing(ingest_settings, nats_server, tmp_path):
    url = ingest_settings.nats_servers[0]
    log = tmp_path / "ingest.log"
    first, second = build_session(events_per_schema=30), build_session(events_per_schema=30)
    asyncio.run(publish(url, first))
    process = ingest_process(ingest_settings, log)
    try:
        wait_for(lambda: landed(ingest_settings.data_root, first), "first session", process)
        nats_server.kill()
        time.sleep(2)  # the ingest keeps running without its server
        assert process.poll() is None, log.read_text()
        nats_server.restart()
        asyncio.run(publish(url, second))
        wait_for(lambda: landed(ingest_settings.data_root, second), "second session", process)
        # acks sent while the server was down are lost: those messages come back after
        # ack_wait, land again (Silver removes the duplicates) and are acked then
        wait_for(lambda: all_acked(url), "every message acked", process)
        stop(process, log)
    finally:
        process.kill()
    assert_everything_landed(ingest_settings, both(first, second))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `TMPFS_SIZE` mounted for the test (skipped where mounting is not allowed)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(path: Path) -> None:
    """Write `path` until the filesystem has no byte left."""
    with path.open("wb", buffering=0) as handle:
        for size in (CHUNK, 4096, 1):
            try:
                while True:
                    handle.write(b"\0" * size)
            except OSError as error:
                assert error.errno == errno.ENOSPC, error


def test_a_full_disk_is_a_transient_error_naming_enospc(small_disk):
    fill(small_disk / "filler")
    store = LakeStore(str(small_disk / "lake"), fsspec.filesystem("file"))
    with pytest.raises(StorageError, match="No space left on device") as raised:
        store.write_parquet(pl.DataFrame({"a": range(10_000)}), "bronze/t/part-0.parquet")
    assert raised.value.kind == "transient"
    assert store.list_files("bronze") == []


@pytest.mark.slow
def test_disk_full_mid_ingest_acks_nothing_then_everything_lands(
    ingest_settings, small_disk, tmp_path
):
    url = ingest_settings.nats_servers[0]
    settings = dataclasses.replace(ingest_settings, data_root=str(small_disk / "lake"))
    log = tmp_path / "ingest.log"
    first, second = build_session(events_per_schema=30), build_session(events_per_schema=30)
    asyncio.run(publish(url, first))
    process = ingest_process(settings, log)
    filler = small_disk / "filler"
    try:
        wait_for(lambda: all_acked(url), "first session acked", process)
        assert landed(settings.data_root, first)
        fill(filler)
        before = asyncio.run(stored(url))
        asyncio.run(publish(url, second))
        wait_for(lambda: log.read_text().count("No space left on device") >= 2, "ENOSPC", process)
        assert asyncio.run(_pending(url)) == asyncio.run(stored(url)) - before
        filler.unlink()
        wait_for(lambda: landed(settings.data_root, second), "second session", process)
        output = stop(process, log)
    finally:
        process.kill()
    assert "storage failed (transient)" in output
    assert_everything_landed(settings, both(first, second))
    assert asyncio.run(_pending(url)) == 0
