"""The code location loads and declares every asset of the contract, hourly in UTC."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lake_platform.cli import main
from lake_platform.definitions import defs
from lake_platform.defs.asset_metadata import column_schema, table_uri
from lake_platform.defs.keys import derived_key
from lake_platform.derived import tables
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
from lake_platform.derived.tables import GOLD_BARS
from lake_platform.schemas import BY_TABLE
from lake_platform.schemas.registry import partition_column_last
from lake_platform.settings import LakeSettings

DAGSTER = Path(sys.executable).with_name("dagster")
EXPECTED_KEYS = {
    *(
        f"{tier}/{table}"
        for tier in ("bronze", "silver")
        for table in (
            "stocks/trades",
            "stocks/quotes",
            "options/trades",
            "options/greeks_snapshots",
            "futures/trades",
            "futures/mbp10",
        )
    ),
    "bronze/levels/signals",
    "gold/levels/signals",
    "gold/stocks/bars_1m",
    "gold/stocks/trades_nbbo",
    "gold/options/trades_enriched",
    "gold/stocks/daily_summary",
}
DAILY_KEYS = {table.target for table in SQL_GOLD_TABLES}
SERVING_KEYS = {"serving/duckdb"}
"""Not a lake table: the DuckDB warehouse file, unpartitioned."""

DERIVED_BY_TARGET = {table.target: table for table in CATALOG_TABLES}


def all_specs() -> dict[str, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def test_every_contract_asset_key_is_declared():
    assert set(all_specs()) == EXPECTED_KEYS | SERVING_KEYS


def test_every_asset_is_hourly_utc_from_the_configured_start():
    """Hourly, except the SQL Gold tables (daily, UTC) and the warehouse (unpartitioned)."""
    for key, node in all_specs().items():
        partitions = node.partitions_def
        if key in SERVING_KEYS:
            assert partitions is None, key
        elif key in DAILY_KEYS:
            assert isinstance(partitions, dg.DailyPartitionsDefinition), key
            assert partitions.timezone == "UTC"
            assert partitions.get_first_partition_key() == "2024-01-01"
            assert partitions.get_partition_key_for_timestamp(1_765_895_400) == "2025-12-16"
        else:
            assert isinstance(partitions, dg.HourlyPartitionsDefinition), key
            assert partitions.timezone == "UTC"
            assert partitions.get_first_partition_key() == "2024-01-01-00:00"
            assert partitions.get_partition_key_for_timestamp(1_765_895_400) == "2025-12-16-14:00"


def test_lineage_runs_from_bronze_to_gold():
    graph = defs.resolve_asset_graph()
    parents = {
        key.to_user_string(): {parent.to_user_string() for parent in graph.get(key).parent_keys}
        for key in graph.get_all_asset_keys()
    }
    assert parents["silver/stocks/trades"] == {"bronze/stocks/trades"}
    assert parents["gold/levels/signals"] == {"bronze/levels/signals"}
    assert parents["gold/stocks/bars_1m"] == {"silver/stocks/trades"}


@pytest.mark.slow
def test_dagster_validates_the_code_location(tmp_path):
    result = subprocess.run(
        [DAGSTER, "definitions", "validate", "-m", "lake_platform.definitions"],
        capture_output=True,
        text=True,
        env={"DAGSTER_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def listed_gold_tables(capsys) -> dict[str, set[str]]:
    """`lake-platform tables`' Gold line: each table listed, with the tables it is built from."""
    assert main(["tables"]) == 0
    (line,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("gold:")]
    listed = [entry.split(" (from ") for entry in line.removeprefix("gold: ").split(", ")]
    return {target: set(inputs.rstrip(")").split(" + ")) for target, inputs in listed}


def test_the_cli_lists_exactly_the_defined_gold_tables(capsys):
    graph = defs.resolve_asset_graph()
    gold = {key for key in graph.get_all_asset_keys() if key.path[0] == "gold"}
    listed = listed_gold_tables(capsys)
    assert {derived_key(target) for target in listed} == gold
    for target, inputs in listed.items():
        assert graph.get(derived_key(target)).parent_keys == {derived_key(i) for i in inputs}


def test_listing_the_tables_imports_no_dagster():
    """`lake-platform tables` lists the Gold tables from their declarations, which are plain
    Python (it used to import the Dagster assets to list them)."""
    code = (
        "import sys; from lake_platform.cli import main; main(['tables']); "
        "print('dagster imported' if 'dagster' in sys.modules else 'no dagster')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "gold: gold/levels/signals (from bronze/levels/signals)" in result.stdout
    assert result.stdout.splitlines()[-1] == "no dagster"


def test_a_new_gold_table_is_listed_by_the_cli(capsys, monkeypatch):
    """The CLI reads the one list of Gold tables (it used to print its own copy)."""
    extra = replace(GOLD_BARS, target="gold/stocks/bars_5m", description="Five-minute bars.")
    monkeypatch.setattr(tables, "GOLD_TABLES", (*tables.GOLD_TABLES, extra))
    assert listed_gold_tables(capsys)["gold/stocks/bars_5m"] == {"silver/stocks/trades"}


def stored_columns(key: str) -> pl.Schema:
    """The columns of an asset's table as a reader sees them (partition column last)."""
    tier, table = key.split("/", 1)
    if tier == "bronze":
        schema = BY_TABLE[table]
        return partition_column_last(schema.bronze_schema, schema.partition_column)
    return DERIVED_BY_TARGET[key].schema


@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS))
def test_every_asset_shows_its_columns_described_with_their_types(key):
    """The UI's column schema is the stored schema, in order, each column described."""
    shown = all_specs()[key].metadata["dagster/column_schema"]
    columns = stored_columns(key)
    assert [column.name for column in shown.columns] == columns.names()
    assert [column.type for column in shown.columns] == [str(t) for t in columns.dtypes()]
    for column in shown.columns:
        assert column.description and column.description.endswith("."), column.name
    if key == "silver/futures/mbp10":
        described = {column.name: column.description for column in shown.columns}
        assert described["ask_sz_10"] == "Ask size at book level 10 (1 is the best)."


@pytest.mark.parametrize("key", sorted(EXPECTED_KEYS))
def test_every_asset_has_a_description_owner_kinds_location_and_code(key):
    spec = all_specs()[key]
    tier, table = key.split("/", 1)
    if tier != "gold":
        assert spec.description.startswith(BY_TABLE[table].description)
    assert spec.owners == ["team:data-platform"]
    assert "parquet" in spec.kinds
    engine = {"duckdb"} if key in DAILY_KEYS else {"polars"}
    assert spec.kinds - {"parquet"} == ({"nats"} if tier == "bronze" else {*engine, "iceberg"})
    assert spec.metadata["dagster/table_name"] == key
    location = spec.metadata["dagster/uri"]
    assert location.startswith("file:///") and location.endswith(f"/{key}")
    references = spec.metadata["dagster/code_references"].code_references
    assert len(references) >= 2
    for reference in references:
        source = Path(reference.file_path).read_text().splitlines()
        if reference.file_path.endswith(".sql"):  # a SQL Gold table's query, from its top
            assert reference.line_number == 1 and source[0].startswith("--"), reference
        else:
            assert source[reference.line_number - 1].startswith("def "), reference
        assert reference.label


def test_the_transform_is_the_first_code_reference_of_a_derived_asset():
    reference = all_specs()["gold/stocks/bars_1m"].metadata["dagster/code_references"]
    first = reference.code_references[0]
    assert first.file_path.endswith("lake_platform/transforms/gold.py")
    assert "def bars_1m(" in Path(first.file_path).read_text().splitlines()[first.line_number - 1]


def test_an_s3_lake_is_located_by_its_s3_uri():
    settings = LakeSettings(data_root="s3://market/lake/", use_s3=True)
    assert table_uri("silver/stocks/trades", settings) == "s3://market/lake/silver/stocks/trades"


def test_a_column_without_a_description_is_refused():
    with pytest.raises(KeyError, match="new_field"):
        column_schema("silver/stocks/trades", pl.Schema({"new_field": pl.Int64()}))


def test_asof_tables_depend_on_the_previous_hour_of_what_they_look_back_into():
    """The lineage of an as-of hour: the same hour of its trades, and the hour before of the
    quotes and greeks it looks back into (and of the stock trades its tick test reads)."""
    graph = defs.resolve_asset_graph()
    expected = {
        "gold/stocks/trades_nbbo": {
            "silver/stocks/trades": ["2025-12-16-13:00", "2025-12-16-14:00"],
            "silver/stocks/quotes": ["2025-12-16-13:00", "2025-12-16-14:00"],
        },
        "gold/options/trades_enriched": {
            "silver/options/trades": ["2025-12-16-14:00"],
            "silver/options/greeks_snapshots": ["2025-12-16-13:00", "2025-12-16-14:00"],
            "silver/stocks/quotes": ["2025-12-16-13:00", "2025-12-16-14:00"],
        },
    }
    for child, parents in expected.items():
        key = dg.AssetKey.from_user_string(child)
        assert {p.to_user_string() for p in graph.get(key).parent_keys} == set(parents)
        for parent, hours in parents.items():
            mapped = graph.get_parent_partition_keys_for_child(
                "2025-12-16-14:00", dg.AssetKey.from_user_string(parent), key
            )
            assert sorted(mapped.partitions_subset.get_partition_keys()) == hours
        first = graph.get_parent_partition_keys_for_child(
            "2024-01-01-00:00", dg.AssetKey.from_user_string("silver/stocks/quotes"), key
        )
        assert list(first.partitions_subset.get_partition_keys()) == ["2024-01-01-00:00"]
