"""`lake-platform tag NAME [--table …] [--replace]`: the current snapshot of every Silver and
Gold table (or one) tagged, one line per table; a name taken elsewhere tags no table; bad
names and unknown tables are one line and exit 1."""

from pathlib import Path

import pytest

from lake_platform.cli import main
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform.tables.tags import tags
from lake_platform.tables.time_travel import snapshot_as_of
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze

SILVER = SILVER_TABLES["stocks/trades"]


@pytest.fixture
def tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeTables:
    """A lake (`DATA_ROOT`) whose Silver trades and Gold bars hold one hour; the other tables
    exist without a snapshot."""
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    store = LakeStore.from_settings(settings)
    write_bronze(store, TRADES, bronze_rows(TRADES, trades(200)))
    opened = open_lake_tables(settings, store)
    for table in CATALOG_TABLES:
        opened.table(table)
    rebuild_hour(opened, SILVER, HOUR, "run-1")
    rebuild_hour(opened, GOLD_BARS, HOUR, "run-1")
    return opened


def current(tables: LakeTables, table=SILVER) -> int:
    return tables.table(table).current_snapshot().snapshot_id


def rebuild_with_late_data(tables: LakeTables) -> None:
    late = bronze_rows(TRADES, trades(20, seed=3, symbols=("IWM",)), first_seq=9_000)
    write_bronze(tables.store, TRADES, late)
    rebuild_hour(tables, SILVER, HOUR, "run-2")
    rebuild_hour(tables, GOLD_BARS, HOUR, "run-2")


def test_every_table_is_tagged_or_said_empty(tables: LakeTables, capsys) -> None:
    assert main(["tag", "training-v1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CATALOG_TABLES)
    assert f"tagged silver.stocks_trades snapshot {current(tables)} as training-v1" in lines
    assert (
        f"tagged gold.stocks_bars_1m snapshot {current(tables, GOLD_BARS)} as training-v1" in lines
    )
    assert "silver.stocks_quotes: no snapshot, not tagged" in lines
    assert tags(tables.table(SILVER)) == {"training-v1": current(tables)}


def test_a_tag_reads_back_the_older_version_after_a_rebuild(tables: LakeTables, capsys) -> None:
    tagged = current(tables)
    assert main(["tag", "before-late", "--table", "silver/stocks/trades"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"tagged silver.stocks_trades snapshot {tagged} as before-late"
    ]
    assert tags(tables.table(GOLD_BARS)) == {}
    rebuild_with_late_data(tables)
    assert current(tables) != tagged
    assert snapshot_as_of(tables.table(SILVER), "before-late").snapshot_id == tagged


def test_a_name_taken_elsewhere_tags_no_table_unless_replaced(tables: LakeTables, capsys) -> None:
    assert main(["tag", "release", "--table", "gold/stocks/bars_1m"]) == 0
    old = current(tables, GOLD_BARS)
    rebuild_with_late_data(tables)
    capsys.readouterr()

    assert main(["tag", "release"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"lake-platform: error: gold.stocks_bars_1m: tag 'release' already names snapshot {old}"
    )
    assert "release" not in tags(tables.table(SILVER))

    assert main(["tag", "release", "--replace"]) == 0
    assert tags(tables.table(GOLD_BARS))["release"] == current(tables, GOLD_BARS) != old
    assert tags(tables.table(SILVER))["release"] == current(tables)


def test_tagging_the_same_snapshot_again_is_no_error(tables: LakeTables, capsys) -> None:
    assert main(["tag", "v1", "--table", "stocks/trades"]) == 0
    assert main(["tag", "v1", "--table", "stocks/trades"]) == 0
    assert tags(tables.table(SILVER)) == {"v1": current(tables)}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tag", "1st"], "invalid tag name '1st': it starts with a letter"),
        (["tag", "main"], "'main' is the table's main branch, not a tag name"),
        (["tag", "v1", "--table", "silver/nope"], "no derived table 'silver/nope'; known: "),
    ],
)
def test_bad_names_and_tables_are_one_line(
    tables: LakeTables, argv: list[str], message: str, capsys
) -> None:
    assert main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lake-platform: error: {message}"), err
    assert captured.out == ""
    assert all(tags(tables.table(table)) == {} for table in CATALOG_TABLES)
