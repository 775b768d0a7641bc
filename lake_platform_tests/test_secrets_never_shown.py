"""Credentials are never shown: canary values for every secret setting, a real run of the
platform with them, then a search of everything it wrote or showed.

The canaries are the real credentials of the test's servers (SeaweedFS with a canary access
and secret key; a nats-server whose users have the canary passwords; a PostgreSQL holding the
Iceberg catalog whose password, inside LAKE_CATALOG_URI, is a canary), so `init`, the ingest,
the Dagster runs and the demo actually use them. Searched: every command's stdout and stderr
(errors with LAKE_PLATFORM_DEBUG off and on included: a refused and an unreachable catalog
among them), the settings' repr, every file of the on-disk Dagster instance (raw bytes, and
each SQLite table decoded row by row: event log, runs with their run config, metadata,
cursors), every object of the lake (raw, and Parquet footers and values decoded: Bronze,
Silver, Gold, ledger, quarantine, Iceberg metadata), every row of the catalog's database, and
the GraphQL answers the webserver gives for the runs, their events and the assets.
"""

import json
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest

from lake_platform.embedded_nats import NatsServer
from lake_platform.settings import LakeSettings
from lake_platform_tests.nats_auth import users_config
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.servers import PostgresServer, S3Server, claim_ports, release_ports

pytestmark = pytest.mark.slow
TRADES_SUBJECT = "market.stocks.trades.SPY"
ENV_CLEARED = ("NATS_", "S3_", "DATA_ROOT", "USE_S3", "DAGSTER_HOME", "LAKE_")
CATALOG_DATABASE = "iceberg"
RUNS_QUERY = """
{ runsOrError { ... on Runs { results {
    runId jobName status runConfigYaml tags { key value }
    assetSelection { path } } } } }
"""
EVENTS_QUERY = """
query Events($runId: ID!) { logsForRun(runId: $runId) {
  ... on EventConnection { events {
    __typename
    ... on MessageEvent { message level stepKey }
    ... on DisplayableEvent { label description metadataEntries {
        label description
        ... on TextMetadataEntry { text }
        ... on JsonMetadataEntry { jsonString }
        ... on PathMetadataEntry { path }
        ... on UrlMetadataEntry { url }
        ... on IntMetadataEntry { intRepr }
        ... on MarkdownMetadataEntry { mdStr } } }
    ... on ExecutionStepFailureEvent { error { message stack } } } } } }
"""
ASSETS_QUERY = """
{ assetsOrError { ... on AssetConnection { nodes {
    key { path }
    assetMaterializations(limit: 100) { runId partition description metadataEntries {
        label description
        ... on TextMetadataEntry { text }
        ... on JsonMetadataEntry { jsonString }
        ... on PathMetadataEntry { path } } } } } } }
"""


def canary(name: str) -> str:
    return f"CANARY{name}{secrets.token_hex(8)}"


@dataclass
class Search:
    """Counts the surfaces searched and the canaries found on them."""

    canaries: dict[str, str]
    surfaces: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)

    def look(self, where: str, data: bytes | str) -> None:
        raw = data.encode(errors="replace") if isinstance(data, str) else data
        self.surfaces.append(where)
        self.leaks += [
            f"{name} in {where}" for name, v in self.canaries.items() if v.encode() in raw
        ]

    def found_in(self, data: str) -> list[str]:
        return [name for name, value in self.canaries.items() if value in data]


@dataclass
class Platform:
    """The environment of every command, and the places the platform writes to."""

    env: dict[str, str]
    dagster_home: Path
    s3: S3Server
    postgres: PostgresServer
    bucket: str
    canaries: dict[str, str]
    outputs: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def run(self, label: str, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "lake_platform.cli", *args],
            env={**self.env, **overrides},
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.outputs[label] = result
        return result


def clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(ENV_CLEARED)}


def sqlite_rows(path: Path) -> Iterator[tuple[str, str]]:
    """(table, text of all its rows) of a SQLite file, read-only."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            yield table, "\n".join(repr(row) for row in rows)


def search_dagster_home(search: Search, home: Path) -> None:
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        search.look(f"file {path.relative_to(home)}", raw)
        if raw.startswith(b"SQLite format 3"):
            for table, text in sqlite_rows(path):
                search.look(f"sqlite {path.name}:{table}", text)


def search_lake(search: Search, platform: Platform) -> dict[str, int]:
    """Every object of the bucket, raw and decoded; returns how many of each kind."""
    fs = platform.s3.filesystem()
    kinds: dict[str, int] = {}
    for key in fs.find(platform.bucket):
        raw = fs.cat_file(key)
        search.look(f"object {key}", raw)
        kind = key.split("/")[2]  # bucket/lake/<bronze|silver|gold|_ledger|_quarantine>/…
        kinds[kind] = kinds.get(kind, 0) + 1
        if key.endswith(".parquet"):
            file = pq.ParquetFile(fs.open(key, "rb"))
            footer = file.metadata.metadata or {}
            search.look(f"footer {key}", repr(footer) + repr(file.schema_arrow))
            search.look(f"values {key}", repr(file.read().to_pylist()))
    return kinds


def search_catalog_database(search: Search, server: PostgresServer) -> int:
    """Every row of every table of the catalog's database; returns how many tables."""
    url = server.url.replace("postgresql+psycopg2", "postgresql").rsplit("/", 1)[0]
    connection = psycopg2.connect(f"{url}/{CATALOG_DATABASE}")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = [name for (name,) in cursor.fetchall()]
            for table in tables:
                cursor.execute(f'SELECT * FROM "{table}"')
                search.look(f"catalog {table}", "\n".join(map(repr, cursor.fetchall())))
    finally:
        connection.close()
    return len(tables)


def search_graphql(search: Search, home: Path) -> int:
    """The webserver's GraphQL answers (same schema, in process) for runs, events, assets."""
    import dagster as dg
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import EmptyWorkspaceTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    instance = dg.DagsterInstance.from_config(str(home))
    with WorkspaceProcessContext(instance, EmptyWorkspaceTarget()) as process:
        context = process.create_request_context()
        runs = execute_dagster_graphql(context, RUNS_QUERY).data
        search.look("graphql runs", json.dumps(runs))
        run_ids = [run["runId"] for run in runs["runsOrError"]["results"]]
        for run_id in run_ids:
            events = execute_dagster_graphql(context, EVENTS_QUERY, {"runId": run_id}).data
            search.look(f"graphql events of run {run_id}", json.dumps(events))
        assets = execute_dagster_graphql(context, ASSETS_QUERY).data
        search.look("graphql assets", json.dumps(assets))
    return len(run_ids)


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    canaries = {
        "NATS_PASSWORD": canary("natspw"),
        "NATS_TOKEN": canary("natstoken"),
        "S3_SECRET_KEY": canary("s3secret"),
        "S3_ACCESS_KEY": canary("s3key"),
        "NATS_URL password": canary("urlpw"),
        "LAKE_CATALOG_URI password": canary("catalogpw"),
        "LAKE_CATALOG_URI wrong password": canary("catalogwrong"),
    }
    users = users_config(
        ("lake", canaries["NATS_PASSWORD"]), ("url", canaries["NATS_URL password"])
    )
    with (
        S3Server.start(tmp_path / "s3", canaries["S3_ACCESS_KEY"], canaries["S3_SECRET_KEY"]) as s3,
        NatsServer.start(tmp_path / "nats", users) as nats_server,
        PostgresServer.start(
            tmp_path / "pg", "lake", "lake", canaries["LAKE_CATALOG_URI password"]
        ) as postgres,
    ):
        s3.create_bucket("secrets")
        host = nats_server.url.removeprefix("nats://")
        env = clean_environment() | {
            "DATA_ROOT": "s3://secrets/lake",
            "USE_S3": "true",
            "S3_ENDPOINT": s3.endpoint,
            "S3_REGION": S3Server.REGION,
            "S3_ACCESS_KEY": canaries["S3_ACCESS_KEY"],
            "S3_SECRET_KEY": canaries["S3_SECRET_KEY"],
            "NATS_URL": f"nats://url:{canaries['NATS_URL password']}@{host}",
            "NATS_USER": "lake",
            "NATS_PASSWORD": canaries["NATS_PASSWORD"],
            "NATS_TOKEN": canaries["NATS_TOKEN"],
            "DAGSTER_HOME": str(tmp_path / "dagster_home"),
            "BRONZE_MAX_AGE_S": "1",
            "LAKE_CATALOG_URI": f"{postgres.url.rsplit('/', 1)[0]}/{CATALOG_DATABASE}",
        }
        (tmp_path / "dagster_home").mkdir()
        yield Platform(env, tmp_path / "dagster_home", s3, postgres, "secrets", canaries)


def run_everything(platform: Platform, tmp_path: Path) -> None:
    """`init`, the ingest, Silver and Gold through Dagster (the demo), and failing commands."""
    initialized = platform.run("init", "init")
    assert initialized.returncode == 0, initialized.stdout + initialized.stderr
    listed = platform.run("tables", "tables")
    assert listed.returncode == 0, listed.stderr
    replay = tmp_path / "events.jsonl"
    trades = [{**SAMPLES["stocks.trades"], "seq": seq} for seq in range(5)]
    bad = {"symbol": "SPY", "price": "not a number"}  # lands in the quarantine
    replay.write_text(
        "".join(json.dumps({"subject": TRADES_SUBJECT, "data": d}) + "\n" for d in [*trades, bad])
    )
    published = platform.run("publish", "publish", "--file", str(replay))
    assert published.returncode == 0, published.stderr
    ingested = platform.run("ingest", "ingest", "--until-idle")
    assert ingested.returncode == 0, ingested.stderr
    demo = platform.run("demo", "demo", "--minutes", "0.2", "--rate", "10", "--seed", "3")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    broken_home = tmp_path / "broken_dagster_home"
    broken_home.mkdir()
    (broken_home / "dagster.yaml").write_text("run_storage: {module: nowhere, class: Nothing}\n")
    catalog = platform.env["LAKE_CATALOG_URI"]
    real_password = platform.canaries["LAKE_CATALOG_URI password"]
    refused = catalog.replace(real_password, platform.canaries["LAKE_CATALOG_URI wrong password"])
    (closed_port,) = claim_ports(1)  # nothing listens there
    unreachable = catalog.replace(f":{platform.postgres.port}/", f":{closed_port}/")
    for debug in ("", "1"):
        failing = {
            "catalog refused": (("init",), {"LAKE_CATALOG_URI": refused}),
            "catalog unreachable": (("init",), {"LAKE_CATALOG_URI": unreachable}),
            "NATS refused": (("ingest", "--until-idle"), {"NATS_USER": "intruder"}),
            "instance broken": (
                ("compact", "--date", "2025-01-01"),
                {"DAGSTER_HOME": str(broken_home)},
            ),
        }
        for label, (args, overrides) in failing.items():
            result = platform.run(
                f"{label} debug={debug or 0}", *args, **overrides, LAKE_PLATFORM_DEBUG=debug
            )
            assert result.returncode != 0, (label, result.stderr)
    release_ports([closed_port])
    for label in ("catalog refused", "catalog unreachable"):
        stderr = platform.outputs[f"{label} debug=0"].stderr
        assert "cannot open the Iceberg catalog at postgresql+psycopg2://***@" in stderr, stderr
    missing = platform.run("S3 bucket missing", "ingest", "--until-idle", DATA_ROOT="s3://gone/x")
    assert missing.returncode == 1, missing.stderr


def test_no_secret_is_shown_or_written_anywhere(platform, tmp_path):
    run_everything(platform, tmp_path)
    search = Search(platform.canaries)
    for label, result in platform.outputs.items():
        search.look(f"stdout of {label}", result.stdout)
        search.look(f"stderr of {label}", result.stderr)
    search.look("settings repr", repr(LakeSettings.from_env(platform.env)))
    search_dagster_home(search, platform.dagster_home)
    kinds = search_lake(search, platform)
    catalog_tables = search_catalog_database(search, platform.postgres)
    runs = search_graphql(search, platform.dagster_home)
    print(
        f"secrets: {len(platform.canaries)} canaries, {len(search.surfaces)} surfaces searched "
        f"({len(platform.outputs)} commands, {runs} runs, lake objects {kinds}, "
        f"{catalog_tables} catalog tables), "
        f"{len(search.leaks)} leaks"
    )
    assert not search.leaks, "\n".join(search.leaks)
    # The search is not vacuous: every kind of surface was there, and it finds a planted secret.
    lake_kinds = {"bronze", "silver", "gold", "_ledger", "_quarantine", "_iceberg"}
    assert runs >= 1 and lake_kinds <= kinds.keys() and catalog_tables >= 2
    assert any(name.startswith("sqlite ") for name in search.surfaces)
    config = (tmp_path / "nats" / "nats-server.conf").read_text()
    assert search.found_in(config) == ["NATS_PASSWORD", "NATS_URL password"]
    assert search.found_in(platform.env["LAKE_CATALOG_URI"]) == ["LAKE_CATALOG_URI password"]
