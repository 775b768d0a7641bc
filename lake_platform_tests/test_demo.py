"""`lake-platform demo --minutes 1` end to end, its summary checked against the lake."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from lake_platform_tests.session import read_files

pytestmark = pytest.mark.slow
GOLD = (
    "gold/levels/signals",
    "gold/stocks/bars_1m",
    "gold/stocks/trades_nbbo",
    "gold/options/trades_enriched",
)


def count(value: str) -> int | None:
    return None if value == "-" else int(value.replace(",", ""))


def rows_under(root: Path, folder: str) -> int:
    return sum(frame.height for frame in read_files(str(root), folder).values())


def test_demo_summary_matches_the_lake(tmp_path, monkeypatch):
    lake = tmp_path / "lake"
    home = tmp_path / "not" / "yet" / "dagster_home"  # created by the command
    env = {**os.environ, "DATA_ROOT": str(lake), "DAGSTER_HOME": str(home)}
    env.pop("NATS_URL", None)
    done = subprocess.run(
        [Path(sys.executable).with_name("lake-platform"), "demo", "--minutes", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"created DAGSTER_HOME {home}" in done.stderr
    # Output for logs: one line per stage, no progress bar redrawn with carriage returns, no
    # Dagster warning about a missing instance configuration.
    assert "\r" not in done.stderr and "published " in done.stderr
    assert "No dagster instance configuration file" not in done.stderr + done.stdout
    lines = done.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("table ")))
    summary = {}
    for line in lines[header + 1 : header + 8 + len(GOLD)]:
        table, *cells = line.split()
        summary[table] = cells
    assert len(summary) == 7 + len(GOLD)
    quarantined = 0
    for table, (published, bad, bronze, silver, dups, gold, checks) in summary.items():
        line = f"{table} {published} {bad} {bronze} {silver} {dups} {gold} {checks}"
        passed, total = checks.split("/")
        assert passed == total and int(total) >= (0 if table == "levels/signals" else 6), line
        if table in GOLD:
            assert count(gold) == rows_under(lake, table) > 0
            assert count(published) is count(bronze) is count(silver) is None
            continue
        assert count(bronze) == rows_under(lake, f"bronze/{table}") == count(published) > 0
        quarantined += count(bad)
        if table != "levels/signals":
            assert count(silver) == rows_under(lake, f"silver/{table}")
            assert count(bronze) - count(silver) == count(dups) > 0
    nbbo = read_files(str(lake), "gold/stocks/trades_nbbo")
    matched = sum(frame["bid_px"].is_not_null().sum() for frame in nbbo.values())
    assert matched > 0.9 * rows_under(lake, "gold/stocks/trades_nbbo")
    malformed_line = next(line for line in lines if line.startswith("malformed"))
    malformed = int(malformed_line.split(":")[1].split()[0])
    assert rows_under(lake, "_quarantine") == quarantined >= malformed > 0
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        silver = instance.fetch_materializations(
            dg.AssetKey(["silver", "stocks", "trades"]), limit=5
        )
        bronze = instance.fetch_materializations(
            dg.AssetKey(["bronze", "stocks", "trades"]), limit=5
        )
        assert silver.records and bronze.records


def test_a_relative_dagster_home_is_one_clear_line(tmp_path):
    env = {**os.environ, "DATA_ROOT": str(tmp_path / "lake"), "DAGSTER_HOME": "dagster_home"}
    done = subprocess.run(
        [Path(sys.executable).with_name("lake-platform"), "demo", "--minutes", "0.1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "DAGSTER_HOME must be an absolute path" in done.stderr
    assert "Traceback" not in done.stderr
