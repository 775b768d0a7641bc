"""The Iceberg catalog of the lake and its tables: where the catalog is, names, schemas,
idempotent creation, content-addressed names (`lake_platform.tables`)."""

import hashlib
import os
import socket
import traceback
from pathlib import Path

import pytest
from pyiceberg.types import DateType, IntegerType, ListType, StringType

from lake_platform.derived.tables import DERIVED_TABLES, GOLD_BARS, GOLD_SIGNALS, SILVER_TABLES
from lake_platform.settings import LakeSettings, SettingsError
from lake_platform.tables.catalog import (
    CatalogError,
    catalog_uri,
    file_io_properties,
    open_catalog,
    root_url,
)
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.naming import content_name, content_name_for_digest
from lake_platform.tables.registry import ensure_table, ensure_tables
from lake_platform.tables.schema import iceberg_schema


def test_local_lake_defaults_to_a_sqlite_catalog_in_its_iceberg_folder(tmp_path: Path) -> None:
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    assert catalog_uri(settings) == f"sqlite:///{tmp_path}/lake/_iceberg/catalog.db"
    assert (tmp_path / "lake" / "_iceberg").is_dir()


def test_the_catalog_uri_comes_from_the_settings_not_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAKE_CATALOG_URI", f"sqlite:///{tmp_path}/from-environ.db")
    local = LakeSettings(data_root=str(tmp_path / "lake"))
    assert catalog_uri(local) == f"sqlite:///{tmp_path}/lake/_iceberg/catalog.db"
    configured = LakeSettings.from_env(
        {"DATA_ROOT": str(tmp_path / "lake"), "LAKE_CATALOG_URI": f" sqlite:///{tmp_path}/set.db "}
    )
    assert catalog_uri(configured) == f"sqlite:///{tmp_path}/set.db"
    open_catalog(configured).create_namespace("silver")
    assert (tmp_path / "set.db").is_file() and not (tmp_path / "from-environ.db").exists()


def test_s3_lake_needs_a_catalog_uri_and_passes_its_credentials_to_pyiceberg_only() -> None:
    settings = LakeSettings(
        data_root="s3://bucket/lake",
        use_s3=True,
        s3_endpoint="http://127.0.0.1:9",
        s3_access_key="key-id",
        s3_secret_key="very-secret",
        s3_region="us-east-1",
    )
    with pytest.raises(SettingsError, match="LAKE_CATALOG_URI is required") as raised:
        catalog_uri(settings)
    assert "\n" not in str(raised.value)
    assert file_io_properties(settings) == {
        "s3.endpoint": "http://127.0.0.1:9",
        "s3.access-key-id": "key-id",
        "s3.secret-access-key": "very-secret",
        "s3.region": "us-east-1",
    }
    assert root_url(settings) == "s3://bucket/lake"


def test_an_unreachable_catalog_database_fails_without_its_password(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"postgresql+psycopg2://lake:pa55word@127.0.0.1:{port}/iceberg"
    settings = LakeSettings(data_root=str(tmp_path / "lake"), catalog_uri=uri)
    with pytest.raises(CatalogError) as raised:
        open_catalog(settings)
    assert "pa55word" not in "".join(traceback.format_exception(raised.value))
    assert f"127.0.0.1:{port}" in str(raised.value)


def test_identifiers_are_tier_then_path_with_underscores() -> None:
    assert table_identifier(SILVER_TABLES["stocks/trades"].target) == "silver.stocks_trades"
    greeks = SILVER_TABLES["options/greeks_snapshots"].target
    assert table_identifier(greeks) == "silver.options_greeks_snapshots"
    assert table_identifier(GOLD_SIGNALS.target) == "gold.levels_signals"
    assert table_identifier(GOLD_BARS.target) == "gold.stocks_bars_1m"
    identifiers = [table_identifier(table.target) for table in DERIVED_TABLES]
    assert len(set(identifiers)) == len(identifiers)


@pytest.mark.parametrize("table", DERIVED_TABLES, ids=lambda table: table.target)
def test_schema_is_the_file_columns_then_the_folder_columns_all_optional(table) -> None:
    schema = iceberg_schema(table)
    file_columns = [name for name in table.schema.names() if name != table.partition_column]
    assert [field.name for field in schema.fields] == [
        *file_columns,
        table.partition_column,
        "date",
        "hour",
    ]
    assert [field.field_id for field in schema.fields] == list(range(1, len(schema.fields) + 1))
    assert not any(field.required for field in schema.fields)
    folder_types = [schema.find_type(name) for name in (table.partition_column, "date", "hour")]
    assert folder_types == [StringType(), DateType(), IntegerType()]
    for field in schema.fields:
        if isinstance(field.field_type, ListType):
            assert not field.field_type.element_required


def test_tables_are_created_once_at_their_folders_with_metadata_outside_the_hive_tree(
    tmp_path: Path,
) -> None:
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    root = root_url(settings)
    created = ensure_tables(open_catalog(settings), root, DERIVED_TABLES)
    metadata_files = sorted(
        os.path.join(folder, name)
        for folder, _, names in os.walk(tmp_path / "lake" / "_iceberg")
        for name in names
        if name.endswith(".metadata.json")
    )
    again = ensure_tables(open_catalog(settings), root, DERIVED_TABLES)

    assert [table.target for table in DERIVED_TABLES] == list(created) == list(again)
    for target, table in again.items():
        assert table.metadata.table_uuid == created[target].metadata.table_uuid
        assert table.location() == f"{root}/{target}"
        assert table.metadata_location.startswith(f"{root}/_iceberg/{target}/metadata/")
        assert "schema.name-mapping.default" in table.properties
        assert table.properties["commit.retry.num-retries"] == "10"
        assert [field.name for field in table.spec().fields][1:] == ["date", "hour"]
    assert len(metadata_files) == len(DERIVED_TABLES)
    assert not (tmp_path / "lake" / "silver").exists()  # nothing written into the Hive tree


def test_content_names_are_the_index_and_the_digest_of_the_bytes() -> None:
    body = b"PAR1 some bytes PAR1"
    digest = hashlib.sha256(body).hexdigest()
    assert content_name(body, 3) == f"part-00003-{digest[:16]}.parquet"
    assert content_name(body, 3) == content_name_for_digest(digest.upper(), 3)
    assert content_name(body + b"!", 3) != content_name(body, 3)


def test_a_namespace_another_process_creates_meanwhile_is_no_error(tmp_path: Path) -> None:
    """Two rebuilds starting on a new lake create the namespace at once: pyiceberg checks,
    then inserts, and the loser's insert fails on the catalog's unique key (IntegrityError;
    seen in CI). Here the check runs before the other process's insert lands."""
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    open_catalog(settings).create_namespace("silver")
    catalog = open_catalog(settings)
    real, checks = catalog.namespace_exists, []

    def checked_before_the_other_insert(namespace: object) -> bool:
        checks.append(namespace)
        return False if len(checks) == 1 else real(namespace)

    catalog.namespace_exists = checked_before_the_other_insert  # type: ignore[method-assign]
    table = ensure_table(catalog, root_url(settings), SILVER_TABLES["stocks/trades"])
    assert table.name() == ("silver", "stocks_trades") and checks
