"""`benchmarks/replay.py` runs end to end at a tiny scale: the lake built and committed, the
library, hours, floor and parts children handing out every event, the replay and the lean
publisher each filling a fresh stream on a real nats-server with every event and the same
bytes (no timing is asserted)."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "replay.py"


@pytest.mark.slow
def test_replay_benchmark_runs_at_a_tiny_scale(tmp_path):
    command = [sys.executable, str(SCRIPT), "--scale", "0.002", "--hours", "2", "--repeat", "1"]
    done = subprocess.run(
        [*command, "--publish-events", "2000", "--lake", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every run handed out the lake's 18,166 events: yes" in done.stdout
    assert "every stream held the" in done.stdout
    assert "the same bytes: yes" in done.stdout
    for figure in (
        "library events/s",
        "peak RSS / largest hour Arrow size",
        "replay publish vs lean publisher",
    ):
        assert figure in done.stdout
