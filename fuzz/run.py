"""Run every fuzz target for a bounded number of executions or seconds; print the figures.

    uv run python -m fuzz.run --runs 20000          # or --seconds 600 for the long run

Each target fuzzes a fresh copy of its committed seed corpus (libFuzzer adds what it finds to
the corpus folder, which must not be the committed one) in its own process; a crash stops
that target and leaves the input under the work folder (`crash-…`) to replay with
`python fuzz/<target>.py <crash file>`. Exits non-zero when any target crashed.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
TARGETS = {"decode": "decode_target.py", "paths": "paths_target.py", "wire": "wire_target.py"}
"""Target name: script; the seed corpus of each is `corpus/<name>`."""
DONE = re.compile(r"^Done (\d+) (?:runs )?in", re.MULTILINE)
STATUS = re.compile(r"^#(\d+)\s", re.MULTILINE)


@dataclass(frozen=True)
class FuzzResult:
    target: str
    executions: int
    crashes: list[Path]
    output: str


def executions(output: str) -> int:
    """Executions the fuzzer reports: its final `Done N` line, else its last status line."""
    done = DONE.findall(output)
    if done:
        return int(done[-1])
    return max((int(n) for n in STATUS.findall(output)), default=0)


def run_target(
    name: str, work: Path, *, runs: int | None = None, seconds: int | None = None, seed: int = 1
) -> FuzzResult:
    """Fuzz one target in a subprocess, on a copy of its corpus under `work`."""
    corpus = work / f"corpus-{name}"
    shutil.copytree(FUZZ_DIR / "corpus" / name, corpus, dirs_exist_ok=True)
    artifacts = work / f"artifacts-{name}"
    artifacts.mkdir(exist_ok=True)
    limit = [f"-atheris_runs={runs}"] if runs is not None else [f"-max_total_time={seconds}"]
    command = [
        sys.executable,
        str(FUZZ_DIR / TARGETS[name]),
        str(corpus),
        f"-seed={seed}",
        f"-artifact_prefix={artifacts}/",
        "-max_len=4096",
        *limit,
    ]
    done = subprocess.run(command, capture_output=True, text=True, cwd=work, check=False)
    output = done.stdout + done.stderr
    crashes = sorted(artifacts.iterdir())
    if done.returncode != 0 and not crashes:
        crashes = [Path(f"exit status {done.returncode}")]
    return FuzzResult(name, executions(output), crashes, output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument("--runs", type=int, help="executions per target")
    bound.add_argument("--seconds", type=int, help="wall-clock seconds per target")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--work", type=Path, help="keep corpora and crashes here")
    args = parser.parse_args()
    runs = args.runs if args.runs or args.seconds else 20_000
    work = args.work or Path(tempfile.mkdtemp(prefix="lake-fuzz-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"seed {args.seed}, work folder {work}")
    print(f"{'target':<8} {'executions':>11} {'crashes':>8}")
    crashed = 0
    for name in TARGETS:
        result = run_target(name, work, runs=runs, seconds=args.seconds, seed=args.seed)
        crashed += len(result.crashes)
        print(f"{name:<8} {result.executions:>11,} {len(result.crashes):>8}")
        for crash in result.crashes:
            print(f"  crash: {crash}")
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
