"""Micro-batch buffers: one per (table, partition value, UTC hour), plus quarantine buffers.

A buffer is due when it holds `max_events` rows or its oldest row arrived `max_age_s` ago
(arrival time, so an idle partition still flushes on time). Late events simply open a buffer
for their own event-time hour.

Rows are not kept per buffer. Each routed batch stays one frame per schema (a *pending* frame)
whose column `_buffer` names each row's buffer; a buffer only counts its rows. Taking buffers
filters their rows out of the pending frames in one vectorized pass, sorts them by buffer,
event time and stream sequence, and hands each buffer its rows as a zero-copy slice. A
partition value therefore costs a few hundred bytes of bookkeeping while it waits, not a
DataFrame of its own: splitting one 20,000-row batch of 20,000 option underlyings into frames
took 1.5 s and ~200 MiB here, which made thousands of values per hour slow and large.

Open buffers are still capped (`BRONZE_MAX_OPEN_BUFFERS`): past the cap the oldest are due
too, which bounds the files of one commit and the bookkeeping, whatever the feed does.
`bytes` is the memory the waiting rows take: the service bounds it with
`BRONZE_MAX_BUFFER_BYTES` (rows alone do not bound memory: 1 MB payloads make 50,000 held
messages tens of GB).
"""

import datetime as dt
import heapq
import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field

import polars as pl

from lake_platform.ingest.route import REPLY, RoutedMessages
from lake_platform.schemas import TableSchema
from lake_platform.settings import LakeSettings
from lake_platform.timestamps import DAY_NS, HOUR_NS

SIGNALS_TABLE = "levels/signals"
BUFFER_ID = "_buffer"
"""Column of the pending frames: the id of the buffer each row waits in."""
PERIOD = "_period"


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
    """A buffer's bookkeeping, and its rows once taken.

    While open, its rows wait in the pending frames of `Buffers` (column `_buffer` == `id`).
    `taken` holds them once the buffer is taken (sorted by event time, then stream sequence;
    quarantine records by stream sequence), with their ack subjects in column `_reply`.
    `planned` holds files a failed commit had cut and named, to be written as they are.
    """

    key: BufferKey
    max_events: int
    max_age_s: float
    id: int
    opened_at: float = field(default_factory=time.monotonic)
    rows: int = 0
    taken: pl.DataFrame | None = None
    planned: list[PlannedFile] = field(default_factory=list)

    def add_planned(self, planned: PlannedFile) -> None:
        self.planned.append(planned)
        self.rows += planned.frame.height

    @property
    def bytes(self) -> int:
        """Estimated memory of the rows taken and of the files left to retry."""
        frames = [planned.frame for planned in self.planned]
        if self.taken is not None:
            frames.append(self.taken)
        return sum(frame.estimated_size() for frame in frames)

    def due(self, now: float) -> bool:
        return self.rows >= self.max_events or now - self.opened_at >= self.max_age_s

    def replies(self) -> list[str]:
        frames = [planned.frame for planned in self.planned]
        if self.taken is not None:
            frames.append(self.taken)
        return [reply for frame in frames for reply in frame.get_column(REPLY).to_list()]


@dataclass(frozen=True)
class _Pending:
    """Rows of one routed batch (one schema) still waiting, and the buffers they wait in."""

    rows: pl.DataFrame
    buffer_ids: set[int]


class Buffers:
    """All open buffers of one ingest process, and the rows waiting in them."""

    def __init__(self, settings: LakeSettings) -> None:
        self._settings = settings
        self._open: dict[BufferKey, Buffer] = {}
        self._pending: defaultdict[TableSchema | None, list[_Pending]] = defaultdict(list)
        self._ids = itertools.count()
        self._rows = 0

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def bytes(self) -> int:
        """Estimated memory of the rows waiting: pending frames and files left to retry."""
        pending = sum(
            part.rows.estimated_size() for parts in self._pending.values() for part in parts
        )
        planned = sum(
            planned.frame.estimated_size()
            for buffer in self._open.values()
            for planned in buffer.planned
        )
        return pending + planned

    def __len__(self) -> int:
        return len(self._open)

    def open(self) -> list[Buffer]:
        """The buffers open now."""
        return list(self._open.values())

    def replies(self) -> list[str]:
        """Ack subjects of every row held in open buffers."""
        replies = [
            reply
            for pending in self._pending.values()
            for part in pending
            for reply in part.rows.get_column(REPLY).to_list()
        ]
        for buffer in self._open.values():
            replies.extend(buffer.replies())
        return replies

    def _limits(self, key: BufferKey) -> tuple[int, float]:
        if key.schema is not None and key.schema.table == SIGNALS_TABLE:
            return self._settings.gold_max_events, self._settings.gold_max_age_s
        return self._settings.bronze_max_events, self._settings.bronze_max_age_s

    def _buffer(self, key: BufferKey) -> Buffer:
        buffer = self._open.get(key)
        if buffer is None:
            max_events, max_age_s = self._limits(key)
            buffer = self._open[key] = Buffer(key, max_events, max_age_s, next(self._ids))
        return buffer

    def _hold(self, schema: TableSchema | None, rows: pl.DataFrame, value_column: str) -> None:
        """Count `rows` (with column `_period`) into their buffers and keep them pending."""
        groups = rows.group_by([value_column, PERIOD], maintain_order=True).len()
        ids = []
        for value, period, count in groups.iter_rows():
            buffer = self._buffer(BufferKey(schema, str(value), int(period)))
            buffer.rows += count
            ids.append(buffer.id)
        self._rows += rows.height
        keyed = groups.select(value_column, PERIOD, pl.Series(BUFFER_ID, ids, pl.Int64))
        rows = rows.join(
            keyed, on=[value_column, PERIOD], how="left", nulls_equal=True, maintain_order="left"
        )
        self._pending[schema].append(_Pending(rows.drop(PERIOD), set(ids)))

    def add(self, routed: RoutedMessages) -> None:
        """Count routed rows into their buffers by partition value and hour."""
        for schema, rows in routed.rows:
            hour = pl.col("ts_event_ns") // HOUR_NS * HOUR_NS
            self._hold(schema, rows.with_columns(hour.alias(PERIOD)), schema.partition_column)
        if routed.quarantine.height:
            day = pl.col("received_ns").fill_null(time.time_ns()) // DAY_NS * DAY_NS
            self._hold(None, routed.quarantine.with_columns(day.alias(PERIOD)), "subject")

    @property
    def full(self) -> bool:
        """More buffers open than the cap allows: pulling waits until `take_due` takes the
        oldest (so at most one pulled batch per stream opens buffers past the cap)."""
        return len(self._open) > self._settings.bronze_max_open_buffers

    def take_due(self, now: float | None = None) -> list[Buffer]:
        """Remove and return the buffers that are due, and the oldest ones past the cap."""
        now = time.monotonic() if now is None else now
        due = [buffer for buffer in self._open.values() if buffer.due(now)]
        for buffer in due:
            del self._open[buffer.key]
        excess = len(self._open) - self._settings.bronze_max_open_buffers
        if excess > 0:
            oldest = heapq.nsmallest(excess, self._open.values(), key=lambda b: b.opened_at)
            for buffer in oldest:
                del self._open[buffer.key]
            due.extend(oldest)
        return self._take(due)

    def take_all(self) -> list[Buffer]:
        """Remove and return every buffer (shutdown, end of a sensor tick)."""
        taken, self._open = list(self._open.values()), {}
        return self._take(taken)

    def _take(self, buffers: list[Buffer]) -> list[Buffer]:
        """Move the rows of `buffers` (already closed) out of the pending frames into them."""
        by_schema: defaultdict[TableSchema | None, list[Buffer]] = defaultdict(list)
        for buffer in buffers:
            by_schema[buffer.key.schema].append(buffer)
            self._rows -= buffer.rows
        for schema, group in by_schema.items():
            rows = self._take_rows(schema, {buffer.id for buffer in group})
            if rows is None:
                continue
            body, by_id = rows.drop(BUFFER_ID), {buffer.id: buffer for buffer in group}
            runs = rows.get_column(BUFFER_ID).rle()
            offsets = runs.struct.field("len").cum_sum() - runs.struct.field("len")
            for buffer_id, length, offset in zip(
                runs.struct.field("value"), runs.struct.field("len"), offsets, strict=True
            ):
                by_id[buffer_id].taken = body.slice(offset, length)
        return buffers

    def _take_rows(self, schema: TableSchema | None, ids: set[int]) -> pl.DataFrame | None:
        """The pending rows of buffers `ids`, sorted by buffer, event time, stream sequence;
        the pending frames keep only the other rows (frames holding none are not touched)."""
        taken, kept = [], []
        for pending in self._pending.get(schema, []):
            mine = pending.buffer_ids & ids
            if not mine:
                kept.append(pending)
                continue
            rows_mine = pending.rows.get_column(BUFFER_ID).is_in(pl.Series(list(mine)).implode())
            taken.append(pending.rows.filter(rows_mine))
            if pending.buffer_ids - mine:
                kept.append(_Pending(pending.rows.filter(~rows_mine), pending.buffer_ids - mine))
        self._pending[schema] = kept
        if not taken:
            return None
        order = ["stream_seq"] if schema is None else ["ts_event_ns", "_stream_seq"]
        return pl.concat(taken).sort([BUFFER_ID, *order])

    def put_back(self, buffers: list[Buffer]) -> None:
        """Return buffers left with files a failed commit planned (their rows are in those
        files, none pending); each keeps its age and merges with the open buffer of its key."""
        for buffer in buffers:
            self._rows += buffer.rows
            current = self._open.get(buffer.key)
            if current is None:
                self._open[buffer.key] = buffer
                continue
            current.planned[:0] = buffer.planned
            current.rows += buffer.rows
            current.opened_at = min(current.opened_at, buffer.opened_at)
