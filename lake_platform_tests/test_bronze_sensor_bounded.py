"""`bronze_ingest_sensor` ticks are bounded and never run two ingests at once, and they
report the ledger whatever the ingest part did: a store that accepts connections and never
answers, and an unexpected error in the ingest, with a real nats-server and Dagster instance."""

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import dagster as dg
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.bronze import sensor
from lake_platform.defs.partitions import HOURLY
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id, write_entry
from lake_platform.ingest.service import IngestService
from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import settings_env

pytestmark = pytest.mark.slow

GUARD_S = 150.0
"""Only keeps a broken build from hanging the suite (a store call waits 3 × 60 s)."""


class SilentListener:
    """A TCP listener on 127.0.0.1 that accepts every connection, reads, and never answers."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.accepted = 0
        self._connections: list[socket.socket] = []
        self._closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            self._connections.append(connection)
            threading.Thread(target=self._swallow, args=(connection,), daemon=True).start()

    @staticmethod
    def _swallow(connection: socket.socket) -> None:
        try:
            while connection.recv(65_536):
                pass
        except OSError:
            pass

    def close(self) -> None:
        """Stop listening and drop every connection: waiting clients fail at once."""
        self._closed.set()
        for held in (self._server, *self._connections):
            with contextlib.suppress(OSError):  # wakes a blocked accept() or recv() at once
                held.shutdown(socket.SHUT_RDWR)
            held.close()


@pytest.fixture
def silent_listener() -> Iterator[SilentListener]:
    listener = SilentListener()
    yield listener
    listener.close()


@pytest.fixture
def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short waits so a tick gives up on a silent store quickly; the structure is the same."""
    monkeypatch.setattr(sensor, "TICK_PULL_S", 1.0)
    monkeypatch.setattr(sensor, "INGEST_WAIT_S", 1.0, raising=False)
    monkeypatch.setattr(sensor, "REPORT_WAIT_S", 1.0, raising=False)


def run_tick(instance: dg.DagsterInstance, cursor: str | None = None) -> object:
    """One tick, in a thread so that a tick that never returns fails the test; what it
    raised is raised here."""
    outcome: list[object] = []
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=defs.get_repository_def().get_top_level_resources(),
    )

    def evaluate() -> None:
        try:
            outcome.append(sensor.bronze_ingest_sensor(context))
        except Exception as error:
            outcome.append(error)

    thread = threading.Thread(target=evaluate, daemon=True)
    thread.start()
    thread.join(GUARD_S)
    assert outcome, "the tick did not return while the store stayed silent"
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


def poll(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_silent_store_neither_holds_a_tick_nor_starts_a_second_ingest(
    nats_server, silent_listener, fast_ticks, monkeypatch
):
    monkeypatch.setenv("DATA_ROOT", "s3://lake/bronze-tick")
    monkeypatch.setenv("USE_S3", "true")
    monkeypatch.setenv("S3_ENDPOINT", f"http://127.0.0.1:{silent_listener.port}")
    monkeypatch.setenv("S3_ACCESS_KEY", "key")
    monkeypatch.setenv("S3_SECRET_KEY", "secret-value")
    monkeypatch.setenv("S3_REGION", "us-east-1")
    monkeypatch.setenv("NATS_URL", nats_server.url)
    with dg.instance_for_test() as instance:
        first = run_tick(instance)
        assert isinstance(first, dg.SkipReason)
        ingests = sensor.INGEST_SLOT
        assert ingests.busy  # the first tick's ingest still waits for the store
        assert silent_listener.accepted >= 1
        started = ingests.started

        second = run_tick(instance)
        assert isinstance(second, dg.SkipReason)
        assert "the ingest of an earlier tick is still running" in (second.skip_message or "")
        assert ingests.started == started  # no second ingest beside the first

        silent_listener.close()  # the waiting calls fail; the ingest ends and frees its slot
        poll(lambda: not ingests.busy, "the ingest never ended after the store went away")
        poll(lambda: not sensor.LEDGER_READ_SLOT.busy, "the ledger read never ended")
        run_tick(instance)
        assert ingests.started == started + 1
        poll(lambda: not ingests.busy, "the third tick's ingest never ended")
        poll(lambda: not sensor.LEDGER_READ_SLOT.busy, "the third tick's ledger read never ended")


def test_an_unexpected_ingest_error_is_logged_and_the_ledger_still_reported(
    ingest_settings, monkeypatch
):
    for name, value in settings_env(ingest_settings).items():
        monkeypatch.setenv(name, value)
    hour_s = int(HOURLY.start.timestamp()) + 3 * 3_600
    committed_ns = time.time_ns() - 60 * 10**9
    entry = LedgerEntry(
        entry_id=new_entry_id(committed_ns),
        committed_ns=committed_ns,
        writer="service:elsewhere:1",
        reported=False,
        files=(
            CommittedFile(
                path="bronze/stocks/trades/symbol=SPY/x.parquet",
                table="stocks/trades",
                stream="MARKET",
                rows=3,
                bytes=100,
                first_seq=1,
                last_seq=3,
                partition_value="SPY",
                hour_start_ns=hour_s * 10**9,
            ),
        ),
        quarantine=(),
    )
    write_entry(LakeStore.from_settings(ingest_settings), entry)

    async def broken_run(self: IngestService, **_: object) -> None:
        raise RuntimeError("a defect in the ingest")

    monkeypatch.setattr(IngestService, "run", broken_run)
    with dg.instance_for_test() as instance:
        result = run_tick(instance)
    assert isinstance(result, dg.SensorResult)
    assert [(e.asset_key.to_user_string(), e.partition) for e in result.asset_events] == [
        ("bronze/stocks/trades", HOURLY.get_partition_key_for_timestamp(hour_s))
    ]
