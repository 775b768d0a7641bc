"""Replaying the lake: any time range of it as one stream in event-time order, into a backtest
(`events`, `replay_hours`) or back onto NATS (`lake-platform replay`, the `replay_job`)."""

from lake_platform.replay.stream import (
    REPLAY_TABLES,
    ReplayError,
    ReplayHour,
    events,
    replay_hours,
)

__all__ = ["REPLAY_TABLES", "ReplayError", "ReplayHour", "events", "replay_hours"]
