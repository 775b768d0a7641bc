"""`lake-platform replay`: a time range of the lake back onto NATS, in event-time order.

The range is read hour by hour and published by `replay.request.replay_to_nats`. Progress:
a bar on a terminal (events, event time reached, rate, lag), one line per hour otherwise, and
a summary line at the end. Ctrl-C stops after the PubAcks in flight and prints the last event
replayed and the `--resume-after` that continues after it (exit 130).
"""

import argparse
import datetime as dt
import sys

from tqdm import tqdm

from lake_platform.replay.request import ReplayRequest, parse_speed, replay_to_nats
from lake_platform.replay.stats import ReplayStats
from lake_platform.settings import LakeSettings
from lake_platform.simulate.publisher import PublishFailedError

EXIT_INTERRUPTED = 130


class BarProgress:
    """A progress bar on a terminal: events, rate, the event time reached and the lag."""

    def __init__(self) -> None:
        self.bar = tqdm(unit="ev", desc="replay", file=sys.stderr)

    def advanced(self, stats: ReplayStats) -> None:
        reached = stats.last_event_time or "-"
        self.bar.set_postfix_str(f"at {reached} lag {stats.lag_s:.2f}s", refresh=False)
        self.bar.update(stats.events - self.bar.n)

    def hour_done(self, hour: dt.datetime, stats: ReplayStats) -> None:
        self.advanced(stats)

    def close(self) -> None:
        self.bar.close()


class LineProgress:
    """One line per replayed hour, for logs."""

    def advanced(self, stats: ReplayStats) -> None:
        """Nothing between hours: a log gets one line per stage."""

    def hour_done(self, hour: dt.datetime, stats: ReplayStats) -> None:
        print(f"replay: hour {hour:%Y-%m-%dT%H:%MZ} done, {stats.line()}", file=sys.stderr)

    def close(self) -> None:
        """Nothing to close."""


def split_list(raw: str | None) -> tuple[str, ...] | None:
    """`a,b` as ('a', 'b'); None when not given."""
    if raw is None:
        return None
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def request_of(args: argparse.Namespace) -> ReplayRequest:
    """The request of the command's options (lists comma-separated, `--speed` N or max)."""
    return ReplayRequest(
        start=args.start,
        end=args.end,
        tables=split_list(args.tables),
        symbols=split_list(args.symbols),
        speed=parse_speed(args.speed),
        subject_prefix=args.subject_prefix,
        as_recorded=args.as_recorded,
        source=args.source,
        as_of=args.as_of,
        nats_url=args.nats_url,
        resume_after=args.resume_after,
    )


def run_replay(request: ReplayRequest) -> int:
    """Replay the request's range; 0 when every event was acked, 130 when interrupted."""
    settings = LakeSettings.from_env()
    stats = ReplayStats()
    progress = BarProgress() if sys.stderr.isatty() else LineProgress()
    try:
        replay_to_nats(request, settings, stats, progress)
    except KeyboardInterrupt:
        progress.close()
        print(f"lake-platform: interrupted: {stats.stopped_at()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PublishFailedError as error:
        progress.close()
        raise PublishFailedError(f"{error}; {stats.stopped_at()}") from None
    progress.close()
    print(f"replayed {stats.line()}")
    return 0
