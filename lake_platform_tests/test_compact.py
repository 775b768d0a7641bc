"""`lake-platform compact`: a date of Silver through Dagster, with the compactor's summary."""

import os
import time

import dagster as dg
import fsspec

from lake_platform.cli import main
from lake_platform.storage import LakeStore
from lake_platform.storage.store import TEMPORARY_MAX_AGE_S
from lake_platform_tests.bronze_files import TRADES, bronze_rows, trades, write_bronze


def test_compact_a_date_records_lineage_and_prints_the_summary(tmp_path, monkeypatch, capsys):
    store = LakeStore(str(tmp_path / "lake"), fsspec.filesystem("file"))
    rows = bronze_rows(TRADES, trades(400))
    write_bronze(store, TRADES, rows, files=2)
    write_bronze(store, TRADES, rows.head(40))
    left = tmp_path / "lake/silver/stocks/.part-00000.parquet.0123456789ab.tmp"
    left.parent.mkdir(parents=True)
    left.write_bytes(b"PAR1 what a killed write left")
    old = time.time() - TEMPORARY_MAX_AGE_S - 60
    os.utime(left, (old, old))
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("DATA_ROOT", store.root)

    assert main(["compact", "--date", "2025-12-16", "--table", "stocks/trades"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("stocks/trades"))
    assert line.split() == ["stocks/trades", "success", "440", "400", "40"]
    assert len(store.list_files("silver/stocks/trades")) == 2
    assert not left.exists()
    assert "removed 1 temporary file older than 1 h left by interrupted writes" in out

    with dg.DagsterInstance.get() as instance:
        records = instance.fetch_materializations(
            dg.AssetKey(["silver", "stocks", "trades"]), limit=50
        ).records
        assert {record.partition_key for record in records} == {
            f"2025-12-16-{hour:02d}:00" for hour in range(24)
        }


def test_compact_rejects_an_unknown_table_in_one_line(capsys):
    assert main(["compact", "--date", "2025-12-16", "--table", "stocks/nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no Silver table 'stocks/nope'" in err
