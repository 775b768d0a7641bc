"""Shared fixtures: real servers on loopback, and a lake on local disk or on S3."""

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from lake_platform.embedded_nats import NatsServer
from lake_platform.settings import NUMBER_RULES, LakeSettings
from lake_platform.storage import LakeStore
from lake_platform_tests.servers import PostgresServer, S3Server
from lake_platform_tests.tables_of import tables_of


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1 for a module's tests (the Iceberg catalog
    variants: one database per test)."""
    workdir = tmp_path_factory.mktemp("pg") / "pg"
    with PostgresServer.start(workdir, user="lake", database="lake") as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-compatible server (SeaweedFS `weed mini`) on 127.0.0.1 for the session."""
    with S3Server.start(tmp_path_factory.mktemp("s3")) as server:
        yield server


def s3_settings(server: S3Server, bucket: str) -> LakeSettings:
    """Settings of a lake in `bucket` of the test S3 server, its Iceberg catalog a SQLite file
    in the server's folder (a catalog cannot live in the bucket)."""
    catalogs = server.workdir / "catalogs"
    catalogs.mkdir(exist_ok=True)
    return LakeSettings(
        catalog_uri=f"sqlite:///{catalogs}/{bucket}.db",
        data_root=f"s3://{bucket}/lake",
        use_s3=True,
        s3_endpoint=server.endpoint,
        s3_access_key=server.access_key,
        s3_secret_key=server.secret_key,
        s3_region="us-east-1",
    )


@pytest.fixture(params=["local", "s3"])
def lake_settings(request: pytest.FixtureRequest, tmp_path: Path) -> LakeSettings:
    """Settings of an empty lake, once on local disk and once on the test S3 server."""
    if request.param == "local":
        return LakeSettings(data_root=str(tmp_path / "lake"))
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = f"lake-{secrets.token_hex(4)}"
    server.create_bucket(bucket)
    return s3_settings(server, bucket)


@pytest.fixture
def lake(lake_settings: LakeSettings) -> LakeStore:
    """An empty lake, local or on S3 (its catalog known to `tables_of`)."""
    store = LakeStore.from_settings(lake_settings)
    tables_of(store, lake_settings)
    return store


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real nats-server with JetStream on 127.0.0.1, for one test."""
    with NatsServer.start(tmp_path / "nats") as server:
        yield server


@pytest.fixture
def ingest_settings(nats_server: NatsServer, tmp_path: Path) -> LakeSettings:
    """A local lake fed by the test's nats-server, with one-second flushes."""
    return LakeSettings(
        data_root=str(tmp_path / "lake"),
        nats_servers=(nats_server.url,),
        bronze_max_age_s=1.0,
        gold_max_age_s=1.0,
    )


def settings_env(settings: LakeSettings) -> dict[str, str]:
    """The environment variables that give `settings` (local or S3 lakes), every one of them:
    the numeric ones as `NUMBER_RULES` names them (a new setting is passed on by itself), and
    unset ones as empty strings, which override what the test process inherited."""
    env = {
        "DATA_ROOT": settings.data_root,
        "USE_S3": "1" if settings.use_s3 else "0",
        "NATS_URL": ",".join(settings.nats_servers),
        "LAKE_PARTITIONS_START": settings.partitions_start_key,
        "LAKE_METRICS_HOST": settings.metrics_host,
    }
    optional = {
        "S3_ENDPOINT": settings.s3_endpoint,
        "S3_ACCESS_KEY": settings.s3_access_key,
        "S3_SECRET_KEY": settings.s3_secret_key,
        "S3_REGION": settings.s3_region,
        "NATS_USER": settings.nats_user,
        "NATS_PASSWORD": settings.nats_password,
        "NATS_TOKEN": settings.nats_token,
        "NATS_CREDS": settings.nats_creds,
        "NATS_TLS_CA": settings.nats_tls_ca,
        "LAKE_CATALOG_URI": settings.catalog_uri,
    }
    optional |= {rule.variable: getattr(settings, name) for name, rule in NUMBER_RULES.items()}
    return env | {
        variable: "" if value is None else str(value) for variable, value in optional.items()
    }
