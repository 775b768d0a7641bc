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
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.hours import replace_hour
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import committed_file, committed_files, tables_of

SILVER = SILVER_TABLES["stocks/trades"]


@pytest.fixture
def lake(tmp_path) -> LakeStore:
    store = LakeStore(str(tmp_path), fsspec.filesystem("file"))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(500)), files=3)
    return store


@pytest.fixture
def rebuilt(lake) -> HourResult:
    return rebuild_hour(tables_of(lake), SILVER, HOUR)


def test_all_checks_pass_on_rebuilt_files(lake, rebuilt):
    outcomes = check_hour(tables_of(lake), SILVER, rebuilt)
    assert set(outcomes) == set(SILVER.check_names)
    assert all(outcome.passed for outcome in outcomes.values()), outcomes


def replace_spy(lake: LakeStore, edit, **write_options) -> str:
    """Overwrite the committed file of SPY's hour in place with edited rows (what no writer
    of the lake does: the checks must still catch it); its path."""
    spy_file = committed_file(lake, SILVER, HOUR, "symbol=SPY")
    bad = edit(lake.read_parquet([spy_file]))
    if write_options:
        bad.write_parquet(lake.full_path(spy_file), **write_options)
    else:
        lake.write_parquet(bad, spy_file)
    return spy_file


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
    spy_file = replace_spy(lake, edit)
    outcome = check_hour(tables_of(lake), SILVER, rebuilt)[name]
    assert not outcome.passed
    assert expected in outcome.message
    if name != "reconciles_with_bronze":
        assert spy_file in outcome.message


def test_zstd_check_fails_on_a_snappy_file(lake, rebuilt):
    spy_file = replace_spy(lake, lambda rows: rows, compression="snappy")
    outcome = check_hour(tables_of(lake), SILVER, rebuilt)["zstd_compressed"]
    assert not outcome.passed
    assert spy_file in outcome.message and "SNAPPY" in outcome.message


def test_partition_values_that_vanished_are_removed(lake, rebuilt):
    """A value of the hour in the catalog without input any more loses its files in the
    rebuild's commit; the file stays for the snapshot that holds it."""
    spy_file = committed_file(lake, SILVER, HOUR, "symbol=SPY")
    stale = (
        f"silver/stocks/trades/symbol=GONE/{hour_folder(HOUR)}/part-00000-0000000000000000.parquet"
    )
    lake.write_parquet(lake.read_parquet([spy_file]).head(1), stale)
    iceberg = tables_of(lake).table(SILVER)
    everything = [
        NewFile(path) for paths in committed_files(lake, SILVER, HOUR).values() for path in paths
    ]
    replace_hour(iceberg, HOUR, [*everything, NewFile(stale)], {})
    assert "symbol=GONE" in committed_files(lake, SILVER, HOUR)

    result = rebuild_hour(tables_of(lake), SILVER, HOUR)
    assert result.commit.files_removed == 1 and result.commit.files_added == 0
    assert "symbol=GONE" not in committed_files(lake, SILVER, HOUR)
    assert stale in lake.list_files("silver")  # the older snapshot still reads it
    assert all(outcome.passed for outcome in check_hour(tables_of(lake), SILVER, result).values())


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
    result = rebuild_hour(tables_of(lake), broken, HOUR)
    outcome = check_hour(tables_of(lake), broken, result)[name]
    assert not outcome.passed, outcome
    if name != "reconciles_with_bronze":
        assert any(file.path in outcome.message for file in result.files), outcome


def test_a_file_committed_next_to_the_written_ones_is_checked_as_stored(lake, rebuilt):
    """A file in the checked snapshot that the rebuild did not write is read and checked; one
    lying in the folder uncommitted is no file of the hour (readers never see it)."""
    spy_file = committed_file(lake, SILVER, HOUR, "symbol=SPY")
    stray = spy_file.replace("part-00000-", "part-00001-")
    lake.write_parquet(lake.read_parquet([spy_file]).head(3), stray)
    assert all(o.passed for o in check_hour(tables_of(lake), SILVER, rebuilt).values())

    files = [NewFile(spy_file), NewFile(stray)]
    commit = replace_hour(tables_of(lake).table(SILVER), HOUR, files, {})
    rebuilt.snapshot_id = commit.snapshot_id
    outcomes = check_hour(tables_of(lake), SILVER, rebuilt)
    assert not outcomes["event_id_unique"].passed
    assert "(2 files): row 0 repeats" in outcomes["event_id_unique"].message
    assert not outcomes["sorted_by_ts_event_ns"].passed
    assert f"{spy_file} -> {stray}" in outcomes["sorted_by_ts_event_ns"].message
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
