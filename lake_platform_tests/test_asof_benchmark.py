"""`benchmarks/asof.py` runs end to end on tiny hours: Silver committed to the catalog, the
platform's rebuild and checks and DuckDB's ASOF JOIN run in child processes, the same rows
and matched `event_id`s (no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "asof.py"


@pytest.mark.slow
def test_asof_benchmark_runs_on_tiny_hours(tmp_path):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--scale", "0.01", "--repeat", "1", "--lake", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("duckdb and ours hold the same rows: yes") == 2
    assert done.stdout.count("trades matched differently by duckdb: 0") == 2
    assert done.stdout.count("verified vs duckdb") == 2
