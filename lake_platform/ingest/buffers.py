"""Micro-batch buffers: one per (table, partition value, UTC hour), plus quarantine buffers.

A buffer is due when it holds `max_events` rows or its oldest row arrived `max_age_s` ago
(arrival time, so an idle partition still flushes on time). Late events simply open a buffer
for their own event-time hour.

Open buffers are capped (`BRONZE_MAX_OPEN_BUFFERS`): past the cap the oldest are due too.
Each buffer costs memory of its own (its small frames, whatever its rows), so thousands of
partition values inside one hour (an options feed with thousands of underlyings) would
otherwise grow memory with the number of values instead of the number of rows held.
"""

import datetime as dt
import heapq
import time
from dataclasses import dataclass, field

import polars as pl

from lake_platform.ingest.route import REPLY, RoutedMessages
from lake_platform.schemas import TableSchema
from lake_platform.settings import LakeSettings

HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS
SIGNALS_TABLE = "levels/signals"


@dataclass(frozen=True)
class BufferKey:
    """What a buffer's file will hold: a Bronze partition hour or a quarantine day."""

    schema: TableSchema | None
    value: str
    period_start_ns: int

    @property
    def is_quarantine(self) -> bool:
        return self.schema is None

    @property
    def period_start(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.period_start_ns / 1e9, tz=dt.UTC)


@dataclass(frozen=True)
class PlannedFile:
    """A file's rows and its file name, chosen once: a retry after an ambiguous failure (the
    object may be stored already) writes the same name again, so it overwrites, never adds."""

    frame: pl.DataFrame
    name: str


@dataclass
class Buffer:
    """Rows waiting to be written, with their ack subjects in column `_reply`.

    `planned` holds files a failed commit had cut and named, to be written as they are;
    `frames` holds rows no file has been planned for yet.
    """

    key: BufferKey
    max_events: int
    max_age_s: float
    opened_at: float = field(default_factory=time.monotonic)
    frames: list[pl.DataFrame] = field(default_factory=list)
    rows: int = 0
    planned: list[PlannedFile] = field(default_factory=list)

    def add(self, frame: pl.DataFrame) -> None:
        self.frames.append(frame)
        self.rows += frame.height

    def add_planned(self, planned: PlannedFile) -> None:
        self.planned.append(planned)
        self.rows += planned.frame.height

    def due(self, now: float) -> bool:
        return self.rows >= self.max_events or now - self.opened_at >= self.max_age_s

    def frame(self) -> pl.DataFrame:
        return pl.concat(self.frames, rechunk=True)

    def replies(self) -> list[str]:
        frames = [*(planned.frame for planned in self.planned), *self.frames]
        return [reply for frame in frames for reply in frame.get_column(REPLY).to_list()]


class Buffers:
    """All open buffers of one ingest process."""

    def __init__(self, settings: LakeSettings) -> None:
        self._settings = settings
        self._open: dict[BufferKey, Buffer] = {}

    @property
    def rows(self) -> int:
        return sum(buffer.rows for buffer in self._open.values())

    def __len__(self) -> int:
        return len(self._open)

    def open(self) -> list[Buffer]:
        """The buffers open now."""
        return list(self._open.values())

    def _limits(self, key: BufferKey) -> tuple[int, float]:
        if key.schema is not None and key.schema.table == SIGNALS_TABLE:
            return self._settings.gold_max_events, self._settings.gold_max_age_s
        return self._settings.bronze_max_events, self._settings.bronze_max_age_s

    def _add(self, key: BufferKey, frame: pl.DataFrame) -> None:
        buffer = self._open.get(key)
        if buffer is None:
            max_events, max_age_s = self._limits(key)
            buffer = self._open[key] = Buffer(key, max_events, max_age_s)
        buffer.add(frame)

    def add(self, routed: RoutedMessages) -> None:
        """Spread routed rows over their buffers by partition value and hour."""
        for schema, rows in routed.rows:
            parts = rows.with_columns(_period=pl.col("ts_event_ns") // HOUR_NS * HOUR_NS)
            for (value, period), part in parts.partition_by(
                [schema.partition_column, "_period"], as_dict=True, maintain_order=True
            ).items():
                self._add(BufferKey(schema, str(value), int(period)), part.drop("_period"))
        if routed.quarantine.height:
            days = routed.quarantine.with_columns(
                _period=pl.col("received_ns").fill_null(time.time_ns()) // DAY_NS * DAY_NS
            )
            for (subject, period), part in days.partition_by(
                ["subject", "_period"], as_dict=True, maintain_order=True
            ).items():
                self._add(BufferKey(None, str(subject), int(period)), part.drop("_period"))

    @property
    def full(self) -> bool:
        """More buffers open than the cap allows: pulling waits until `take_due` takes the
        oldest (so at most one pulled batch per stream opens buffers past the cap)."""
        return len(self._open) > self._settings.bronze_max_open_buffers

    def take_due(self, now: float | None = None) -> list[Buffer]:
        """Remove and return the buffers that are due, and the oldest ones past the cap."""
        now = time.monotonic() if now is None else now
        due = [key for key, buffer in self._open.items() if buffer.due(now)]
        taken = [self._open.pop(key) for key in due]
        return taken + self._take_oldest()

    def _take_oldest(self) -> list[Buffer]:
        excess = len(self._open) - self._settings.bronze_max_open_buffers
        if excess <= 0:
            return []
        oldest = heapq.nsmallest(excess, self._open.values(), key=lambda b: b.opened_at)
        return [self._open.pop(buffer.key) for buffer in oldest]

    def take_all(self) -> list[Buffer]:
        """Remove and return every buffer (shutdown, end of a sensor tick)."""
        taken, self._open = list(self._open.values()), {}
        return taken

    def put_back(self, buffers: list[Buffer]) -> None:
        """Return buffers whose rows were not written; they keep their age and merge with
        new rows (a buffer is put back only with rows no file holds)."""
        for buffer in buffers:
            current = self._open.get(buffer.key)
            if current is not None:
                buffer.frames.extend(current.frames)
                buffer.planned.extend(current.planned)
                buffer.rows += current.rows
            self._open[buffer.key] = buffer
