"""`benchmarks/gold.py` runs end to end on a tiny hour: inputs built, every variant run in
its child process, DuckDB's rows equal to ours (no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gold.py"


@pytest.mark.slow
def test_gold_benchmark_runs_on_a_tiny_hour():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "2000", "--repeat", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("duckdb and ours hold the same rows: yes") == 2
    assert "verified vs duckdb" in done.stdout
