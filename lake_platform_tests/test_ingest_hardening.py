"""The ingest against hostile input and slow or failing parts, on a real nats-server."""

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import msgspec
import nats
import polars as pl
import pytest

from lake_platform.commands.dagster_runs import materialize_hours
from lake_platform.defs.partitions import partition_key_for
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.ingest.failpoints import FAILPOINT_ENV
from lake_platform.ingest.jetstream import DURABLE, ConsumerSizing, ensure_consumers, ensure_streams
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.schemas import STREAMS
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore, StorageError
from lake_platform_tests.conftest import settings_env
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.session import read_table


def trade(symbol: str, seq: int, hours_ago: int = 0) -> bytes:
    ts = time.time_ns() - hours_ago * 3_600 * 10**9
    return json.dumps(
        {**SAMPLES["stocks.trades"], "symbol": symbol, "seq": seq, "ts_event_ns": ts}
    ).encode()


async def publish_all(url: str, messages: list[tuple[str, bytes]]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for subject, payload in messages:
        await js.publish(subject, payload)
    await nc.close()


def ledger_entries(root: str) -> list[LedgerEntry]:
    return [
        msgspec.json.decode(path.read_bytes(), type=LedgerEntry)
        for path in sorted(Path(root, "_ledger").rglob("*.json"))
    ]


def run_service(settings: LakeSettings, store: LakeStore | None = None, **options) -> IngestService:
    service = IngestService(
        settings, store or LakeStore.from_settings(settings), writer=writer_name("test")
    )
    asyncio.run(service.run(**options))
    return service


async def consumer_infos(url: str) -> dict[str, object]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        return {stream: await js.consumer_info(stream, DURABLE) for stream in STREAMS}
    finally:
        await nc.close()


@pytest.mark.slow
def test_poison_messages_are_quarantined_and_everything_else_lands(ingest_settings):
    url, root = ingest_settings.nats_servers[0], ingest_settings.data_root
    long_subject = "market." + "x" * 293
    poison = [
        ("market.stocks.trades.EMOJI", trade("\U0001f600" * 128, 100), "escapes to 512 bytes"),
        ("market.stocks.trades.SLASH", trade("/" * 128, 101), "escapes to 384 bytes"),
        (long_subject, trade("SPY", 102), "no schema for subject"),
    ]
    good = [
        (f"market.stocks.trades.{s}", trade(s, i, hours_ago=i % 2))
        for i, s in enumerate(["SPY", "QQQ", "IWM"] * 4)
    ]
    good.append(("market.stocks.trades.A", trade("A[1]", 50)))
    messages = good[:5] + [(subject, payload) for subject, payload, _ in poison] + good[5:]
    asyncio.run(publish_all(url, messages))

    service = run_service(ingest_settings, until_idle=True, max_seconds=60)
    assert service.stats.storage_errors == 0
    assert asyncio.run(_pending(url)) == 0

    bronze = read_table(root, "bronze/stocks/trades")
    assert sorted(bronze.get_column("seq").to_list()) == sorted(
        json.loads(payload)["seq"] for _, payload in good
    )
    assert "A[1]" in bronze.get_column("symbol").to_list()
    named = {file.path for entry in ledger_entries(root) for file in entry.files}
    on_disk = {str(p.relative_to(root)) for p in Path(root, "bronze").rglob("*.parquet")}
    assert named == on_disk

    quarantine = read_table(root, "_quarantine")
    by_payload = {row["payload"]: row for row in quarantine.iter_rows(named=True)}
    assert len(by_payload) == len(poison)
    for subject, payload, reason in poison:
        assert by_payload[payload]["subject"] == subject
        assert reason in by_payload[payload]["error"]
    folders = {
        len(Path(row["_file"]).parts[1].encode()) for row in quarantine.iter_rows(named=True)
    }
    assert max(folders) <= 200
    assert_silver_holds_each_good_event_once(ingest_settings, good)


def assert_silver_holds_each_good_event_once(
    settings: LakeSettings, good: list[tuple[str, bytes]]
) -> None:
    """Silver of every hour the good events touch (two), materialized through Dagster:
    each good event once, every check passed."""
    hours = sorted(
        {
            partition_key_for(
                dt.datetime.fromtimestamp(json.loads(p)["ts_event_ns"] / 1e9, tz=dt.UTC)
            )
            for _, p in good
        }
    )
    assert len(hours) == 2
    trades = next(a for a in SILVER_ASSETS if a.key.path == ["silver", "stocks", "trades"])
    with dg.instance_for_test() as instance:
        result = materialize_hours([trades], instance, settings, hours[0], hours[-1])
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert checks and all(check.passed for check in checks)
    silver = read_table(settings.data_root, "silver/stocks/trades")
    assert sorted(silver.get_column("seq").to_list()) == sorted(
        json.loads(payload)["seq"] for _, payload in good
    )
    assert silver.get_column("symbol").to_list().count("A[1]") == 1


def test_acks_go_out_before_reporting_and_a_failing_reporter_holds_nothing(ingest_settings):
    """The reporter (a Dagster instance that is locked) runs only once its entry's messages
    are acked: it waits for the consumer's ack floor to pass them, then fails."""
    url, root = ingest_settings.nats_servers[0], ingest_settings.data_root
    asyncio.run(publish_all(url, [("market.stocks.trades.SPY", trade("SPY", i)) for i in range(5)]))
    acked_before_report: list[bool] = []

    def locked_reporter(entry: LedgerEntry) -> bool:
        last_seq = max(file.last_seq or 0 for file in entry.files)
        deadline = time.monotonic() + 15
        while (floor := asyncio.run(_ack_floor(url))) < last_seq and time.monotonic() < deadline:
            time.sleep(0.1)
        acked_before_report.append(floor >= last_seq)
        raise RuntimeError("database is locked")

    service = IngestService(
        ingest_settings,
        LakeStore.from_settings(ingest_settings),
        writer=writer_name("test"),
        reporter=locked_reporter,
    )
    asyncio.run(service.run(until_idle=True, max_seconds=60))
    assert acked_before_report and all(acked_before_report)
    assert asyncio.run(_pending(url)) == 0
    assert [entry.reported for entry in ledger_entries(root)] == [False] * len(acked_before_report)


async def _ack_floor(url: str) -> int:
    info = (await consumer_infos(url))["MARKET"]
    return info.ack_floor.stream_seq


async def _pending(url: str) -> int:
    infos = await consumer_infos(url)
    return sum(info.num_pending + info.num_ack_pending for info in infos.values())


def test_an_existing_consumer_is_used_as_it_is_with_a_warning(nats_server, caplog):
    first = ConsumerSizing(ack_wait_s=20.0, max_ack_pending=100_000, process_inflight=50_000)
    second = ConsumerSizing(ack_wait_s=45.0, max_ack_pending=200_000, process_inflight=100_000)

    async def configure(sizing: ConsumerSizing) -> float:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            return await ensure_consumers(js, sizing)
        finally:
            await nc.close()

    assert asyncio.run(configure(first)) == 20.0
    assert "using the existing consumer" not in caplog.text
    with caplog.at_level(logging.WARNING):
        assert asyncio.run(configure(second)) == 20.0
    assert "using the existing consumer as it is" in caplog.text
    for info in asyncio.run(consumer_infos(nats_server.url)).values():
        assert (info.config.ack_wait, info.config.max_ack_pending) == (20.0, 100_000)


def test_streams_are_created_with_the_retention_of_the_settings(nats_server):
    settings = LakeSettings.from_env(
        {
            "NATS_URL": nats_server.url,
            "NATS_STREAM_MAX_AGE": "12h",
            "NATS_STREAM_MAX_BYTES": "64MB",
            "NATS_STREAM_REPLICAS": "1",
        }
    )

    async def configs() -> list[object]:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js, settings)
            return [(await js.stream_info(stream)).config for stream in STREAMS]
        finally:
            await nc.close()

    for config in asyncio.run(configs()):
        assert config.max_age == 12 * 3600
        assert config.max_bytes == 64 * 2**20
        assert config.num_replicas == 1


def test_streams_keep_seven_days_by_default(nats_server):
    async def config() -> object:
        nc = await nats.connect(nats_server.url)
        try:
            js = nc.jetstream()
            await ensure_streams(js)
            return (await js.stream_info("MARKET")).config
        finally:
            await nc.close()

    created = asyncio.run(config())
    assert (created.max_age, created.max_bytes) == (7 * 24 * 3600, -1)


class SlowStore(LakeStore):
    """A real local store whose commits take longer than the consumer's ack_wait to write."""

    delay_s = 3.0

    def write_parquet_files(
        self, files: list[tuple[pl.DataFrame, str]]
    ) -> list[int | StorageError]:
        time.sleep(self.delay_s)
        return super().write_parquet_files(files)


@pytest.mark.slow
def test_messages_held_past_ack_wait_are_not_redelivered(ingest_settings):
    """A consumer with a 2 s ack_wait and file writes of 3 s each: in-progress acks keep
    every message with this process, so each lands once."""
    url = ingest_settings.nats_servers[0]
    tiny = ConsumerSizing(ack_wait_s=2.0, max_ack_pending=100_000, process_inflight=50_000)

    async def prepare() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        await ensure_streams(js)
        await ensure_consumers(js, tiny)
        await nc.close()

    asyncio.run(prepare())
    messages = [(f"market.stocks.trades.S{i}", trade(f"S{i}", i)) for i in range(4)]
    asyncio.run(publish_all(url, messages))
    settings = dataclasses.replace(ingest_settings, bronze_max_age_s=0.2)
    store = SlowStore(settings.data_root, LakeStore.from_settings(settings).fs)
    run_service(settings, store, until_idle=True, max_seconds=90)

    infos = asyncio.run(consumer_infos(url))
    assert infos["MARKET"].config.ack_wait == 2.0
    assert sum(info.num_redelivered for info in infos.values()) == 0
    seqs = read_table(settings.data_root, "bronze/stocks/trades").get_column("_stream_seq")
    assert seqs.len() == 4 and seqs.n_unique() == 4


@pytest.mark.slow
def test_a_failed_pull_task_stops_the_service_after_committing_the_rest(ingest_settings):
    url = ingest_settings.nats_servers[0]
    trades = [("market.stocks.trades.SPY", trade("SPY", i)) for i in range(5)]
    signal = json.dumps({**SAMPLES["levels.signals"], "ts_event_ns": time.time_ns()}).encode()
    asyncio.run(publish_all(url, [*trades, ("levels.signals.SPY", signal)]))
    env = {**os.environ, **settings_env(ingest_settings), FAILPOINT_ENV: "raise:route:SIGNALS"}
    env.pop("DAGSTER_HOME", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lake_platform.cli",
            "ingest",
            "--until-idle",
            "--max-seconds",
            "60",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("lake-platform: error: ingest stopped: pull SIGNALS failed")
    assert read_table(ingest_settings.data_root, "bronze/stocks/trades").height == len(trades)
    infos = asyncio.run(consumer_infos(url))
    assert infos["MARKET"].num_ack_pending + infos["MARKET"].num_pending == 0
    assert infos["SIGNALS"].num_ack_pending + infos["SIGNALS"].num_pending == 1


@pytest.mark.slow
def test_a_failed_pull_task_is_logged_the_tick_reports_the_ledger_and_the_next_none_twice(
    ingest_settings, monkeypatch
):
    """A tick whose ingest fails (the pull task of SIGNALS) logs the failure and still
    reports what its ingest committed (the two hours of stocks/trades); the next tick
    reports the signal, redelivered, and none of those hours again."""
    from lake_platform.definitions import defs
    from lake_platform.defs.bronze.sensor import bronze_ingest_sensor

    for name, value in settings_env(ingest_settings).items():
        monkeypatch.setenv(name, value)
    url = ingest_settings.nats_servers[0]
    now = time.time_ns()
    trades = [("market.stocks.trades.SPY", trade("SPY", 0))]
    earlier = json.loads(trade("QQQ", 1)) | {"ts_event_ns": now - 3_600 * 10**9}
    trades.append(("market.stocks.trades.QQQ", json.dumps(earlier).encode()))
    signal = json.dumps({**SAMPLES["levels.signals"], "ts_event_ns": now}).encode()
    asyncio.run(publish_all(url, [*trades, ("levels.signals.SPY", signal)]))

    errors: list[str] = []

    class ErrorsSaid(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage())

    cursor: list[str | None] = [None]  # kept from tick to tick, as the daemon does

    def tick(instance: dg.DagsterInstance) -> set[tuple[str, str | None]]:
        resources = defs.get_repository_def().get_top_level_resources()
        context = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor[0])
        context.log.addHandler(ErrorsSaid())  # the tick's logger is outside logging's tree
        result = bronze_ingest_sensor(context)
        assert isinstance(result, dg.SensorResult), result
        cursor[0] = result.cursor
        return {(e.asset_key.to_user_string(), e.partition) for e in result.asset_events}

    hour = partition_key_for(dt.datetime.fromtimestamp(now / 1e9, tz=dt.UTC))
    hour_before = partition_key_for(dt.datetime.fromtimestamp(now / 1e9 - 3_600, tz=dt.UTC))
    with dg.instance_for_test() as instance:
        monkeypatch.setenv(FAILPOINT_ENV, "raise:route:SIGNALS")
        first = tick(instance)
        assert first == {("bronze/stocks/trades", hour), ("bronze/stocks/trades", hour_before)}
        assert len(errors) == 1 and "ingest failed" in errors[0], errors
        assert "pull SIGNALS failed" in errors[0]
        assert read_table(ingest_settings.data_root, "bronze/stocks/trades").height == 2
        monkeypatch.delenv(FAILPOINT_ENV)
        second = tick(instance)
    assert second == {("bronze/levels/signals", hour)}
    assert len(errors) == 1, errors
