"""The ingest under a deleted consumer, acks during a NATS outage, poison frames and large
payloads, on a real nats-server; and the jitter of its retry loops."""

import asyncio
import dataclasses
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable

import nats
import nats.errors
import polars as pl
import pytest

from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest import jetstream
from lake_platform.ingest.backoff import Backoff
from lake_platform.ingest.failpoints import FAILPOINT_ENV
from lake_platform.ingest.jetstream import DURABLE, ensure_streams
from lake_platform.ingest.metrics import IngestMetrics
from lake_platform.ingest.service import IngestFailedError, IngestService, writer_name
from lake_platform.ingest.stats import IngestStats
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform_tests.session import read_table
from lake_platform_tests.test_ingest_hardening import consumer_infos, ledger_entries, trade

WAIT_S = 120.0


async def poll(condition: Callable[[], Awaitable[bool] | bool], what: str, *, within=WAIT_S):
    """Until `condition()` holds, polled every 50 ms, for at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"no {what} within {within:.0f}s"
        await asyncio.sleep(0.05)


def server_in_msgs(server: NatsServer) -> int:
    """Messages the server received from all clients (`/varz`): pulls, acks, publishes."""
    url = f"http://127.0.0.1:{server.monitor_port}/varz"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["in_msgs"]


async def publish_core(url: str, messages: list[tuple[str, bytes]]) -> None:
    """Publish without waiting for each JetStream ack (the streams store them all the same)."""
    nc = await nats.connect(url)
    try:
        await ensure_streams(nc.jetstream())
        for subject, payload in messages:
            await nc.publish(subject, payload)
        await nc.flush()
    finally:
        await nc.close()


async def stream_messages(url: str, stream: str) -> int:
    nc = await nats.connect(url)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


def bronze_seqs(root: str) -> pl.Series:
    return read_table(root, "bronze/stocks/trades").get_column("_stream_seq")


def bronze_rows(root: str) -> int:
    try:
        return bronze_seqs(root).len()
    except (FileNotFoundError, pl.exceptions.ComputeError, ValueError):
        return 0


# --- jitter ---------------------------------------------------------------------------------


def test_two_backoff_schedules_differ_and_stay_within_their_bounds():
    first, second = Backoff(0.25, 2.0), Backoff(0.25, 2.0)
    one = [first.next() for _ in range(12)]
    two = [second.next() for _ in range(12)]
    assert one != two
    assert all(0.25 <= delay <= 2.0 for delay in one + two)
    first.reset()
    assert 0.25 <= first.next() <= 0.75


def test_jetstream_retries_of_two_workers_do_not_run_in_lockstep(monkeypatch):
    """Two requests failing five times each: their retry delays differ (the old schedule was
    0.25, 0.5, 1, 2, 2 s for everybody)."""
    delays: list[float] = []

    async def no_wait(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(jetstream.asyncio, "sleep", no_wait)

    def failing_five_times() -> Callable[[], Awaitable[str]]:
        calls = 0

        async def request() -> str:
            nonlocal calls
            calls += 1
            if calls <= 5:
                raise nats.errors.NoRespondersError
            return "answered"

        return request

    schedules = []
    for _ in range(2):
        delays.clear()
        assert asyncio.run(jetstream.retrying("test", failing_five_times())) == "answered"
        schedules.append(list(delays))
    assert len(schedules[0]) == len(schedules[1]) == 5
    assert schedules[0] != schedules[1]


def test_storage_retries_of_two_workers_do_not_run_in_lockstep(tmp_path):
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    store = LakeStore.from_settings(settings)
    services = [IngestService(settings, store, writer=writer_name("test")) for _ in range(2)]
    one, two = ([s.storage_backoff.next() for _ in range(8)] for s in services)
    assert one != two


# --- item 3: a deleted consumer -------------------------------------------------------------


async def delete_consumers(url: str) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for stream in ("MARKET", "SIGNALS"):
            await js.delete_consumer(stream, DURABLE)
    finally:
        await nc.close()


@pytest.mark.slow
def test_a_deleted_consumer_is_recreated_after_the_last_committed_message(
    ingest_settings, nats_server, caplog
):
    """The consumers deleted under a running ingest: it asks a bounded number of times, says
    so once, recreates them after the ledger's last committed sequence, and goes on; the new
    consumer delivers only the messages published since (nothing committed comes back)."""
    url, root = nats_server.url, ingest_settings.data_root
    settings = dataclasses.replace(ingest_settings, bronze_max_age_s=0.2)

    async def scenario() -> tuple[int, dict[str, object]]:
        await publish_core(url, [("market.stocks.trades.SPY", trade("SPY", i)) for i in range(20)])
        service = IngestService(settings, LakeStore.from_settings(settings), writer="test")
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop=stop))
        try:
            await poll(lambda: service.stats.rows == 20, "first 20 rows committed")
            await poll(_acked(url, "MARKET", 20), "first 20 acked")
            before = server_in_msgs(nats_server)
            await delete_consumers(url)
            await publish_core(
                url, [("market.stocks.trades.QQQ", trade("QQQ", i)) for i in range(20, 30)]
            )
            await poll(lambda: service.stats.rows == 30, "the 10 new rows committed")
            asked = server_in_msgs(nats_server) - before
            infos = await consumer_infos(url)
        finally:
            stop.set()
            await running
        return asked, infos

    with caplog.at_level(logging.INFO, logger="lake_platform.ingest"):
        asked, infos = asyncio.run(scenario())
    market = infos["MARKET"]
    assert market.delivered.consumer_seq == 10  # only what was published after the deletion
    assert market.num_pending == market.num_ack_pending == 0
    seqs = bronze_seqs(root)
    assert seqs.len() == 30 and seqs.n_unique() == 30
    # 10 publishes, their acks, a few status pulls and backoff pulls, consumer requests: not
    # a request per round trip for as long as it lasted.
    assert asked < 200, asked
    said = [r.getMessage() for r in caplog.records if "answered" in r.getMessage()]
    for stream in ("MARKET", "SIGNALS"):  # 409 Consumer Deleted, maybe a 503: each said once
        of_stream = [line for line in said if f"pull from {stream} " in line]
        assert 1 <= len(of_stream) == len(set(of_stream)) <= 2, said
    assert any(
        "created it again, delivering from sequence 21" in r.getMessage() for r in caplog.records
    )


def _acked(url: str, stream: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        info = (await consumer_infos(url))[stream]
        return info.ack_floor.stream_seq >= count and info.num_ack_pending == 0

    return check


async def delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().delete_stream(stream)
    finally:
        await nc.close()


class GatedStore(LakeStore):
    """A real local store whose first write waits until the test opens the gate."""

    entered: threading.Event
    gate: threading.Event

    def write_parquet_files(self, files):
        self.entered.set()
        assert self.gate.wait(WAIT_S), "the gate was never opened"
        return super().write_parquet_files(files)


@pytest.mark.slow
def test_a_lost_stream_makes_the_worker_unhealthy_and_until_idle_ends_with_one_line(
    ingest_settings, nats_server, monkeypatch
):
    """A stream deleted under a running `--until-idle` ingest (held in its first commit, so
    it cannot end first) cannot get its consumer back: pulls back off (counted at the
    server), `/healthz` turns 503 naming it, and the run ends with one clear error instead
    of asking forever."""
    from lake_platform.ingest import pull_loop

    monkeypatch.setattr(pull_loop, "PULL_UNHEALTHY_AFTER_S", 2.0)
    monkeypatch.setattr(pull_loop, "PULL_GIVE_UP_S", 6.0)
    url = nats_server.url
    settings = dataclasses.replace(ingest_settings, bronze_max_age_s=0.2)
    store = GatedStore(settings.data_root, LakeStore.from_settings(settings).fs)
    store.entered, store.gate = threading.Event(), threading.Event()
    metrics = IngestMetrics()
    health: list[tuple[int, str]] = []

    def on_status(stats: IngestStats) -> None:
        metrics.update(stats)
        health.append(metrics.health())

    async def scenario() -> tuple[BaseException | None, int]:
        await publish_core(url, [("market.stocks.trades.SPY", trade("SPY", 1))])
        service = IngestService(settings, store, writer="test", on_status=on_status)
        metrics.is_running = lambda: service.running
        running = asyncio.create_task(service.run(until_idle=True, max_seconds=WAIT_S))
        await poll(store.entered.is_set, "the first commit")
        before = server_in_msgs(nats_server)
        await delete_stream(url, "SIGNALS")
        store.gate.set()
        try:
            await asyncio.wait_for(running, WAIT_S)
        except IngestFailedError as error:
            return error, server_in_msgs(nats_server) - before
        return None, server_in_msgs(nats_server) - before

    error, asked = asyncio.run(scenario())
    assert error is not None, "the run ended as if nothing was wrong"
    assert "SIGNALS" in str(error) and "503" in str(error)
    assert "\n" not in str(error)
    assert any(status == 503 and "SIGNALS" in body for status, body in health), health
    # 6 s of backoff from 0.1 s: at most ~60 pulls of SIGNALS plus MARKET's idle pulls (2 a
    # second) and the acks; a busy loop asks thousands.
    assert asked < 300, asked


# --- item 6: acks while NATS is away ---------------------------------------------------------

BIG_COMMIT = 50_000


class StopsNatsBeforeWriting(LakeStore):
    """A real local store that stops nats-server (by its pid) before writing a commit of at
    least `BIG_COMMIT` rows, and waits until the ingest's client has noticed: the commit's
    acks are then due while the client is reconnecting."""

    server: NatsServer
    service: IngestService

    def write_parquet_files(self, files):
        if sum(frame.height for frame, _ in files) >= BIG_COMMIT and self.server.running:
            self.server.stop()
            deadline = time.monotonic() + WAIT_S
            while self.service._nc is not None and self.service._nc.is_connected:
                assert time.monotonic() < deadline, "the client never noticed the stop"
                time.sleep(0.05)
        return super().write_parquet_files(files)


@pytest.mark.slow
def test_acks_of_a_big_commit_during_a_nats_outage_are_sent_after_it(ingest_settings, nats_server):
    """50,000 acks fall due while nats-server is stopped (nats-py buffers 2 MiB, ~26k acks,
    while reconnecting): the worker keeps running, and sends them once the server is back."""
    url, root = nats_server.url, ingest_settings.data_root
    settings = dataclasses.replace(
        ingest_settings, bronze_max_events=BIG_COMMIT, bronze_max_age_s=600.0
    )
    store = StopsNatsBeforeWriting(settings.data_root, LakeStore.from_settings(settings).fs)
    store.server = nats_server

    async def scenario() -> IngestStats:
        messages = [("market.stocks.trades.SPY", trade("SPY", i)) for i in range(BIG_COMMIT)]
        await publish_core(url, messages)
        service = store.service = IngestService(settings, store, writer="test")
        stop = asyncio.Event()
        running = asyncio.create_task(service.run(stop=stop))

        def committed() -> bool:
            if running.done():
                running.result()  # raises what crashed the ingest
                raise AssertionError("the ingest ended")
            return bool(ledger_entries(root))

        await poll(committed, "the big commit's ledger entry")
        assert not nats_server.running
        await poll(lambda: running.done() or service.stats.commits, "the acks tried")
        assert not running.done(), running.exception()
        await asyncio.to_thread(nats_server.restart)
        await poll(_acked(url, "MARKET", BIG_COMMIT), "every message acked after the restart")
        stop.set()
        return await running

    stats = asyncio.run(scenario())
    assert stats.rows == BIG_COMMIT
    seqs = bronze_seqs(root)
    assert seqs.len() == BIG_COMMIT and seqs.n_unique() == BIG_COMMIT


# --- item 9: memory bounded in bytes ---------------------------------------------------------

BIG_PAYLOAD = 1_000_000
BYTE_BOUND = 8 * 2**20


class RecordsCommitBytes(LakeStore):
    """A real local store that records the in-memory size of every commit's frames."""

    commit_bytes: list[int]

    def write_parquet_files(self, files):
        self.commit_bytes.append(sum(frame.estimated_size() for frame, _ in files))
        return super().write_parquet_files(files)


@pytest.mark.slow
def test_large_payloads_are_held_within_the_byte_bound(ingest_settings, nats_server):
    """40 messages of 1 MB (quarantined: not JSON, so each record keeps its payload) against
    an 8 MiB bound: no commit and no moment holds more than the bound, and all land."""
    url, root = nats_server.url, ingest_settings.data_root
    settings = dataclasses.replace(
        ingest_settings, bronze_max_age_s=600.0, bronze_max_buffer_bytes=BYTE_BOUND
    )
    store = RecordsCommitBytes(settings.data_root, LakeStore.from_settings(settings).fs)
    store.commit_bytes = []
    payloads = [bytes([65 + i % 26]) * BIG_PAYLOAD for i in range(40)]
    asyncio.run(publish_core(url, [("market.stocks.trades.BIG", p) for p in payloads]))

    service = IngestService(settings, store, writer="test")
    stats = asyncio.run(service.run(until_idle=True, max_seconds=WAIT_S))

    quarantine = read_table(root, "_quarantine")
    assert sorted(quarantine.get_column("payload").to_list()) == sorted(payloads)
    assert len(store.commit_bytes) > 1
    assert max(store.commit_bytes) <= BYTE_BOUND, store.commit_bytes
    assert BIG_PAYLOAD < stats.held_bytes_peak <= BYTE_BOUND, stats.held_bytes_peak


# --- item 8: poison frames -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("failure", ["encode_error", "encode_panic"])
def test_a_frame_that_always_fails_is_quarantined_and_the_rest_goes_on(
    ingest_settings, nats_server, monkeypatch, failure
):
    """The Bronze file of symbol POISON fails every write (a Polars encode error, or a
    PanicException, a BaseException): after a few identical failures its messages are
    quarantined with the error, the other symbols land, and the run ends with all acked."""
    monkeypatch.setenv(FAILPOINT_ENV, f"{failure}:POISON")
    url, root = nats_server.url, ingest_settings.data_root
    settings = dataclasses.replace(ingest_settings, bronze_max_age_s=0.2)
    good = [("market.stocks.trades.SPY", trade("SPY", i)) for i in range(5)]
    poison = [("market.stocks.trades.POISON", trade("POISON", i)) for i in range(5, 8)]
    asyncio.run(publish_core(url, good + poison))

    service = IngestService(settings, LakeStore.from_settings(settings), writer="test")
    stats = asyncio.run(service.run(until_idle=True, max_seconds=WAIT_S))

    assert sorted(read_table(root, "bronze/stocks/trades").get_column("seq")) == list(range(5))
    quarantine = read_table(root, "_quarantine")
    assert sorted(quarantine.get_column("stream_seq")) == [6, 7, 8]
    errors = set(quarantine.get_column("error"))
    kind = "ComputeError" if failure == "encode_error" else "PanicException"
    assert len(errors) == 1 and kind in errors.pop()
    assert stats.quarantined == 3
    assert 2 <= stats.storage_errors <= 10
    infos = asyncio.run(consumer_infos(url))
    assert all(info.num_pending + info.num_ack_pending == 0 for info in infos.values())


@pytest.mark.slow
def test_a_message_that_panics_the_decoder_is_quarantined_and_the_rest_lands(
    ingest_settings, nats_server, monkeypatch
):
    """One message of a pulled batch panics the decoder (a Polars PanicException, a
    BaseException): exactly that message is quarantined with the panic's text, the others
    of its batch land in Bronze, and the `until_idle` run ends normally with all acked
    (it used to stop the pull task, and the worker met the same message on every start)."""
    monkeypatch.setenv(FAILPOINT_ENV, "decode_panic:POISON")
    url, root = nats_server.url, ingest_settings.data_root
    good = [("market.stocks.trades.SPY", trade("SPY", i)) for i in range(40)]
    poison = ("market.stocks.trades.POISON", trade("POISON", 99))
    asyncio.run(publish_core(url, [*good[:17], poison, *good[17:]]))

    service = IngestService(ingest_settings, LakeStore.from_settings(ingest_settings), writer="t")
    stats = asyncio.run(service.run(until_idle=True, max_seconds=WAIT_S))

    assert sorted(read_table(root, "bronze/stocks/trades").get_column("seq")) == list(range(40))
    quarantine = read_table(root, "_quarantine")
    assert quarantine.get_column("stream_seq").to_list() == [18]
    assert quarantine.get_column("subject").to_list() == ["market.stocks.trades.POISON"]
    assert quarantine.get_column("payload").to_list() == [poison[1]]
    (error,) = quarantine.get_column("error").to_list()
    assert "PanicException" in error and "the decoder panicked on POISON" in error
    assert stats.messages == 41 and stats.rows == 40 and stats.quarantined == 1
    infos = asyncio.run(consumer_infos(url))
    assert all(info.num_pending + info.num_ack_pending == 0 for info in infos.values())
