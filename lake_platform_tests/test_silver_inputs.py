"""What a Silver rebuild reads and what its checks compare: the exact input files, read
literally (glob characters in values or the lake root), and a value-hour split over files."""

import fsspec
import polars as pl
import pytest

from lake_platform.derived.checking import check_hour
from lake_platform.derived.hour_files import files_digest
from lake_platform.derived.partition_files import write_partition
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.results import HourResult
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import escape_partition_value, hour_folder
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.hours import replace_hour
from lake_platform.tables.naming import content_name
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import committed_file, committed_files, tables_of

SILVER = SILVER_TABLES["stocks/trades"]
SPY = f"silver/stocks/trades/symbol=SPY/{hour_folder(HOUR)}"


def local_lake(root) -> LakeStore:
    store = LakeStore(str(root), fsspec.filesystem("file"))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(300)), files=3)
    return store


def test_reconciliation_uses_the_files_the_rebuild_read(tmp_path):
    store = local_lake(tmp_path / "lake")
    result = rebuild_hour(tables_of(store), SILVER, HOUR)
    assert result.input_files == len(store.list_files("bronze")) == 6
    assert files_digest(result.inputs) == files_digest({"all": store.list_files("bronze")})
    later = bronze_rows(TRADES, trades(20, seed=99), first_seq=10_000)
    write_bronze(store, TRADES, later)  # the live ingest appends to the hour after the rebuild
    outcome = check_hour(tables_of(store), SILVER, result)["reconciles_with_bronze"]
    assert outcome.passed, outcome
    spy = committed_file(store, SILVER, HOUR, "symbol=SPY")
    store.write_parquet(store.read_parquet([spy]).head(10), spy)
    outcome = check_hour(tables_of(store), SILVER, result)["reconciles_with_bronze"]
    assert not outcome.passed and "6 input files" in outcome.message


SYMBOLS = ("A[1]", "A1", "A*", "A?")


def silver_ids(store: LakeStore, value_folder: str) -> list[str]:
    """The sorted `event_id`s of a Silver partition value's hour in the current snapshot."""
    files = committed_files(store, SILVER, HOUR)[value_folder]
    return sorted(store.read_parquet(files)["event_id"])


def bronze_ids(rows: pl.DataFrame, symbol: str) -> list[str]:
    """The sorted `event_id`s of `symbol`'s Bronze rows."""
    return sorted(rows.filter(pl.col("symbol") == symbol)["event_id"])


@pytest.mark.parametrize("root", ["lake", "lake[1]", "lake*"])
def test_glob_characters_in_values_and_root_are_read_literally(tmp_path, root):
    store = LakeStore(str(tmp_path / root), fsspec.filesystem("file"))
    rows = bronze_rows(TRADES, trades(200, symbols=SYMBOLS))
    write_bronze(store, TRADES, rows, files=2)
    decoy = LakeStore(str(tmp_path / "lake1"), fsspec.filesystem("file"))
    write_bronze(decoy, TRADES, rows.head(8))  # what `lake[1]` matches as a glob
    result = rebuild_hour(tables_of(store), SILVER, HOUR)
    assert result.rows_read == 200
    assert all(outcome.passed for outcome in check_hour(tables_of(store), SILVER, result).values())
    for symbol in SYMBOLS:
        value_folder = f"symbol={escape_partition_value(symbol)}"
        assert silver_ids(store, value_folder) == bronze_ids(rows, symbol)


def split_spy(store: LakeStore, result: HourResult, cut) -> None:
    """Commit SPY's one Silver file as two files, `cut(rows)` giving their rows in name order,
    and point `result` at that snapshot (what another writer could commit)."""
    spy = committed_file(store, SILVER, HOUR, "symbol=SPY")
    first, second = cut(store.read_parquet([spy]))
    names = [f"{SPY}/part-0000{index}-{index:016d}.parquet" for index in range(2)]
    store.write_parquet(first, names[0])
    store.write_parquet(second, names[1])
    others = [
        NewFile(path)
        for value, paths in committed_files(store, SILVER, HOUR).items()
        if value != "symbol=SPY"
        for path in paths
    ]
    new = [*others, *(NewFile(name) for name in names)]
    result.snapshot_id = replace_hour(tables_of(store).table(SILVER), HOUR, new, {}).snapshot_id


CROSS_FILE = {
    "in_order": (lambda rows: (rows.head(60), rows.slice(60)), ()),
    "files_swapped": (lambda rows: (rows.slice(60), rows.head(60)), ("sorted_by_ts_event_ns",)),
    "boundary_row_repeated": (lambda rows: (rows.head(61), rows.slice(60)), ("event_id_unique",)),
    "row_repeated_in_a_later_file": (
        lambda rows: (
            rows.head(60),
            pl.concat([rows.slice(60, 30), rows.slice(5, 1), rows.slice(90)]).sort(
                "ts_event_ns", "event_id"
            ),
        ),
        ("sorted_by_ts_event_ns", "event_id_unique"),
    ),
}


@pytest.mark.parametrize("case", sorted(CROSS_FILE))
def test_order_and_uniqueness_hold_across_a_value_hours_files(tmp_path, case):
    store = local_lake(tmp_path / "lake")
    result = rebuild_hour(tables_of(store), SILVER, HOUR)
    cut, failing = CROSS_FILE[case]
    split_spy(store, result, cut)
    outcomes = check_hour(tables_of(store), SILVER, result)
    for name in ("sorted_by_ts_event_ns", "event_id_unique"):
        assert outcomes[name].passed is (name not in failing), outcomes[name]
    for name in failing:
        assert SPY in outcomes[name].message


def test_a_value_hours_files_are_content_named_and_older_versions_stay(tmp_path):
    """Each file is named by its bytes' digest: the same rows give the same file, other rows
    a new file beside it (an older snapshot still reads the old one)."""
    store = LakeStore(str(tmp_path), fsspec.filesystem("file"))
    rows = pl.DataFrame({"ts_event_ns": range(9), "event_id": [str(i) for i in range(9)]})
    (first,) = write_partition(store, SPY, rows)
    assert first.path == f"{SPY}/{content_name(store.read_bytes(first.path), 0)}"
    assert write_partition(store, SPY, rows) == [first]
    (second,) = write_partition(store, SPY, rows.head(5))
    assert second.path != first.path
    assert store.list_files(SPY) == sorted([first.path, second.path])
    assert store.read_parquet([first.path]).equals(rows)


def test_glob_characters_in_values_on_local_disk_and_s3(lake: LakeStore):
    rows = bronze_rows(TRADES, trades(80, symbols=SYMBOLS))
    write_bronze(lake, TRADES, rows, files=2)
    assert rebuild_hour(tables_of(lake), SILVER, HOUR).rows_read == 80
    for symbol in SYMBOLS:
        value_folder = f"symbol={escape_partition_value(symbol)}"
        assert silver_ids(lake, value_folder) == bronze_ids(rows, symbol)


def rebuilt_bytes(root, rows: pl.DataFrame, layouts: tuple[bool, ...]) -> dict[str, bytes]:
    """Silver and Gold bars rebuilt from `rows` written as Bronze files of `layouts` (True: the
    partition column inside, as before issue 13): every derived file's bytes, by path."""
    store = LakeStore(str(root), fsspec.filesystem("file"))
    for index, old_layout in enumerate(layouts):
        part = rows.gather_every(len(layouts), offset=index)
        write_bronze(store, TRADES, part, old_layout=old_layout)
    for table in (SILVER, GOLD_BARS):
        outcomes = check_hour(tables_of(store), table, rebuild_hour(tables_of(store), table, HOUR))
        assert all(outcome.passed for outcome in outcomes.values()), outcomes
    return {
        path: store.read_bytes(path)
        for table in (SILVER, GOLD_BARS)
        for paths in committed_files(store, table, HOUR).values()
        for path in paths
    }


def test_bronze_of_either_layout_gives_the_same_silver_and_gold_bytes(tmp_path):
    rows = bronze_rows(TRADES, trades(300, symbols=("SPY", "0700", "A[1]")))
    new = rebuilt_bytes(tmp_path / "new", rows, (False, False))
    assert rebuilt_bytes(tmp_path / "old", rows, (True, True)) == new
    assert rebuilt_bytes(tmp_path / "mixed", rows, (True, False)) == new
    assert len(new) == 6
    for body in new.values():
        assert "symbol" not in pl.read_parquet(body).columns
