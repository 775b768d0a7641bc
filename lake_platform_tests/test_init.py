"""`lake-platform init`: creates the buckets, the Iceberg catalog and tables, streams,
consumers and Dagster storage once, and reports them as existing when run again; a catalog it
cannot open fails it in one line that never shows the catalog's password."""

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import nats
import psycopg2
import pytest

from lake_platform.cli import main
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.ingest.jetstream import DURABLE
from lake_platform.settings import LakeSettings
from lake_platform.tables.catalog import open_catalog
from lake_platform.tables.identifiers import table_identifier
from lake_platform_tests.servers import PostgresServer, claim_ports, release_ports

STREAMS = ("MARKET", "SIGNALS")
CATALOG_DATABASE = "iceberg"


@pytest.fixture
def deployment_env(monkeypatch, nats_server, s3_server, tmp_path):
    """The environment of a deployment on the test servers; buckets not yet created."""
    buckets = {"lake": f"lake-{secrets.token_hex(4)}", "logs": f"logs-{secrets.token_hex(4)}"}
    home = tmp_path / "dagster"
    home.mkdir()
    env = {
        "DATA_ROOT": f"s3://{buckets['lake']}/market",
        "USE_S3": "true",
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_ACCESS_KEY": s3_server.access_key,
        "S3_SECRET_KEY": s3_server.secret_key,
        "S3_REGION": "us-east-1",
        "NATS_URL": nats_server.url,
        "NATS_STREAM_MAX_AGE": "1h",
        "NATS_STREAM_MAX_BYTES": "64M",
        "DAGSTER_HOME": str(home),
        "DAGSTER_COMPUTE_LOG_BUCKET": buckets["logs"],
        "LAKE_CATALOG_URI": f"sqlite:///{tmp_path / 'catalog.db'}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return buckets


def run_init(capsys) -> list[str]:
    assert main(["init"]) == 0
    return capsys.readouterr().out.splitlines()


async def stream_configs(url: str) -> dict[str, tuple[int, float, int, bool]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    configs = {}
    for stream in STREAMS:
        config = (await js.stream_info(stream)).config
        durable = (await js.consumer_info(stream, DURABLE)).config.durable_name == DURABLE
        configs[stream] = (config.num_replicas, config.max_age, config.max_bytes, durable)
    await nc.close()
    return configs


def test_init_creates_everything_once_then_finds_it(deployment_env, capsys, nats_server, s3_server):
    first = run_init(capsys)
    created = [line for line in first if line.startswith("created")]
    # two buckets, the catalog, its tables, two streams, two consumers
    assert len(created) == 7 + len(CATALOG_TABLES), first
    things = (*deployment_env.values(), *STREAMS, f"MARKET/{DURABLE}", f"SIGNALS/{DURABLE}")
    identifiers = [table_identifier(table.target) for table in CATALOG_TABLES]
    for thing in (*things, "iceberg catalog lake", *identifiers):
        assert any(thing in line for line in created), (thing, first)
    assert any(line.endswith("(schema up to date)") for line in first), first

    second = run_init(capsys)
    assert len(second) == len(first)
    assert all(line.startswith("exists") for line in second), "\n".join(second)

    one_hour, sixty_four_mib = 3600.0, 64 * 2**20
    assert asyncio.run(stream_configs(nats_server.url)) == {
        stream: (1, one_hour, sixty_four_mib, True) for stream in STREAMS
    }
    listing = {entry.rstrip("/") for entry in s3_server.filesystem().ls("", refresh=True)}
    assert set(deployment_env.values()) <= listing
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []  # the storage is there, at the latest schema
        assert "current" in instance.schema_str()


def test_init_fails_in_one_line_on_wrong_credentials(deployment_env, monkeypatch, capsys):
    monkeypatch.setenv("S3_SECRET_KEY", "not-the-secret")
    assert main(["init"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert f"cannot create bucket {deployment_env['lake']}" in captured.err
    assert "not-the-secret" not in captured.err


def test_init_on_a_local_lake_without_dagster_home(monkeypatch, capsys, nats_server, tmp_path):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("NATS_URL", nats_server.url)
    first = run_init(capsys)
    assert first[0] == f"created lake folder {tmp_path / 'lake'}"
    assert first[-1] == "skipped dagster storage: DAGSTER_HOME is not set"
    assert (tmp_path / "lake").is_dir()
    assert run_init(capsys)[:-1] == [line.replace("created", "exists") for line in first[:-1]]


def tables_of_the_catalog(settings: LakeSettings) -> dict[str, tuple[str, str]]:
    """(location, metadata location) of every table of the settings' catalog."""
    catalog = open_catalog(settings)
    names = [
        ".".join(identifier)
        for namespace in catalog.list_namespaces()
        for identifier in catalog.list_tables(namespace)
    ]
    return {
        name: (table.location(), table.metadata_location)
        for name in names
        for table in [catalog.load_table(name)]
    }


def assert_catalog_holds_the_derived_tables(settings: LakeSettings, root: str) -> None:
    found = tables_of_the_catalog(settings)
    assert set(found) == {table_identifier(table.target) for table in CATALOG_TABLES}
    for table in CATALOG_TABLES:
        location, metadata = found[table_identifier(table.target)]
        assert location == f"{root}/{table.target}"
        assert metadata.startswith(f"{root}/_iceberg/{table.target}/metadata/"), metadata


def catalog_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " iceberg " in line]


def test_init_creates_the_iceberg_catalog_and_tables_once(
    monkeypatch, capsys, nats_server, tmp_path
):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.delenv("LAKE_CATALOG_URI", raising=False)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("NATS_URL", nats_server.url)
    first = catalog_lines(run_init(capsys))
    catalog_file = tmp_path / "lake" / "_iceberg" / "catalog.db"
    assert first[0] == f"created iceberg catalog lake at sqlite:///{catalog_file}"
    assert first[1:] == [
        f"created iceberg table {table_identifier(table.target)} at "
        f"{tmp_path / 'lake' / table.target}"
        for table in CATALOG_TABLES
    ]
    assert_catalog_holds_the_derived_tables(LakeSettings.from_env(), str(tmp_path / "lake"))

    second = catalog_lines(run_init(capsys))
    assert second == [line.replace("created", "exists", 1) for line in first]


def test_init_on_s3_needs_the_catalog_uri(deployment_env, monkeypatch, capsys):
    monkeypatch.delenv("LAKE_CATALOG_URI")
    assert main(["init"]) == 1
    captured = capsys.readouterr()
    assert not catalog_lines(captured.out.splitlines())
    (line,) = captured.err.strip().splitlines()
    assert "LAKE_CATALOG_URI is required when DATA_ROOT is on S3" in line


def test_init_fails_in_one_line_on_an_unreachable_catalog(
    deployment_env, monkeypatch, capsys, tmp_path
):
    password = f"pw-{secrets.token_hex(8)}"
    (port,) = claim_ports(1)  # nothing listens there
    try:
        uri = f"postgresql+psycopg2://lake:{password}@127.0.0.1:{port}/{CATALOG_DATABASE}"
        monkeypatch.setenv("LAKE_CATALOG_URI", uri)
        assert main(["init"]) == 1
    finally:
        release_ports([port])
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert f"cannot open the Iceberg catalog at postgresql+psycopg2://***@127.0.0.1:{port}/" in line
    assert password not in captured.err + captured.out


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """The deployment's PostgreSQL: a server with the Dagster database only."""
    workdir = tmp_path_factory.mktemp("pg") / "pg"
    with PostgresServer.start(workdir, user="dagster", database="dagster") as server:
        yield server


def databases(server: PostgresServer) -> set[str]:
    connection = psycopg2.connect(server.url.replace("postgresql+psycopg2", "postgresql"))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            return {name for (name,) in cursor.fetchall()}
    finally:
        connection.close()


def catalog_url(server: PostgresServer, password: str | None = None) -> str:
    """The deployment's LAKE_CATALOG_URI: database `iceberg` of the Dagster PostgreSQL."""
    url = server.url.rsplit("/", 1)[0] + f"/{CATALOG_DATABASE}"
    return url if password is None else url.replace(f":{server.password}@", f":{password}@")


@pytest.mark.slow
def test_init_creates_the_catalog_database_on_postgres(
    deployment_env, monkeypatch, capsys, postgres, tmp_path: Path
):
    monkeypatch.setenv("LAKE_CATALOG_URI", catalog_url(postgres))
    assert CATALOG_DATABASE not in databases(postgres)
    first = catalog_lines(run_init(capsys))
    shown = f"postgresql+psycopg2://***@127.0.0.1:{postgres.port}/{CATALOG_DATABASE}"
    assert first[0] == f"created iceberg catalog lake at {shown}"
    assert len(first) == 1 + len(CATALOG_TABLES)
    assert all(line.startswith("created iceberg table ") for line in first[1:]), first
    assert CATALOG_DATABASE in databases(postgres)
    root = f"s3://{deployment_env['lake']}/market"
    assert_catalog_holds_the_derived_tables(LakeSettings.from_env(), root)

    second = catalog_lines(run_init(capsys))
    assert second == [line.replace("created", "exists", 1) for line in first]


@pytest.mark.slow
def test_init_never_shows_the_catalog_password(deployment_env, monkeypatch, capsys, postgres):
    wrong = f"Wrong{secrets.token_hex(8)}"
    monkeypatch.setenv("LAKE_CATALOG_URI", catalog_url(postgres, wrong))
    assert main(["init"]) == 1
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert "cannot open the Iceberg catalog at postgresql+psycopg2://***@" in line
    assert "password authentication failed" in line
    assert wrong not in captured.err + captured.out
    assert postgres.password not in captured.err + captured.out
