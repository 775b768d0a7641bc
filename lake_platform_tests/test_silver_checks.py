"""Each Silver check passes on rebuilt files and fails, naming the file, on a crafted bad one."""

import fsspec
import polars as pl
import pytest

from lake_platform.derived.hourly import HourResult, check_hour, rebuild_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze

SILVER = SILVER_TABLES["stocks/trades"]

SPY_FILE = f"silver/stocks/trades/symbol=SPY/{hour_folder(HOUR)}/part-00000.parquet"


@pytest.fixture
def lake(tmp_path) -> LakeStore:
    store = LakeStore(str(tmp_path), fsspec.filesystem("file"))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(500)), files=3)
    return store


@pytest.fixture
def rebuilt(lake) -> HourResult:
    return rebuild_hour(lake, SILVER, HOUR)


def test_all_checks_pass_on_rebuilt_files(lake, rebuilt):
    outcomes = check_hour(lake, SILVER, rebuilt)
    assert set(outcomes) == set(SILVER.check_names)
    assert all(outcome.passed for outcome in outcomes.values()), outcomes


def replace_spy(lake: LakeStore, edit, **write_options) -> None:
    rows = lake.read_parquet([SPY_FILE])
    bad = edit(rows)
    if write_options:
        bad.write_parquet(lake.full_path(SPY_FILE), **write_options)
    else:
        lake.write_parquet(bad, SPY_FILE)


CRAFTED = {
    "sorted_by_ts_event_ns": (lambda rows: rows.reverse(), "row 1"),
    "event_id_unique": (lambda rows: pl.concat([rows, rows.head(1)]), "repeats"),
    "within_partition_hour": (
        lambda rows: rows.with_columns(pl.col("ts_event_ns") + 3_600 * 10**9).sort(
            "ts_event_ns", "event_id"
        ),
        "outside",
    ),
    "matches_declared_schema": (
        lambda rows: rows.with_columns(pl.col("size").cast(pl.Int64)),
        "size is Int64",
    ),
    "reconciles_with_bronze": (lambda rows: rows.head(rows.height - 1), "distinct event_id"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_check_fails_on_crafted_file(lake, rebuilt, name):
    edit, expected = CRAFTED[name]
    replace_spy(lake, edit)
    outcome = check_hour(lake, SILVER, rebuilt)[name]
    assert not outcome.passed
    assert expected in outcome.message
    if name != "reconciles_with_bronze":
        assert SPY_FILE in outcome.message


def test_zstd_check_fails_on_a_snappy_file(lake, rebuilt):
    replace_spy(lake, lambda rows: rows, compression="snappy")
    outcome = check_hour(lake, SILVER, rebuilt)["zstd_compressed"]
    assert not outcome.passed
    assert SPY_FILE in outcome.message and "SNAPPY" in outcome.message


def test_partition_values_that_vanished_are_removed(lake, rebuilt):
    stale = f"silver/stocks/trades/symbol=GONE/{hour_folder(HOUR)}/part-00000.parquet"
    lake.write_parquet(lake.read_parquet([SPY_FILE]).head(1), stale)
    result = rebuild_hour(lake, SILVER, HOUR)
    assert result.removed_values == ["symbol=GONE"]
    assert stale not in lake.list_files("silver")
    assert all(outcome.passed for outcome in check_hour(lake, SILVER, result).values())
