"""Random kill -9 loop, long variant: a simulated session of N events over all seven schemas,
`lake-platform ingest` SIGKILLed K times at random moments and restarted, then checked:
Bronze holds every good event (event ids and stream sequences), the quarantine every bad one,
and Silver and Gold rebuilt from it equal those of a clean single-run ingest, byte for byte.

    uv run python benchmarks/chaos_ingest.py [--events 100000] [--kills 20] [--seed S]

Without `--seed` a new one is drawn and printed; pass it to repeat a run. Exit 1 on any loss.
"""

import argparse
import secrets
import sys
import tempfile
import time
from pathlib import Path

from lake_platform_tests.kill_loop import ChaosPlan, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    if args.events <= 0 or args.kills <= 0:
        parser.error("--events and --kills must be positive")
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    print(f"seed {seed}", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chaos-ingest-") as tmp:
        plan = ChaosPlan(events=args.events, kills=args.kills, seed=seed)
        result = run_chaos(Path(tmp), plan, progress=lambda line: print(line, flush=True))
    print(*result.lines(), sep="\n")
    survived = 0 if result.problems else result.kills
    print(
        f"faults injected {result.kills} (SIGKILL), survived {survived}, "
        f"events lost {result.lost}, in {time.monotonic() - started:.0f} s"
    )
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
