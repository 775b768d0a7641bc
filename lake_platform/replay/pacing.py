"""Pacing a replay at `speed` times real time.

Event `e` is due at `anchor_wall + (ts(e) - anchor_ts) / speed` on the
monotonic clock, the anchor being the first event: the schedule is absolute, so sleeps that
overrun never add up (drift-corrected). An event already due is sent at once; when the
replay falls behind its schedule by more than `MAX_LAG_S` (a slow target, an hour being
read), the schedule is re-anchored at that event instead of bursting to catch up, and the
re-anchoring is counted. `speed=None` publishes as fast as the target acks.
"""

from dataclasses import dataclass

from lake_platform.replay.stats import ReplayStats

MAX_LAG_S = 1.0
"""How far behind its schedule a paced replay may fall before it is re-anchored."""


@dataclass
class Pacer:
    """The schedule of a paced replay (see the module); `delay` is pure but for its state."""

    speed: float
    max_lag_s: float = MAX_LAG_S
    anchor_wall: float | None = None
    anchor_ns: int = 0

    def delay(self, ts_ns: int, now: float, stats: ReplayStats) -> float:
        """Seconds to wait before sending the event of time `ts_ns` at wall time `now`
        (0: send it now); records the lag in `stats`."""
        if self.anchor_wall is None:
            self.anchor_wall, self.anchor_ns = now, ts_ns
        behind = now - (self.anchor_wall + (ts_ns - self.anchor_ns) / 1e9 / self.speed)
        if behind > self.max_lag_s:
            self.anchor_wall, self.anchor_ns = now, ts_ns
            stats.reanchors += 1
        stats.lag_s = max(0.0, behind)
        stats.max_lag_s = max(stats.max_lag_s, stats.lag_s)
        return max(0.0, -behind)
