"""A lake with Iceberg tables for the tests of `lake_platform.tables`: content-addressed
files of one value-hour of `silver/stocks/trades`, written the way a rebuild will."""

import datetime as dt
import io
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.storage.parquet import PARQUET_OPTIONS
from lake_platform.storage.paths import partition_folder
from lake_platform.tables.catalog import open_catalog, root_url
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.naming import content_name
from lake_platform.tables.registry import ensure_tables
from lake_platform.timestamps import HOUR_NS
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.servers import PostgresServer, S3Server

TRADES = SILVER_TABLES["stocks/trades"]
HOUR = dt.datetime(2024, 1, 2, 7, tzinfo=dt.UTC)
VALUES = ("0700", "A/B")


@dataclass
class TablesLake:
    """A lake (its settings name its catalog) and a way to open the catalog anew (one per
    thread or process: pyiceberg's tables are not shared between writers)."""

    settings: LakeSettings

    @property
    def store(self) -> LakeStore:
        return LakeStore.from_settings(self.settings)

    def catalog(self) -> SqlCatalog:
        return open_catalog(self.settings)

    def trades(self) -> Table:
        """`silver.stocks_trades`, created on first use."""
        catalog = self.catalog()
        ensure_tables(catalog, root_url(self.settings), [TRADES])
        return catalog.load_table(table_identifier(TRADES.target))


def trades_rows(hour: dt.datetime, rows: int, version: int) -> pl.DataFrame:
    """`rows` trades of `hour` (without the partition column), `seq` = `version`."""
    start = int(hour.timestamp()) * 1_000_000_000
    step = HOUR_NS // max(rows, 1)
    ts = pl.int_range(0, rows, eager=True) * step + start
    columns = {name: dtype for name, dtype in TRADES.schema.items() if name != "symbol"}
    return pl.DataFrame(
        {
            "ts_event_ns": ts,
            "ts_recv_ns": ts,
            "price": [float(version)] * rows,
            "size": [1] * rows,
            "exchange": [1] * rows,
            "conditions": [[version]] * rows,
            "seq": [version] * rows,
            "source": ["test"] * rows,
            "event_id": [f"{version}-{index}" for index in range(rows)],
        },
        schema=columns,
    )


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer, **PARQUET_OPTIONS)  # type: ignore[arg-type]
    return buffer.getvalue()


def write_value_hour(
    store: LakeStore, value: str, hour: dt.datetime, pieces: Sequence[pl.DataFrame]
) -> list[NewFile]:
    """Write `pieces` as the content-addressed files of one value-hour of the trades."""
    folder = f"{TRADES.target}/{partition_folder('symbol', value, hour)}"
    written = []
    for index, piece in enumerate(pieces):
        body = parquet_bytes(piece)
        path = f"{folder}/{content_name(body, index)}"
        store.write_bytes(body, path)
        written.append(NewFile(path, len(body)))
    return written


def write_version(
    store: LakeStore,
    hour: dt.datetime,
    version: int,
    values: Sequence[str] = VALUES,
    files_per_value: int = 2,
    rows_per_file: Callable[[int], int] = lambda version: 10 + version,
) -> list[NewFile]:
    """Version `version` of an hour: `files_per_value` files per value, every row's `seq`
    the version (so a reader can tell versions apart)."""
    rows = rows_per_file(version)
    return [
        file
        for value in values
        for file in write_value_hour(
            store,
            value,
            hour,
            [trades_rows(hour, rows, version * 100 + part) for part in range(files_per_value)],
        )
    ]


def version_rows(version: int, values: Sequence[str] = VALUES, files_per_value: int = 2) -> int:
    """Rows of an hour written by `write_version` with the default sizes."""
    return len(values) * files_per_value * (10 + version)


LAKE_KINDS = [
    "sqlite-local",
    pytest.param("postgres-local", marks=pytest.mark.slow),
    pytest.param("sqlite-s3", marks=pytest.mark.slow),
]
"""The lakes the table tests run on (the fixture `lake` of each test module)."""


def lake_of_kind(kind: str, request: pytest.FixtureRequest | None, tmp_path: Path) -> TablesLake:
    """An empty lake: local with the default SQLite catalog ("sqlite-local"), local with a
    PostgreSQL catalog ("postgres-local", a database of the `postgres_server` fixture), or on
    S3 with a SQLite catalog beside it ("sqlite-s3")."""
    if kind == "sqlite-local":
        return TablesLake(LakeSettings(data_root=str(tmp_path / "lake")))
    assert request is not None, f"a {kind} lake needs its server fixture"
    if kind == "postgres-local":
        url = fresh_database(request.getfixturevalue("postgres_server"))
        return TablesLake(LakeSettings(data_root=str(tmp_path / "lake"), catalog_uri=url))
    server: S3Server = request.getfixturevalue("s3_server")
    bucket = f"tables-{secrets.token_hex(4)}"
    server.create_bucket(bucket)
    return TablesLake(s3_settings(server, bucket))


def fresh_database(server: PostgresServer) -> str:
    """A new, empty database on `server`; its SQLAlchemy URL."""
    import psycopg2

    name = f"iceberg_{secrets.token_hex(4)}"
    connection = psycopg2.connect(server.url.replace("postgresql+psycopg2", "postgresql"))
    connection.autocommit = True  # CREATE DATABASE runs outside a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
    finally:
        connection.close()
    return server.url.rsplit("/", 1)[0] + f"/{name}"
