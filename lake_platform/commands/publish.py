"""`lake-platform publish`: a simulated session, or a JSON-lines replay, to NATS."""

import argparse
import asyncio
import time
from pathlib import Path

from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import SessionSpec, session
from lake_platform.simulate.publisher import publish, replay_file


def run_publish(args: argparse.Namespace) -> int:
    """Publish as fast as JetStream acks, or paced at `--rate` with `--live`."""
    settings = LakeSettings.from_env()
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        messages = replay_file(path)
        msg_id_prefix: str | None = None
    else:
        now = time.time_ns()
        spec = SessionSpec(
            minutes=args.minutes,
            rate=args.rate,
            symbols=tuple(args.symbols.split(",")),
            dup_rate=args.dup_rate,
            seed=args.seed,
            end_ns=now + int(args.minutes * 60 * 10**9) if args.live else now,
        )
        messages = session(spec)
        msg_id_prefix = f"sim-{spec.seed}-{spec.end_ns}"
    rate = args.rate if args.live else None
    stats = asyncio.run(publish(settings, messages, rate=rate, msg_id_prefix=msg_id_prefix))
    retried = f" ({stats.retries:,} retries, {stats.duplicates:,} already stored)"
    print(f"published {stats.total:,} messages{retried if stats.retries else ''}")
    return 0
