"""What to replay and how (`ReplayRequest`), and replaying it onto NATS (`replay_to_nats`)."""

import asyncio
import dataclasses
import itertools
from dataclasses import dataclass

from lake_platform.replay.publish import ReplayProgress, publish_replay
from lake_platform.replay.stats import ReplayStats
from lake_platform.replay.stream import ReplayError, replay_hours
from lake_platform.settings import LakeSettings

MAX_SPEED = "max"


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay and how: the options of `lake-platform replay` and of `replay_job`."""

    start: str
    end: str
    tables: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    speed: float | None = None
    """Times real time; None: as fast as the target acks."""
    subject_prefix: str = "replay"
    as_recorded: bool = False
    source: str = "silver"
    as_of: str | None = None
    nats_url: str | None = None
    resume_after: str | None = None

    def settings(self, settings: LakeSettings) -> LakeSettings:
        """`settings` with `nats_url` (comma-separated servers) in force when given."""
        if not self.nats_url:
            return settings
        servers = tuple(url.strip() for url in self.nats_url.split(",") if url.strip())
        if not servers:
            raise ReplayError(f"no NATS server in {self.nats_url!r}")
        return dataclasses.replace(settings, nats_servers=servers)


def parse_speed(raw: str) -> float | None:
    """`max` (None) or a positive finite number of times real time."""
    if raw.strip().lower() == MAX_SPEED:
        return None
    try:
        speed = float(raw)
    except ValueError:
        speed = float("nan")
    if not 0 < speed < float("inf"):
        raise ReplayError(f"the speed must be a positive number or max, not {raw!r}")
    return speed


def replay_to_nats(
    request: ReplayRequest,
    settings: LakeSettings,
    stats: ReplayStats,
    progress: ReplayProgress | None = None,
) -> ReplayStats:
    """Read the request's range and publish it (`asyncio.run`; `stats` filled as it goes, so
    an interrupted replay still says where it stopped). The range is checked, and its first
    hour read, before NATS is asked: a `ReplayError` when it holds no event."""
    settings = request.settings(settings)
    hours = replay_hours(
        request.start,
        request.end,
        request.tables,
        request.symbols,
        request.source,
        request.as_of,
        settings,
        request.resume_after,
    )
    first = next(hours, None)
    if first is None:
        after = f" after event {request.resume_after}" if request.resume_after else ""
        raise ReplayError(f"no event to replay in [{request.start}, {request.end}){after}")
    return asyncio.run(
        publish_replay(
            settings,
            itertools.chain([first], hours),
            speed=request.speed,
            prefix=request.subject_prefix,
            as_recorded=request.as_recorded,
            progress=progress,
            stats=stats,
        )
    )
