"""A short coverage-guided fuzz run of every fuzz/ target (the long one is `python -m fuzz.run`)."""

import pytest

from fuzz.run import TARGETS, run_target

RUNS = {"decode": 300, "paths": 3_000, "wire": 80}
"""Executions per target: a few seconds each on a busy 2-core machine."""
SEED = 11


@pytest.mark.parametrize("name", TARGETS)
def test_fuzz_target_runs_without_a_crash(name, tmp_path):
    result = run_target(name, tmp_path, runs=RUNS[name], seed=SEED)
    assert result.crashes == [], f"seed {SEED}: {result.output[-3000:]}"
    assert result.executions >= RUNS[name]
