"""The Bronze ingest against a real nats-server: routing, partitions, quarantine, ledger."""

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import msgspec
import nats
import polars as pl
import pytest

from lake_platform.ingest.ledger import LedgerEntry, read_entries
from lake_platform.ingest.route import ack_metadata
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.schemas import BY_TABLE
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.session import HOUR_NS, build_session, publish, read_files, read_table


def run_ingest(settings: LakeSettings, **options) -> IngestService:
    service = IngestService(settings, LakeStore.from_settings(settings), writer=writer_name("test"))
    asyncio.run(service.run(**options))
    return service


def ledger_entries(root: str) -> list[LedgerEntry]:
    return [
        msgspec.json.decode(path.read_bytes(), type=LedgerEntry)
        for path in sorted(Path(root, "_ledger").rglob("*.json"))
    ]


def test_ack_subjects_give_stream_sequence_and_stored_time():
    metadata = ack_metadata(
        [
            "$JS.ACK.MARKET.lake-bronze.1.42.7.1765895400000000001.3",
            "$JS.ACK.hub.ACCHASH.MARKET.lake-bronze.2.43.8.1765895400000000002.0.tok",
        ]
    )
    assert metadata.rows() == [(42, 1765895400000000001), (43, 1765895400000000002)]


@pytest.mark.slow
def test_mixed_session_lands_in_bronze_and_quarantine(ingest_settings):
    session = build_session(events_per_schema=12)
    asyncio.run(publish(ingest_settings.nats_servers[0], session))
    service = run_ingest(ingest_settings, until_idle=True, max_seconds=120)
    root = ingest_settings.data_root

    for table, pairs in session.expected_partition_values().items():
        rows = read_table(root, f"bronze/{table}")
        column = BY_TABLE[table].partition_column
        assert set(rows.select("event_id", column).iter_rows()) == pairs, table
        assert rows.height == session.good_count(table), table
    bronze = read_files(root, "bronze")
    assert sum(rows.height for rows in bronze.values()) == len(session.good)
    assert service.stats.messages == len(session.good) + len(session.bad)

    for file, rows in bronze.items():
        parts = dict(part.split("=", 1) for part in file.split("/")[3:6])
        (column,) = set(parts) - {"date", "hour"}
        assert column not in rows.columns  # in the path only
        hours = (rows.get_column("ts_event_ns") // HOUR_NS).unique().to_list()
        assert len(hours) == 1
        assert rows.get_column("ts_event_ns").is_sorted()
        assert rows.get_column("_stream_seq").null_count() == 0
    trades = read_table(root, "bronze/stocks/trades")
    assert trades.select((pl.col("ts_event_ns") // HOUR_NS).n_unique()).item() >= 2

    quarantine = read_table(root, "_quarantine")
    assert quarantine.height == len(session.bad)
    by_payload = {row["payload"]: row for row in quarantine.iter_rows(named=True)}
    for subject, payload, reason in session.bad:
        row = by_payload[payload]
        assert row["subject"] == subject
        assert reason in row["error"]
        assert row["stream_seq"] > 0 and row["received_ns"] > 0
        assert json.loads(row["headers"]) == {}
        assert row["_file"].startswith(f"_quarantine/{subject}/date=")

    entries = ledger_entries(root)
    assert sum(f.rows for e in entries for f in e.files) == len(session.good)
    assert sum(f.rows for e in entries for f in e.quarantine) == len(session.bad)
    assert {f.path for e in entries for f in e.files} == set(bronze)


@pytest.mark.slow
def test_an_idle_buffer_flushes_within_its_max_age(ingest_settings):
    """One event, then silence: its buffer is committed without any further message."""

    async def scenario() -> None:
        stop = asyncio.Event()
        service = IngestService(
            ingest_settings, LakeStore.from_settings(ingest_settings), writer=writer_name("t")
        )
        running = asyncio.create_task(service.run(stop=stop))
        nc = await nats.connect(ingest_settings.nats_servers[0])
        js = nc.jetstream()
        while not await _consumer_exists(js):
            await asyncio.sleep(0.05)
        quote = {**SAMPLES["stocks.quotes"], "ts_event_ns": time.time_ns()}
        assert "ts_recv_ns" not in quote
        await js.publish("market.stocks.quotes.QQQ", json.dumps(quote).encode())
        while not Path(ingest_settings.data_root, "_ledger").exists():
            await asyncio.sleep(0.05)
        stop.set()
        await running
        await nc.close()

    asyncio.run(scenario())
    (entry,) = ledger_entries(ingest_settings.data_root)
    (file,) = entry.files
    stored_ns = pl.read_parquet(Path(ingest_settings.data_root, file.path))["ts_recv_ns"].item()
    assert entry.committed_ns > stored_ns


async def _consumer_exists(js) -> bool:
    try:
        await js.consumer_info("MARKET", "lake-bronze")
    except Exception:
        return False
    return True


@pytest.mark.slow
def test_ingest_into_s3_commits_files_and_ledger(ingest_settings, s3_server):
    s3_server.create_bucket("ingest-s3")
    settings = dataclasses.replace(
        s3_settings(s3_server, "ingest-s3"), nats_servers=ingest_settings.nats_servers
    )
    session = build_session(events_per_schema=3)
    asyncio.run(publish(settings.nats_servers[0], session))
    run_ingest(settings, until_idle=True, max_seconds=120)

    store = LakeStore.from_settings(settings)
    entries = read_entries(store, time.time_ns() - 4 * HOUR_NS, time.time_ns())
    files = [file for entry in entries for file in entry.files]
    assert sorted(f.path for f in files) == store.list_files("bronze")
    bronze = pl.concat(
        [store.read_parquet([f.path]).select("event_id") for f in files], how="vertical"
    )
    expected = set().union(*session.expected_event_ids().values())
    assert set(bronze.get_column("event_id").to_list()) == expected
    assert len(store.list_files("_quarantine")) == len({s for s, _, _ in session.bad})
