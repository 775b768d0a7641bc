"""The production instance's PostgreSQL storage (docker/dagster.yaml) on a real PostgreSQL:
the same data as dagster-postgres' own, over a held connection instead of one per statement."""

from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef

from lake_platform.instance_storage import PooledPostgresStorage
from lake_platform_tests.servers import PostgresServer
from lake_platform_tests.topology import require_postgres

pytestmark = pytest.mark.slow
DOCKER_INSTANCE = Path(__file__).parents[1] / "docker" / "dagster.yaml"
EVENTS = 40


@pytest.fixture(scope="module")
def postgres(tmp_path_factory) -> PostgresServer:
    require_postgres()
    with PostgresServer.start(tmp_path_factory.mktemp("pg") / "pg", database="dagster") as server:
        yield server


def sessions(server: PostgresServer) -> int:
    """Connections the server has accepted for its database so far (this one included)."""
    with (
        psycopg2.connect(
            host="127.0.0.1",
            port=server.port,
            user=server.user,
            password=server.password,
            dbname=server.database,
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("select sessions from pg_stat_database where datname = current_database()")
        return cursor.fetchone()[0]


def instance_storage(production: bool) -> dict:
    """docker/dagster.yaml's storage block, or dagster-postgres' plain one with its config."""
    storage = yaml.safe_load(DOCKER_INSTANCE.read_text())["storage"]
    return storage if production else {"postgres": storage["custom"]["config"]}


def use_instance(postgres: PostgresServer, folder: Path, monkeypatch, production: bool) -> None:
    """`folder` as DAGSTER_HOME of an instance on `postgres` (docker/dagster.yaml's storage)."""
    for name, value in {
        "DAGSTER_POSTGRES_HOST": "127.0.0.1",
        "DAGSTER_POSTGRES_PORT": str(postgres.port),
        "DAGSTER_POSTGRES_USER": postgres.user,
        "DAGSTER_POSTGRES_PASSWORD": postgres.password,
        "DAGSTER_POSTGRES_DB": postgres.database,
    }.items():
        monkeypatch.setenv(name, value)
    storage = {"storage": instance_storage(production)}
    (folder / "dagster.yaml").write_text(yaml.safe_dump(storage))


def report(instance: dg.DagsterInstance, key: dg.AssetKey, count: int) -> None:
    for index in range(count):
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=key, partition=f"2025-12-16-{index % 24:02d}:00")
        )


@pytest.mark.parametrize("production", [True, False], ids=["pooled", "dagster_postgres"])
def test_events_are_stored_over_a_held_connection(postgres, tmp_path, monkeypatch, production):
    use_instance(postgres, tmp_path, monkeypatch, production)
    key = dg.AssetKey(["bronze", "stocks", f"trades_{production}"])
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        assert isinstance(instance.get_ref().storage, PooledPostgresStorage) is production
        before = sessions(postgres)
        report(instance, key, EVENTS)
        opened = sessions(postgres) - before - 1  # our own count query opened one
        stored = instance.fetch_materializations(key, limit=EVENTS + 1).records
    assert len(stored) == EVENTS
    if production:
        assert opened <= 3, "one held connection per storage"
    else:
        assert opened >= EVENTS, "dagster-postgres connects for every statement"


def test_a_postgres_restart_costs_no_failed_statement(postgres, tmp_path, monkeypatch):
    """The held connections die with the server; each is checked before use and replaced."""
    use_instance(postgres, tmp_path, monkeypatch, production=True)
    key = dg.AssetKey(["bronze", "stocks", "restarted"])
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path))) as instance:
        report(instance, key, 2)
        postgres.restart()
        report(instance, key, 2)
        assert instance.get_runs() == []  # the run storage's connection was replaced too
        assert len(instance.fetch_materializations(key, limit=10).records) == 4
