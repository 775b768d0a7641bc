"""`bronze_ingest_sensor` with a real Dagster instance and a real nats-server."""

import asyncio
import dataclasses
import json
import secrets
import time

import dagster as dg
import msgspec
import pytest

from lake_platform.definitions import defs
from lake_platform.defs.bronze.reporting import MAX_ENTRIES_PER_TICK, instance_reporter
from lake_platform.defs.bronze.sensor import bronze_ingest_sensor
from lake_platform.defs.partitions import HOURLY
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.schemas import BY_NAME, schema_for_subject
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import ledger_file
from lake_platform_tests.conftest import s3_settings, settings_env
from lake_platform_tests.session import HOUR_NS, build_session, publish

pytestmark = pytest.mark.slow


@pytest.fixture
def sensor_env(ingest_settings, monkeypatch):
    for name, value in settings_env(ingest_settings).items():
        monkeypatch.setenv(name, value)
    return ingest_settings


def sensor_context(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorEvaluationContext:
    """A tick's context for `bronze_ingest_sensor`, with the code location's resources."""
    return dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources=defs.get_repository_def().get_top_level_resources(),
    )


def tick(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    result = bronze_ingest_sensor(sensor_context(instance, cursor))
    assert isinstance(result, dg.SensorResult), result
    return result


def expected_partitions(session) -> set[tuple[str, str]]:
    expected = set()
    for name, _, payload in session.good:
        ts = json.loads(payload)["ts_event_ns"]
        key = HOURLY.get_partition_key_for_timestamp(ts // HOUR_NS * 3600)
        expected.add((f"bronze/{BY_NAME[name].table}", key))
    return expected


def reported(result: dg.SensorResult) -> set[tuple[str, str]]:
    return {(event.asset_key.to_user_string(), event.partition) for event in result.asset_events}


def test_sensor_ingests_and_reports_each_touched_partition_once(sensor_env):
    session = build_session(events_per_schema=8)
    asyncio.run(publish(sensor_env.nats_servers[0], session))
    with dg.instance_for_test() as instance:
        first = tick(instance, None)
        assert reported(first) == expected_partitions(session)
        rows = sum(event.metadata["rows"].value for event in first.asset_events)
        assert rows == len(session.good)
        quarantined = sum(event.metadata["quarantined"].value for event in first.asset_events)
        known_table_bad = [s for s, _, _ in session.bad if schema_for_subject(s) is not None]
        assert quarantined == len(known_table_bad)  # an unknown subject has no asset
        for event in first.asset_events:
            assert event.metadata["files"].value >= 1
            assert (
                event.metadata["stream_seq_first"].value <= event.metadata["stream_seq_last"].value
            )

        second = tick(instance, first.cursor)
        assert second.asset_events == []

        more = build_session(events_per_schema=2)
        asyncio.run(publish(sensor_env.nats_servers[0], more))
        standalone = IngestService(
            sensor_env, LakeStore.from_settings(sensor_env), writer=writer_name("service")
        )
        asyncio.run(standalone.run(until_idle=True, max_seconds=60))
        third = tick(instance, second.cursor)
        assert reported(third) == expected_partitions(more)


def test_batches_the_standalone_service_recorded_are_not_reported_twice(sensor_env):
    session = build_session(events_per_schema=3)
    asyncio.run(publish(sensor_env.nats_servers[0], session))
    with dg.instance_for_test() as instance:
        standalone = IngestService(
            sensor_env,
            LakeStore.from_settings(sensor_env),
            writer=writer_name("service"),
            reporter=instance_reporter(instance),
        )
        asyncio.run(standalone.run(until_idle=True, max_seconds=60))
        for asset, partition in expected_partitions(session):
            key = dg.AssetKey.from_user_string(asset)
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=10
            ).records
            assert len(records) >= 1, (asset, partition)
        assert tick(instance, None).asset_events == []


def write_backlog(store: LakeStore, count: int, now_ns: int) -> dict[str, bool]:
    """`count` one-row ledger entries committed over the last hour (every tenth already
    reported by its writer), uploaded in bulk; their ids and whether each was reported."""
    hour_ns = (now_ns - 2 * HOUR_NS) // HOUR_NS * HOUR_NS
    bodies, entries = {}, {}
    for index in range(count):
        committed_ns = now_ns - HOUR_NS + index * 10**6
        entry = LedgerEntry(
            entry_id=new_entry_id(committed_ns),
            committed_ns=committed_ns,
            writer="backlog",
            reported=index % 10 == 0,
            files=(
                CommittedFile(
                    path=f"bronze/stocks/trades/x/{index}.parquet",
                    table="stocks/trades",
                    stream="MARKET",
                    rows=1,
                    bytes=1,
                    first_seq=index,
                    last_seq=index,
                    partition_value="SPY",
                    hour_start_ns=hour_ns,
                ),
            ),
            quarantine=(),
        )
        path = ledger_file(entry.committed, entry.entry_id)
        bodies[store.full_path(path)] = msgspec.json.encode(entry)
        entries[entry.entry_id] = entry.reported
    store.fs.pipe(bodies, batch_size=64)
    return entries


def test_a_backlog_on_s3_is_reported_over_several_bounded_ticks(
    s3_server, nats_server, monkeypatch
):
    bucket = f"backlog-{secrets.token_hex(4)}"
    s3_server.create_bucket(bucket)
    settings = s3_settings(s3_server, bucket)
    store = LakeStore.from_settings(settings)
    env = settings_env(dataclasses.replace(settings, nats_servers=(nats_server.url,)))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    backlog = write_backlog(store, 2_000, time.time_ns())
    unreported = sum(not reported for reported in backlog.values())
    with dg.instance_for_test() as instance:
        cursor, rows_per_tick = None, []
        while not rows_per_tick or rows_per_tick[-1]:
            result = tick(instance, cursor)
            rows_per_tick.append(sum(e.metadata["rows"].value for e in result.asset_events))
            cursor = result.cursor
            assert len(rows_per_tick) <= 10
    assert all(rows <= MAX_ENTRIES_PER_TICK for rows in rows_per_tick)
    assert len(rows_per_tick) >= 2_000 // MAX_ENTRIES_PER_TICK
    assert sum(rows_per_tick) == unreported
