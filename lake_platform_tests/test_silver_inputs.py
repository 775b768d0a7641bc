"""What a Silver rebuild reads and what its checks compare: the exact input files, read
literally (glob characters in values or the lake root), and a value-hour split over files."""

import fsspec
import polars as pl
import pytest

from lake_platform.derived.checking import check_hour
from lake_platform.derived.hour_files import files_digest
from lake_platform.derived.partition_files import replace_partition
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import escape_partition_value, hour_folder
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze

SILVER = SILVER_TABLES["stocks/trades"]
SPY = f"silver/stocks/trades/symbol=SPY/{hour_folder(HOUR)}"


def local_lake(root) -> LakeStore:
    store = LakeStore(str(root), fsspec.filesystem("file"))
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(300)), files=3)
    return store


def test_reconciliation_uses_the_files_the_rebuild_read(tmp_path):
    store = local_lake(tmp_path / "lake")
    result = rebuild_hour(store, SILVER, HOUR)
    assert result.input_files == len(store.list_files("bronze")) == 6
    assert files_digest(result.inputs) == files_digest({"all": store.list_files("bronze")})
    later = bronze_rows(TRADES, trades(20, seed=99), first_seq=10_000)
    write_bronze(store, TRADES, later)  # the live ingest appends to the hour after the rebuild
    outcome = check_hour(store, SILVER, result)["reconciles_with_bronze"]
    assert outcome.passed, outcome
    spy = f"{SPY}/part-00000.parquet"
    store.write_parquet(store.read_parquet([spy]).head(10), spy)
    outcome = check_hour(store, SILVER, result)["reconciles_with_bronze"]
    assert not outcome.passed and "6 input files" in outcome.message


SYMBOLS = ("A[1]", "A1", "A*", "A?")


def silver_ids(store: LakeStore, folder: str) -> list[str]:
    """The sorted `event_id`s of a Silver partition-value folder."""
    return sorted(store.read_parquet(store.list_files(folder))["event_id"])


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
    result = rebuild_hour(store, SILVER, HOUR)
    assert result.rows_read == 200
    assert all(outcome.passed for outcome in check_hour(store, SILVER, result).values())
    for symbol in SYMBOLS:
        folder = f"silver/stocks/trades/symbol={escape_partition_value(symbol)}"
        assert silver_ids(store, folder) == bronze_ids(rows, symbol)


def split_spy(store: LakeStore, cut) -> None:
    """Replace SPY's one Silver file by two files, `cut(rows)` giving their rows in name order."""
    first, second = cut(store.read_parquet([f"{SPY}/part-00000.parquet"]))
    store.write_parquet(first, f"{SPY}/part-00000.parquet")
    store.write_parquet(second, f"{SPY}/part-00001.parquet")


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
    result = rebuild_hour(store, SILVER, HOUR)
    cut, failing = CROSS_FILE[case]
    split_spy(store, cut)
    outcomes = check_hour(store, SILVER, result)
    for name in ("sorted_by_ts_event_ns", "event_id_unique"):
        assert outcomes[name].passed is (name not in failing), outcomes[name]
    for name in failing:
        assert SPY in outcomes[name].message


class RecordingStore(LakeStore):
    """A local store that records the order of its writes and deletes."""

    operations: list[tuple[str, str]]

    def write_parquet_digest(self, frame, relative, *, row_group_size=None):
        self.operations.append(("write", relative))
        return super().write_parquet_digest(frame, relative, row_group_size=row_group_size)

    def delete(self, relatives):
        relatives = list(relatives)
        self.operations.extend(("delete", relative) for relative in relatives)
        super().delete(relatives)


def test_replacing_a_value_hour_writes_every_new_file_before_removing_stale_ones(tmp_path):
    store = RecordingStore(str(tmp_path), fsspec.filesystem("file"))
    store.operations = []
    rows = pl.DataFrame({"ts_event_ns": range(9), "event_id": [str(i) for i in range(9)]})
    for index in range(3):
        store.write_parquet(rows.slice(index * 3, 3), f"{SPY}/part-{index:05d}.parquet")
    store.operations.clear()
    replace_partition(store, SPY, rows)
    assert store.operations == [
        ("write", f"{SPY}/part-00000.parquet"),
        ("delete", f"{SPY}/part-00001.parquet"),
        ("delete", f"{SPY}/part-00002.parquet"),
    ]
    assert store.read_parquet(store.list_files(SPY)).equals(rows)


def test_glob_characters_in_values_on_local_disk_and_s3(lake: LakeStore):
    rows = bronze_rows(TRADES, trades(80, symbols=SYMBOLS))
    write_bronze(lake, TRADES, rows, files=2)
    assert rebuild_hour(lake, SILVER, HOUR).rows_read == 80
    for symbol in SYMBOLS:
        folder = f"silver/stocks/trades/symbol={escape_partition_value(symbol)}"
        assert silver_ids(lake, folder) == bronze_ids(rows, symbol)


def rebuilt_bytes(root, rows: pl.DataFrame, layouts: tuple[bool, ...]) -> dict[str, bytes]:
    """Silver and Gold bars rebuilt from `rows` written as Bronze files of `layouts` (True: the
    partition column inside, as before issue 13): every derived file's bytes, by path."""
    store = LakeStore(str(root), fsspec.filesystem("file"))
    for index, old_layout in enumerate(layouts):
        part = rows.gather_every(len(layouts), offset=index)
        write_bronze(store, TRADES, part, old_layout=old_layout)
    for table in (SILVER, GOLD_BARS):
        outcomes = check_hour(store, table, rebuild_hour(store, table, HOUR))
        assert all(outcome.passed for outcome in outcomes.values()), outcomes
    return {path: store.read_bytes(path) for path in store.list_files("silver", "")} | {
        path: store.read_bytes(path) for path in store.list_files("gold", "")
    }


def test_bronze_of_either_layout_gives_the_same_silver_and_gold_bytes(tmp_path):
    rows = bronze_rows(TRADES, trades(300, symbols=("SPY", "0700", "A[1]")))
    new = rebuilt_bytes(tmp_path / "new", rows, (False, False))
    assert rebuilt_bytes(tmp_path / "old", rows, (True, True)) == new
    assert rebuilt_bytes(tmp_path / "mixed", rows, (True, False)) == new
    assert len(new) == 6
    for body in new.values():
        assert "symbol" not in pl.read_parquet(body).columns
