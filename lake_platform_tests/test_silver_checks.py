"""Each Silver check passes on rebuilt files and fails, naming the file, on a crafted bad one,
and on the files of a transform gone wrong (checked on the rows it wrote)."""

import dataclasses

import fsspec
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lake_platform import checks
from lake_platform.derived.checking import check_hour
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.results import HourResult
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform.transforms.silver import deduplicate
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


BROKEN_TRANSFORMS = {
    "sorted_by_ts_event_ns": lambda bronze: deduplicate(bronze).reverse(),
    "event_id_unique": lambda bronze: bronze.drop("_stream_seq").sort("ts_event_ns", "event_id"),
    "reconciles_with_bronze": lambda bronze: deduplicate(bronze).head(-1),
}


@pytest.mark.parametrize("name", sorted(BROKEN_TRANSFORMS))
def test_checks_fail_on_the_files_of_a_broken_transform(lake, name):
    """The rows a rebuild wrote are checked before the files are trusted: a transform that
    writes bad rows fails its hour with no file touched afterwards."""
    write_bronze(lake, TRADES, bronze_rows(TRADES, trades(50)))  # redelivered
    broken = dataclasses.replace(SILVER, transform=BROKEN_TRANSFORMS[name])
    result = rebuild_hour(lake, broken, HOUR)
    outcome = check_hour(lake, broken, result)[name]
    assert not outcome.passed, outcome
    if name != "reconciles_with_bronze":
        assert any(file.path in outcome.message for file in result.files), outcome


def test_a_file_added_next_to_the_written_ones_is_checked_as_stored(lake, rebuilt):
    stray = SPY_FILE.replace("part-00000", "part-00001")
    lake.write_parquet(lake.read_parquet([SPY_FILE]).head(3), stray)
    outcomes = check_hour(lake, SILVER, rebuilt)
    assert not outcomes["event_id_unique"].passed
    assert "(2 files): row 0 repeats" in outcomes["event_id_unique"].message
    assert not outcomes["sorted_by_ts_event_ns"].passed
    assert f"{SPY_FILE} -> {stray}" in outcomes["sorted_by_ts_event_ns"].message
    assert not outcomes["reconciles_with_bronze"].passed


values = st.lists(st.one_of(st.none(), st.text(max_size=3)), max_size=40)


@given(values)
def test_distinct_count_is_n_unique(items):
    series = pl.Series(items, dtype=pl.String)
    assert checks.distinct_count(series) == series.n_unique()


@given(values)
def test_is_first_distinct_is_polars_own(items):
    series = pl.Series(items, dtype=pl.String)
    assert checks.is_first_distinct(series).to_list() == series.is_first_distinct().to_list()


@given(values)
def test_unique_fails_exactly_when_a_key_repeats(items):
    frame = pl.DataFrame({"key": items}, schema={"key": pl.String})
    outcome = checks.unique(frame, ["key"], "f")
    assert outcome.passed is (frame["key"].n_unique() == frame.height), outcome
