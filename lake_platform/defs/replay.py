"""`replay_job`: `lake-platform replay` launched from the UI, with a run record.

The op's config is the command's options; its log has a line per replayed hour and, when
the run stops early, the last event replayed and the `resume_after` that continues after it.
The run's output metadata holds the counts, the last event and the pacing's lag.
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from lake_platform.defs.resources import LakeResource
from lake_platform.replay.request import ReplayRequest, parse_speed, replay_to_nats
from lake_platform.replay.stats import ReplayStats

REPLAY_JOB = "replay_job"


class ReplayConfig(dg.Config):
    """The options of `lake-platform replay` (docs/contract.md §6)."""

    start: str = Field(description="UTC time, e.g. 2025-12-16T14:00:00Z")
    end: str = Field(description="UTC time (excluded)")
    tables: list[str] | None = Field(
        default=None, description="e.g. [stocks/trades, stocks/quotes] (default: all)"
    )
    symbols: list[str] | None = Field(
        default=None, description="values of the partition column (default: all)"
    )
    speed: str = Field(
        default="max",
        description="1 = real time by event-time deltas, N = N times faster, max = as fast as "
        "the target acks",
    )
    subject_prefix: str = Field(
        default="replay",
        description="subjects are {prefix}.{subject}.{value}; empty: the live subjects",
    )
    as_recorded: bool = Field(default=False, description="keep each event's source")
    source: str = Field(default="silver", description="silver or bronze (the command's --from)")
    as_of: str | None = Field(default=None, description="a tag, snapshot id or time (Silver)")
    nats_url: str | None = Field(default=None, description="the target (default: NATS_URL)")
    resume_after: str | None = Field(default=None, description="continue after this event_id")

    def request(self) -> ReplayRequest:
        return ReplayRequest(
            start=self.start,
            end=self.end,
            tables=None if self.tables is None else tuple(self.tables),
            symbols=None if self.symbols is None else tuple(self.symbols),
            speed=parse_speed(self.speed),
            subject_prefix=self.subject_prefix,
            as_recorded=self.as_recorded,
            source=self.source,
            as_of=self.as_of,
            nats_url=self.nats_url,
            resume_after=self.resume_after,
        )


class LoggedProgress:
    """A line in the run's log per replayed hour."""

    def __init__(self, log: dg.DagsterLogManager) -> None:
        self.log = log

    def advanced(self, stats: ReplayStats) -> None:
        """Nothing between hours: the log gets one line per hour."""

    def hour_done(self, hour: dt.datetime, stats: ReplayStats) -> None:
        self.log.info(f"hour {hour:%Y-%m-%dT%H:%MZ} replayed; so far {stats.line()}")


@dg.op(
    description="Publishes a time range of the lake back to NATS JetStream in event-time order "
    "(lake-platform replay).",
)
def replay_events(
    context: dg.OpExecutionContext, config: ReplayConfig, lake: LakeResource
) -> dg.Output[None]:
    stats = ReplayStats()
    try:
        replay_to_nats(config.request(), lake.settings(), stats, LoggedProgress(context.log))
    except BaseException:
        context.log.warning(f"replay stopped: {stats.stopped_at()}")
        raise
    context.log.info(f"replayed {stats.line()}")
    metadata = {
        name: dg.MetadataValue.json(value) if isinstance(value, dict) else value
        for name, value in stats.metadata().items()
    }
    return dg.Output(None, metadata=metadata)


@dg.job(
    name=REPLAY_JOB,
    description="Replays a time range of the lake onto NATS JetStream (lake-platform replay): "
    "one stream in event-time order, Nats-Msg-Id = event_id, at a chosen speed.",
)
def replay_job() -> None:
    replay_events()
