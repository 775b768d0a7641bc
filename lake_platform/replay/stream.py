"""The lake's events of a time range as one stream in event-time order, hour by hour.

Each chosen table's hour is read (`lake_platform.read`: Silver through the catalog, pinned to
one snapshot per table for the whole replay; `levels/signals`, which has no Silver, from
Bronze deduplicated by the Silver rule; with `source="bronze"` every table's Bronze as
ingested, duplicates included) and put in its own order: Silver order (`ts_event_ns`, then
`event_id`), or for Bronze `ts_event_ns`, then `_stream_seq`. The tables' hours are then
merged by a stable sort on (`ts_event_ns`, the table's place in `REPLAY_TABLES`): equal
times across tables come in that fixed table order, and within a table in its own order, so
the stream is the same on every run. Memory holds one hour of the chosen tables (never the
range); the merge itself adds two small integer columns per event.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import polars as pl

from lake_platform.query.read import Moment, read, to_ns
from lake_platform.schemas import SCHEMAS, TableSchema
from lake_platform.settings import LakeSettings
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform.tables.time_travel import snapshot_as_of
from lake_platform.timestamps import HOUR_NS
from lake_platform.transforms.silver import SILVER_ORDER, deduplicate

REPLAY_TABLES: tuple[str, ...] = tuple(schema.table for schema in SCHEMAS)
"""Every table that can be replayed, in the order that breaks ties in time across tables."""
SOURCES = ("silver", "bronze")
BRONZE_ORDER = ("ts_event_ns", "_stream_seq")
"""Bronze's order within a table: event time, then the order JetStream stored the messages."""
HIVE_COLUMNS = ("date", "hour")
"""Columns `read` adds that are no event field (the partition column is one: kept)."""


class ReplayError(ValueError):
    """A replay that cannot start: an unknown table or source, a bad range, an event to
    resume after that is not in the range."""


@dataclass(frozen=True)
class ReplayHour:
    """One hour of the stream: each table's rows in its own order (`frames`, by `tables`),
    and `order`, the table (its index in `tables`) of each event of the merged stream."""

    hour: dt.datetime
    tables: tuple[str, ...]
    frames: tuple[pl.DataFrame, ...]
    order: pl.Series

    @property
    def events(self) -> int:
        return self.order.len()

    def runs(self) -> Iterator[tuple[str, pl.DataFrame]]:
        """The merged stream as (table, frame) pairs, each frame a run of consecutive events
        of one table (slices of `frames`: no row is copied), but for the hour's last run, a
        copy: a consumer's loop variable still holds it while the next hour is read, and a
        slice would keep its whole table-hour in memory."""
        offsets = [0] * len(self.tables)
        runs = self.order.rle()
        tables, lengths = runs.struct.field("value").to_list(), runs.struct.field("len").to_list()
        last = len(tables) - 1
        for number, (index, length) in enumerate(zip(tables, lengths, strict=True)):
            start = offsets[index]
            offsets[index] = start + length
            run = self.frames[index].slice(start, length)
            yield self.tables[index], _copied(run) if number == last else run

    def after(self, events: int) -> "ReplayHour":
        """The hour without its first `events` events."""
        skipped = self.order.head(events)
        counts = [int((skipped == index).sum()) for index in range(len(self.tables))]
        frames = tuple(frame.slice(count) for frame, count in zip(self.frames, counts, strict=True))
        return ReplayHour(self.hour, self.tables, frames, self.order.slice(events))

    def position(self, event_id: str) -> int | None:
        """Where in the merged stream the event `event_id` is (None: not in this hour)."""
        for index, frame in enumerate(self.frames):
            found = frame.get_column("event_id").eq(event_id).arg_true()
            if found.len():
                nth = int(found[0]) + 1
                at = (self.order == index).cum_sum().eq(nth).arg_true()
                return int(at[0])
        return None


def chosen_tables(tables: Iterable[str] | None) -> tuple[TableSchema, ...]:
    """The registry entries of `tables` (`stocks/trades`, or its schema name
    `stocks.trades`), in `REPLAY_TABLES` order; every table when None."""
    if tables is None:
        return tuple(SCHEMAS)
    wanted = list(tables)
    known = {name for schema in SCHEMAS for name in (schema.table, schema.name)}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ReplayError(
            f"unknown table {', '.join(map(repr, unknown))}; known: {', '.join(REPLAY_TABLES)}"
        )
    if not wanted:
        raise ReplayError("no table chosen")
    return tuple(schema for schema in SCHEMAS if {schema.table, schema.name} & set(wanted))


def replay_hours(
    start: Moment,
    end: Moment,
    tables: Iterable[str] | None = None,
    symbols: str | Iterable[str] | None = None,
    source: str = "silver",
    as_of: str | None = None,
    settings: LakeSettings | None = None,
    resume_after: str | None = None,
) -> Iterator[ReplayHour]:
    """The stream of [start, end) (see the module), an hour at a time (hours without events
    are left out). `symbols` filters each table's partition column (`symbol`,
    `underlying`); `as_of` (a tag, snapshot id or time) replays the Silver tables as they
    were; `resume_after` starts after the event of that `event_id` (a `ReplayError` when
    the range does not hold it). The arguments are checked and the Silver snapshots pinned
    when it is called, before the first hour is read."""
    start_ns, end_ns = _range(start, end)
    if source not in SOURCES:
        raise ReplayError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    if source == "bronze" and as_of is not None:
        raise ReplayError("--as-of replays Silver as it was; Bronze has no versions")
    settings = settings or LakeSettings.from_env()
    schemas = chosen_tables(tables)
    pinned = _pinned_snapshots(open_lake_tables(settings), schemas, source, as_of)
    values = [symbols] if isinstance(symbols, str) else None if symbols is None else list(symbols)

    def table_hours(window: tuple[int, int]) -> dict[str, pl.DataFrame]:
        return {
            schema.table: _table_hour(schema, window, values, source, pinned, settings)
            for schema in schemas
        }

    return _hours(start_ns, end_ns, table_hours, resume_after)


def _hours(
    start_ns: int,
    end_ns: int,
    table_hours: Callable[[tuple[int, int]], dict[str, pl.DataFrame]],
    resume_after: str | None,
) -> Iterator[ReplayHour]:
    """The merged hours of [start_ns, end_ns), after `resume_after` when given."""
    waiting = resume_after
    for hour_ns in range(start_ns - start_ns % HOUR_NS, end_ns, HOUR_NS):
        window = (max(start_ns, hour_ns), min(end_ns, hour_ns + HOUR_NS))
        hour = merged_hour(dt.datetime.fromtimestamp(hour_ns / 1e9, dt.UTC), table_hours(window))
        if waiting is not None:
            position = hour.position(waiting)
            if position is None:
                del hour
                continue
            hour, waiting = hour.after(position + 1), None
        if hour.events:
            yield hour
        del hour  # released before the next hour is read: one hour in memory, not two
    if waiting is not None:
        raise ReplayError(f"event {waiting} is not in the replayed range")


def events(
    start: Moment,
    end: Moment,
    tables: Iterable[str] | None = None,
    symbols: str | Iterable[str] | None = None,
    source: str = "silver",
    as_of: str | None = None,
    settings: LakeSettings | None = None,
    resume_after: str | None = None,
) -> Iterator[tuple[str, pl.DataFrame]]:
    """The events of [start, end) in stream order (see the module), as (table, frame) pairs,
    each frame a run of consecutive events of one table: for backtests that never touch
    NATS. Arguments as `replay_hours`."""
    hours = replay_hours(start, end, tables, symbols, source, as_of, settings, resume_after)
    return _runs(hours)


def _runs(hours: Iterator[ReplayHour]) -> Iterator[tuple[str, pl.DataFrame]]:
    """The runs of each hour, holding no hour while the next one is read."""
    for hour in hours:
        runs = hour.runs()
        del hour
        yield from runs


def _copied(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` in buffers of its own (a slice shares its parent's)."""
    return frame.select(pl.all().gather(pl.int_range(frame.height)))


def merged_hour(hour: dt.datetime, frames: dict[str, pl.DataFrame]) -> ReplayHour:
    """The hour of the tables' `frames` (each in its own order; tables in `REPLAY_TABLES`
    order), merged: a stable sort on (`ts_event_ns`, table) keeps each table's own order."""
    present = [(table, frame) for table, frame in frames.items() if frame.height]
    keys = [
        frame.select(pl.col("ts_event_ns"), pl.lit(index, pl.UInt8).alias("table"))
        for index, (_, frame) in enumerate(present)
    ]
    order = (
        pl.concat(keys).sort("ts_event_ns", "table", maintain_order=True).get_column("table")
        if keys
        else pl.Series("table", [], pl.UInt8)
    )
    return ReplayHour(
        hour,
        tuple(table for table, _ in present),
        tuple(frame for _, frame in present),
        order,
    )


def _range(start: Moment, end: Moment) -> tuple[int, int]:
    try:
        start_ns, end_ns = to_ns(start), to_ns(end)
    except (TypeError, ValueError) as error:
        raise ReplayError(str(error)) from None
    if end_ns <= start_ns:
        raise ReplayError(f"the range is empty: end {end} is not after start {start}")
    return start_ns, end_ns


def _reads_silver(schema: TableSchema, source: str) -> bool:
    return source == "silver" and schema.silver


def _pinned_snapshots(
    tables: LakeTables, schemas: Sequence[TableSchema], source: str, as_of: str | None
) -> dict[str, int | None]:
    """The snapshot each Silver table is read at for the whole replay (None: no data)."""
    pinned: dict[str, int | None] = {}
    for schema in schemas:
        if not _reads_silver(schema, source):
            continue
        iceberg = tables.existing(f"silver/{schema.table}")
        snapshot = None
        if iceberg is not None and iceberg.current_snapshot() is not None:
            snapshot = (
                iceberg.current_snapshot() if as_of is None else snapshot_as_of(iceberg, as_of)
            )
        pinned[schema.table] = None if snapshot is None else snapshot.snapshot_id
    return pinned


def _table_hour(
    schema: TableSchema,
    window: tuple[int, int],
    values: list[str] | None,
    source: str,
    pinned: dict[str, int | None],
    settings: LakeSettings,
) -> pl.DataFrame:
    """The table's rows of `window` (within one hour) in its own order."""
    if _reads_silver(schema, source):
        snapshot = pinned[schema.table]
        if snapshot is None:
            return pl.DataFrame()
        rows = read(
            f"silver/{schema.table}", *window, values, as_of=str(snapshot), settings=settings
        ).collect()
        return rows.drop(HIVE_COLUMNS).sort(SILVER_ORDER)
    rows = read(f"bronze/{schema.table}", *window, values, settings=settings).collect()
    rows = rows.drop(HIVE_COLUMNS)
    if source == "silver":  # a table without Silver: deduplicated by the Silver rule
        return deduplicate(rows)
    return rows.sort(BRONZE_ORDER)
