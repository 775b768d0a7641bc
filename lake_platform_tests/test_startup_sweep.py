"""`lake-platform ingest` sweeps what killed writes left before it starts pulling."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lake_platform.storage.store import TEMPORARY_MAX_AGE_S
from lake_platform_tests.conftest import settings_env
from lake_platform_tests.test_temporaries import RELATIVE, backdate, killed_write


@pytest.mark.slow
def test_the_ingest_sweeps_old_temporaries_at_start_up(ingest_settings, tmp_path: Path):
    root = Path(ingest_settings.data_root)
    left = killed_write(root, RELATIVE)
    fresh = killed_write(root, "_ledger/date=2025-12-16/hour=14/1-a.json")
    backdate(left, TEMPORARY_MAX_AGE_S + 60)
    done = subprocess.run(
        [Path(sys.executable).with_name("lake-platform"), "ingest", "--until-idle"],
        env={**os.environ, **settings_env(ingest_settings), "DAGSTER_HOME": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "removed 1 temporary file older than 1 h" in done.stderr
    assert not left.exists() and fresh.exists()
