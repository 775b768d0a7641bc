"""Random kill -9 loop (short variant; `benchmarks/chaos_ingest.py` is the long one): every
event of a simulated session lands after SIGKILLs at random moments, and Silver and Gold
rebuilt from that Bronze are byte for byte those of a clean single-run ingest.

The seed is new on every run (the suite keeps searching); `LAKE_CHAOS_SEED` repeats one.
"""

import os
import secrets
from pathlib import Path

import pytest

from lake_platform_tests.kill_loop import ChaosPlan, run_chaos

pytestmark = pytest.mark.slow


def test_random_sigkills_lose_nothing_and_silver_matches_a_clean_ingest(tmp_path: Path):
    seed = int(os.environ.get("LAKE_CHAOS_SEED") or secrets.randbelow(2**31))
    result = run_chaos(tmp_path, ChaosPlan(events=20_000, kills=5, seed=seed))
    report = "\n".join(result.lines())
    assert result.kills == 5, report
    assert result.problems == [], report
    assert result.bronze_rows >= result.good, report
    assert result.derived_files > 0, report
