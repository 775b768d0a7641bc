"""What the UI says each check verifies comes from one place (`checks.check_descriptions`),
and says what the check does: order and uniqueness span all the files of a value-hour."""

import fsspec
import polars as pl
import pytest

from lake_platform import checks
from lake_platform.definitions import defs
from lake_platform.defs.keys import derived_key
from lake_platform.derived.checking import check_hour
from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import DERIVED_TABLES, SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.hours import replace_hour
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import tables_of


@pytest.mark.parametrize("table", DERIVED_TABLES, ids=lambda table: table.target)
def test_the_ui_shows_the_one_description_of_every_check(table: DerivedTable):
    specs = defs.resolve_assets_def(derived_key(table.target)).check_specs
    shown = {spec.name: spec.description for spec in specs}
    assert shown == checks.check_descriptions(table)
    assert set(shown) == set(table.check_names)
    assert all(shown.values())


def test_uniqueness_and_order_span_the_files_of_a_value_hour(tmp_path):
    """Two files of one symbol's hour, each sorted and unique on its own, that repeat each
    other: both checks fail, as their descriptions say ("in a file" was untrue)."""
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    table = SILVER_TABLES["stocks/trades"]
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(20, symbols=("SPY",))))
    rebuilt = rebuild_hour(tables_of(store), table, HOUR)
    (written,) = rebuilt.files
    copy = written.path.replace("part-00000-", "part-00001-")
    store.write_bytes(store.read_bytes(written.path), copy)
    both = [NewFile(written.path), NewFile(copy)]
    commit = replace_hour(tables_of(store).table(table), HOUR, both, {})
    rebuilt.snapshot_id = commit.snapshot_id
    rows = pl.read_parquet(store.read_bytes(copy))
    assert checks.unique(rows, table.unique_keys, copy).passed
    assert checks.sorted_by(rows, table.order, copy).passed

    outcomes = check_hour(tables_of(store), table, rebuilt)
    folder = f"symbol=SPY/{hour_folder(HOUR)}"
    assert not outcomes[table.unique_check].passed
    assert f"{folder} (2 files)" in outcomes[table.unique_check].message
    assert not outcomes[table.sorted_check].passed
    described = checks.check_descriptions(table)
    assert "all of them together" in described[table.unique_check]
    assert "across its files" in described[table.sorted_check]
