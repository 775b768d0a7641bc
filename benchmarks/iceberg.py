"""Iceberg commit cost as history grows: `replace_hour` on a fresh table vs after a simulated year.

Three lakes (local disk, the default SQLite catalog), each with `silver.stocks_trades`:

* fresh: a new table;
* compacted: `--days` (365: 8,760 hours) of hourly commits before today, kept as maintenance
  keeps them: after each simulated day `compact_manifests` (today = the next day: one manifest
  per closed month, one per closed day of the current month) and snapshot expiry down to the
  newest `--keep-snapshots` (24; `LAKE_SNAPSHOT_RETENTION`'s 1 h with daily tags keeps fewer);
* uncompacted (contrast, `--no-contrast` skips it): the same year, one live manifest per hour.

Then the same `--today-hours` (12) hours of today are committed on all three with
`replace_hour` (real files), and the benchmark times `replace_hour` replacing an hour of today
with new files (`--values` files, written untimed beforehand), the tables taking turns,
`--repeat` times each (medians), each table maintained (untimed) after its turn as the hourly
maintenance would: the manifest rewrite (not on the uncompacted table) and expiry. Without
it every replace makes the next one of the same hour dearer (one more snapshot, and one more
deleted-files manifest that pyiceberg carries forward and reads for that hour). The
acceptance: the compacted table's replace costs <= 2x the fresh table's. A replace of an hour
of a closed day of this month and of a closed month is timed too (those rewrite the manifest
holding the hour), in turns with the fresh table's hour of today again.

What is simulated: the year's data files are not written. Their manifest entries are, each
with the statistics of one real file's footer (its `ts_event_ns` bounds moved to its hour);
a commit reads only metadata (manifest lists, manifests) and the new files' footers, so its
cost is the same as with the files present. The compacted year is built day by day, each
simulated day one pyiceberg commit of an append snapshot adding one manifest per hour (the
manifests 24 hourly commits leave live; one snapshot instead of 24, as a real hourly commit
costs ~0.1 s and pyiceberg deep-copies the table metadata for each update staged in a
transaction), then that night's maintenance, as above. The uncompacted year is one snapshot
listing one manifest per hour (day by day it costs O(n^2) manifest-list writes); it keeps
fewer snapshots than the compacted table, so its cost is, if anything, understated.

    uv run python benchmarks/iceberg.py [--days 365] [--values 4] [--repeat 7]
        [--keep-snapshots 24] [--today-hours 12] [--max-entries 2000] [--no-contrast]
"""

import argparse
import datetime as dt
import hashlib
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence

from pyiceberg.conversions import to_bytes
from pyiceberg.manifest import (
    DataFile,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    write_manifest,
)
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import (
    Operation,
    SnapshotSummaryCollector,
    Summary,
    update_snapshot_summaries,
)
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import EMPTY_DICT, Record
from pyiceberg.types import LongType

from lake_platform.settings import LakeSettings
from lake_platform.storage.paths import partition_folder
from lake_platform.tables.data_files import EPOCH, data_file
from lake_platform.tables.hours import replace_hour, snapshot_properties
from lake_platform.tables.manifests import MAX_ENTRIES, compact_manifests
from lake_platform.timestamps import HOUR_NS
from lake_platform_tests.tables_lake import TablesLake, trades_rows, write_value_hour, write_version

TODAY = dt.date(2024, 6, 16)
"""The measuring day: the year ends the day before, mid-month (closed days and months)."""
GOAL_VS_FRESH = 2.0
TIME_COLUMN = "ts_event_ns"


def symbols(count: int) -> tuple[str, ...]:
    return tuple(f"S{index:02d}" for index in range(count))


def at(day: dt.date, hour: int) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


class HistoryFiles:
    """Manifest entries of the year's hours: one file per value-hour, the statistics of one
    real file's footer, `ts_event_ns` bounds moved to the file's hour."""

    def __init__(self, lake: TablesLake, table: Table, values: Sequence[str]) -> None:
        hour = at(TODAY, 23)
        written = write_value_hour(lake.store, values[0], hour, [trades_rows(hour, 100, 1)])
        self._template = data_file(table, hour, written[0])
        self._time_id = table.schema().find_field(TIME_COLUMN).field_id
        self._location = table.location().rstrip("/")
        self._spec_id = table.spec().spec_id
        self._values = values

    def of(self, hour: dt.datetime) -> list[DataFile]:
        return [self._file(value, hour) for value in self._values]

    def _file(self, value: str, hour: dt.datetime) -> DataFile:
        template = self._template
        start = int(hour.timestamp()) * 1_000_000_000
        digest = hashlib.sha256(f"{value}/{hour.isoformat()}".encode()).hexdigest()[:16]
        folder = partition_folder("symbol", value, hour)
        return DataFile.from_args(
            content=template.content,
            file_path=f"{self._location}/{folder}/part-00000-{digest}.parquet",
            file_format=template.file_format,
            partition=Record(value, (hour.date() - EPOCH).days, hour.hour),
            record_count=template.record_count,
            file_size_in_bytes=template.file_size_in_bytes,
            column_sizes=template.column_sizes,
            value_counts=template.value_counts,
            null_value_counts=template.null_value_counts,
            nan_value_counts=template.nan_value_counts,
            lower_bounds={**template.lower_bounds, self._time_id: to_bytes(LongType(), start)},
            upper_bounds={
                **template.upper_bounds,
                self._time_id: to_bytes(LongType(), start + HOUR_NS - 1),
            },
            split_offsets=template.split_offsets,
            sort_order_id=None,
            spec_id=self._spec_id,
            equality_ids=None,
            key_metadata=None,
        )


def build_compacted(
    table: Table,
    files: HistoryFiles,
    days: int,
    keep: int,
    max_entries: int,
    progress: Callable[[str], None],
) -> None:
    """`days` simulated days before `TODAY`, each one snapshot adding one manifest per hour,
    then that night's maintenance: the manifest rewrite (today = the next day) and snapshot
    expiry down to the newest `keep`."""
    first = TODAY - dt.timedelta(days=days)
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        transaction = table.transaction()
        _HourlyManifests(transaction, [files.of(at(day, hour)) for hour in range(24)]).commit()
        transaction.commit_transaction()
        compact_manifests(table, day + dt.timedelta(days=1), max_entries)
        expire_all_but(table, keep)
        if offset % 60 == 59:
            live = len(table.current_snapshot().manifests(table.io))
            progress(f"  day {offset + 1}/{days}: {live:,} live manifests")


def build_uncompacted(table: Table, files: HistoryFiles, days: int) -> None:
    """The `days` before `TODAY` as one snapshot listing one manifest per hour."""
    first = TODAY - dt.timedelta(days=days)
    hours = [
        files.of(at(first + dt.timedelta(days=offset), hour))
        for offset in range(days)
        for hour in range(24)
    ]
    transaction = table.transaction()
    _HourlyManifests(transaction, hours).commit()
    transaction.commit_transaction()


def expire_all_but(table: Table, keep: int) -> None:
    """Expire every snapshot but the newest `keep`."""
    older = [snapshot.snapshot_id for snapshot in table.snapshots()[:-keep]]
    if older:
        table.maintenance.expire_snapshots().by_ids(older).commit()


class _HourlyManifests(_SnapshotProducer["_HourlyManifests"]):
    """An append snapshot adding one manifest per hour of a day (the manifests 24 hourly
    commits leave live) to the live manifests of its parent."""

    def __init__(self, transaction: Transaction, hours: Sequence[Sequence[DataFile]]) -> None:
        super().__init__(Operation.APPEND, transaction, transaction._table.io)
        self._hours = hours

    def _validate_concurrency(self) -> None:
        """The only writer: nothing to validate."""

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []

    def _existing_manifests(self) -> list[ManifestFile]:
        metadata = self._transaction.table_metadata  # a deep copy per access: read it once
        written = []
        for hour_files in self._hours:
            with write_manifest(
                format_version=metadata.format_version,
                spec=metadata.spec(),
                schema=metadata.schema(),
                output_file=self.new_manifest_output(),
                snapshot_id=self._snapshot_id,
                avro_compression=self._compression,
            ) as writer:
                for file in hour_files:
                    writer.add(
                        ManifestEntry.from_args(
                            status=ManifestEntryStatus.ADDED,
                            snapshot_id=self._snapshot_id,
                            data_file=file,
                        )
                    )
            written.append(writer.to_manifest_file())
        parent = self._parent_snapshot_id
        if parent is None:
            return written
        return written + metadata.snapshot_by_id(parent).manifests(self._io)

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        metadata = self._transaction.table_metadata
        collector = SnapshotSummaryCollector()
        for hour_files in self._hours:
            for file in hour_files:
                collector.add_file(file, metadata.schema(), metadata.spec())
        parent = self._parent_snapshot_id
        return update_snapshot_summaries(
            Summary(operation=self._operation, **collector.build(), **snapshot_properties),
            None if parent is None else metadata.snapshot_by_id(parent).summary,
        )


class Timer:
    """`replace_hour` timed on one lake's table; each call replaces the hour with new files.
    Between timed replaces the table gets its maintenance, untimed: the manifest rewrite
    (`compact`) and snapshot expiry, so the measures do not pile up snapshots and the
    deleted-files manifests pyiceberg carries forward."""

    def __init__(self, name: str, lake: TablesLake, values: Sequence[str], compact: bool) -> None:
        self.name, self.lake, self.table, self.values = name, lake, lake.trades(), values
        self.compact = compact
        self._version = 1

    def replace(self, hour: dt.datetime) -> float:
        self._version += 1
        files = write_version(
            self.lake.store,
            hour,
            self._version,
            values=self.values,
            files_per_value=1,
            rows_per_file=lambda version: 100,
        )
        started = time.perf_counter()
        commit = replace_hour(self.table, hour, files, snapshot_properties(hour, "bench", ""))
        seconds = time.perf_counter() - started
        if commit.snapshot_id is None:
            raise SystemExit(f"{self.name}: the replace of {hour} committed nothing")
        return seconds

    def maintain(self, keep: int, max_entries: int) -> None:
        if self.compact:
            compact_manifests(self.table, TODAY, max_entries)
        expire_all_but(self.table, keep)

    def state(self) -> str:
        table = self.table
        table.refresh()
        manifests = len(table.current_snapshot().manifests(table.io))
        return f"{manifests:,} live manifests, {len(table.snapshots())} snapshots"


def timed_in_turns(
    timers: Sequence[Timer], hours: Sequence[dt.datetime], args: argparse.Namespace
) -> dict[str, float]:
    """Median seconds of a replace of its hour (`hours`, in the order of `timers`) per timer,
    the timers taking turns, each maintained after its turn."""
    seconds: dict[str, list[float]] = {timer.name: [] for timer in timers}
    turns = list(zip(timers, hours, strict=True))
    for round_ in range(args.repeat):
        for timer, hour in turns[round_ % len(turns) :] + turns[: round_ % len(turns)]:
            seconds[timer.name].append(timer.replace(hour))
            timer.maintain(args.keep_snapshots, args.max_entries)
    return {name: statistics.median(values) for name, values in seconds.items()}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def build(lakes: dict[str, TablesLake], args: argparse.Namespace) -> list[Timer]:
    """The year's history in the compacted (and uncompacted) lake, then today's hours in
    every lake; a timer per lake."""
    values = symbols(args.values)
    for name in list(lakes)[1:]:
        started = time.perf_counter()
        table = lakes[name].trades()
        history = HistoryFiles(lakes[name], table, values)
        print(f"{name}: {args.days} days x 24 hours x {args.values} files ...", flush=True)
        if name == "compacted":
            build_compacted(table, history, args.days, args.keep_snapshots, args.max_entries, print)
        else:
            build_uncompacted(table, history, args.days)
        print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    timers = [Timer(name, lake, values, name != "uncompacted") for name, lake in lakes.items()]
    for timer in timers:
        for hour in range(args.today_hours):
            timer.replace(at(TODAY, hour))
        timer.maintain(args.keep_snapshots, args.max_entries)
        print(f"{timer.name:<12} {timer.state()}")
    return timers


def measure(timers: Sequence[Timer], args: argparse.Namespace) -> None:
    """Time and print the replaces: an hour of today on every table (the acceptance), then
    an hour of a closed day and of a closed month on the tables with a history, in turns
    with the fresh table's hour of today again (the load of a shared machine drifts)."""
    today = at(TODAY, args.today_hours - 1)
    recent = timed_in_turns(timers, [today] * len(timers), args)
    print()
    print(f"replace_hour of an hour of today ({args.values} files), median of {args.repeat}:")
    for name, seconds in recent.items():
        print(f"  {name:<12} {seconds:6.3f} s  ({seconds / recent['fresh']:5.2f}x fresh)")
    ratio = recent["compacted"] / recent["fresh"]
    print(
        f"after {args.days * 24:,} hourly commits with compaction vs fresh: {ratio:5.2f}x  "
        f"goal <= {GOAL_VS_FRESH:g}x: {verdict(ratio <= GOAL_VS_FRESH)}"
    )
    for label, hour in (
        ("a closed day of this month", at(TODAY.replace(day=1), 7)),
        ("a closed month", at(TODAY - dt.timedelta(days=60), 7)),
    ):
        if hour.date() < TODAY - dt.timedelta(days=args.days):
            continue
        closed = timed_in_turns(timers, [today] + [hour] * (len(timers) - 1), args)
        fresh = closed.pop("fresh")
        shown = ", ".join(
            f"{name} {seconds:.3f} s ({seconds / fresh:.2f}x)" for name, seconds in closed.items()
        )
        print(
            f"replace_hour of {label} ({hour:%Y-%m-%d %H}:00): {shown}; "
            f"fresh's hour of today in turn {fresh:.3f} s"
        )
    for timer in timers:
        print(f"after the replaces: {timer.name:<12} {timer.state()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="simulated days of history")
    parser.add_argument("--values", type=int, default=4, help="partition values (files) per hour")
    parser.add_argument("--repeat", type=int, default=7, help="replaces per table (medians)")
    parser.add_argument("--keep-snapshots", type=int, default=24, help="snapshots kept")
    parser.add_argument("--today-hours", type=int, default=12, help="hours committed today")
    parser.add_argument(
        "--max-entries", type=int, default=MAX_ENTRIES, help="entries per merged manifest"
    )
    parser.add_argument("--no-contrast", action="store_true", help="skip the uncompacted year")
    args = parser.parse_args()
    numbers = (args.days, args.values, args.repeat, args.keep_snapshots, args.max_entries)
    if min(numbers) <= 0 or not 0 < args.today_hours < 24:
        parser.error("every number is positive, --today-hours at most 23")
    names = ["fresh", "compacted"] + ([] if args.no_contrast else ["uncompacted"])
    with tempfile.TemporaryDirectory() as workdir:
        lakes = {name: TablesLake(LakeSettings(data_root=f"{workdir}/{name}")) for name in names}
        measure(build(lakes, args), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
