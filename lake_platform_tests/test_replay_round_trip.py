"""The replay round trip: a simulated session published, ingested, Silver and Gold built;
`lake-platform replay --as-recorded --subject-prefix ''` of its whole range into a fresh
nats-server; that ingested into a fresh lake and built: every Silver and Gold table holds the
same data files (names and bytes) for every hour and day, on local disk and on S3."""

import asyncio
import dataclasses
import datetime as dt
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.sql_rebuild import rebuild_day
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
from lake_platform.derived.tables import DERIVED_TABLES
from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.ledger import read_entries
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import SessionSpec, session
from lake_platform.simulate.publisher import publish
from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import s3_settings, settings_env
from lake_platform_tests.tables_of import committed_files, tables_of

pytestmark = pytest.mark.slow
HOUR = dt.timedelta(hours=1)


def second_lake(settings: LakeSettings, tmp_path: Path, request: pytest.FixtureRequest):
    """An empty lake of the same kind as `settings` (local, or another S3 bucket)."""
    if not settings.use_s3:
        return LakeSettings(data_root=str(tmp_path / "replayed"))
    server = request.getfixturevalue("s3_server")
    bucket = f"replayed-{secrets.token_hex(4)}"
    server.create_bucket(bucket)
    return s3_settings(server, bucket)


def ingest(settings: LakeSettings, url: str) -> list[dt.datetime]:
    """Everything on the server at `url` into the lake; the hours it wrote."""
    settings = dataclasses.replace(settings, nats_servers=(url,), bronze_max_age_s=1.0)
    store = LakeStore.from_settings(settings)
    started = time.time_ns()
    service = IngestService(settings, store, writer=writer_name("round-trip"))
    asyncio.run(service.run(until_idle=True, max_seconds=300))
    hours = {
        file.hour_start_ns
        for entry in read_entries(store, started - 10**9, time.time_ns())
        for file in entry.files
        if file.hour_start_ns is not None
    }
    return sorted(dt.datetime.fromtimestamp(ns / 1e9, dt.UTC) for ns in hours)


def opened(settings: LakeSettings) -> LakeStore:
    """The lake's store, its catalog known to `tables_of`."""
    store = LakeStore.from_settings(settings)
    tables_of(store, settings)
    return store


def build(store: LakeStore, hours: list[dt.datetime]) -> None:
    """Silver then Gold of every hour (in order: an as-of hour reads the one before), then
    the days of the SQL Gold tables."""
    tables = tables_of(store)
    for table in DERIVED_TABLES:
        for hour in hours:
            rebuild_hour(tables, table, hour)
    for day in sorted({hour.replace(hour=0) for hour in hours}):
        for table in SQL_GOLD_TABLES:
            rebuild_day(tables, table, day)


def derived_bytes(store: LakeStore, hours: list[dt.datetime]) -> dict[str, bytes]:
    """Every committed Silver/Gold file of the hours (and days), by path, with its bytes."""
    days = sorted({hour.replace(hour=0) for hour in hours})
    found = {}
    for table, moments in [
        *((table, hours) for table in DERIVED_TABLES),
        *((table, days) for table in SQL_GOLD_TABLES),
    ]:
        for moment in moments:
            for paths in committed_files(store, table, moment).values():
                found.update({path: store.read_bytes(path) for path in paths})
    return found


def test_a_replayed_session_rebuilds_byte_identical_silver_and_gold(
    lake_settings, tmp_path, request
):
    lake = opened(lake_settings)
    spec = SessionSpec(minutes=3, rate=150, seed=5, end_ns=time.time_ns())
    with NatsServer.start(tmp_path / "nats-a") as first:
        published = dataclasses.replace(lake_settings, nats_servers=(first.url,))
        asyncio.run(publish(published, session(spec), progress=False))
        hours = ingest(lake_settings, first.url)
    build(lake, hours)
    original = derived_bytes(lake, hours)
    assert len(original) > 10
    replayed = second_lake(lake_settings, tmp_path, request)
    replayed_lake = opened(replayed)
    with NatsServer.start(tmp_path / "nats-b") as second:
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("lake-platform")),
                "replay",
                "--start",
                hours[0].isoformat(),
                "--end",
                (hours[-1] + HOUR).isoformat(),
                "--as-recorded",
                "--subject-prefix",
                "",
                "--speed",
                "max",
                "--nats-url",
                second.url,
            ],
            env={**os.environ, **settings_env(lake_settings)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert ingest(replayed, second.url) == hours
    build(replayed_lake, hours)
    again = derived_bytes(replayed_lake, hours)
    assert sorted(again) == sorted(original)
    differing = [path for path in original if again[path] != original[path]]
    assert not differing, differing[:5]
