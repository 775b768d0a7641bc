"""What a replay published, and how far it reached (`ReplayStats`)."""

import datetime as dt
import time
from dataclasses import dataclass, field

from lake_platform.simulate.publisher import PublishStats


@dataclass
class ReplayStats:
    """What a replay published: counts per table (`published`, with retries and PubAcks
    marked duplicate), the last event acked in stream order, and the pacing's lag."""

    published: PublishStats = field(default_factory=PublishStats)
    hours: int = 0
    last_event_id: str | None = None
    last_event_ns: int | None = None
    lag_s: float = 0.0
    """How far behind its schedule the last paced event was sent."""
    max_lag_s: float = 0.0
    reanchors: int = 0
    """Times the schedule was re-anchored after falling more than `pacing.MAX_LAG_S` behind."""
    interrupted: bool = False
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def events(self) -> int:
        return self.published.total

    @property
    def elapsed_s(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Events acked per second of wall time."""
        return self.events / max(self.elapsed_s, 1e-9)

    @property
    def last_event_time(self) -> str | None:
        """The last event's time, ISO-8601 UTC to the nanosecond."""
        return None if self.last_event_ns is None else iso_ns(self.last_event_ns)

    def line(self) -> str:
        """Counts, rate, the event time reached and the lag, on one line."""
        by_table = ", ".join(f"{table} {n:,}" for table, n in self.published.by_schema.items())
        reached = self.last_event_time or "-"
        return (
            f"{self.events:,} events ({by_table or 'none'}) in {self.elapsed_s:.1f} s "
            f"({self.rate:,.0f}/s), event time reached {reached}, lag {self.lag_s:.2f} s "
            f"(max {self.max_lag_s:.2f} s, {self.reanchors} re-anchored), "
            f"{self.published.duplicates:,} already stored, {self.published.retries:,} retries"
        )

    def stopped_at(self) -> str:
        """The last event replayed and how to continue after it."""
        if self.last_event_id is None or self.last_event_ns is None:
            return "no event was replayed"
        return (
            f"{self.events:,} events replayed, the last {self.last_event_id} at "
            f"{iso_ns(self.last_event_ns)}; continue with --resume-after {self.last_event_id}"
        )

    def metadata(self) -> dict[str, object]:
        """The stats as plain values (a Dagster run's output metadata)."""
        return {
            "events": self.events,
            "by_table": dict(self.published.by_schema),
            "hours": self.hours,
            "last_event_id": self.last_event_id or "",
            "last_event_time": self.last_event_time or "",
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.rate, 1),
            "max_lag_s": round(self.max_lag_s, 3),
            "reanchors": self.reanchors,
            "already_stored": self.published.duplicates,
            "retries": self.published.retries,
        }


def iso_ns(ns: int) -> str:
    """Nanoseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`."""
    seconds, rest = divmod(ns, 10**9)
    moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{rest:09d}Z"
