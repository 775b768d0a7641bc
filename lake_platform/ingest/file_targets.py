"""The files of a commit: where each goes, what it holds, and its ledger record once written.

A taken buffer's rows are cut into planned files here (`planned_files`), and each new file
gets its name once: a retry after an ambiguous failure (an S3 PUT that timed out after the
object was stored, a folder sync failing after the rename) writes the same name again, so
it overwrites instead of adding a second copy that no ledger entry names. What a failed
commit leaves to retry is a buffer of those named files (`leftover`), each in memory of its
own.
"""

import datetime as dt
from dataclasses import dataclass

import polars as pl

from lake_platform.ingest.buffers import Buffer, PlannedFile
from lake_platform.ingest.failpoints import poisoned_body
from lake_platform.ingest.ledger import CommittedFile
from lake_platform.ingest.route import QUARANTINE_SCHEMA, cached_schema_for_subject
from lake_platform.storage.paths import part_file_name, partition_folder, quarantine_folder


def _seq_range(frame: pl.DataFrame, column: str) -> tuple[int | None, int | None]:
    seqs = frame.get_column(column)
    return seqs.min(), seqs.max()  # type: ignore[return-value]


def day_of(day_ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(day_ns / 1e9, tz=dt.UTC).date()


@dataclass(frozen=True)
class FileTarget:
    """One planned file of one buffer: what goes into it and where."""

    buffer: Buffer
    planned: PlannedFile
    path: str

    @property
    def body(self) -> pl.DataFrame:
        """The file's columns (a selection of existing columns: no copy)."""
        schema = self.buffer.key.schema
        if schema is None:
            return self.planned.frame[QUARANTINE_SCHEMA.names()]
        body = self.planned.frame[schema.bronze_file_schema.names()]
        return poisoned_body(self.buffer.key.value, body)

    def committed(self, path: str, size: int) -> CommittedFile:
        key, frame = self.buffer.key, self.planned.frame
        if key.schema is None:
            first, last = _seq_range(frame, "stream_seq")
            schema = cached_schema_for_subject(key.value)
            return CommittedFile(
                path=path,
                table=schema.table if schema else None,
                stream=frame.get_column("stream")[0],
                rows=frame.height,
                bytes=size,
                first_seq=first,
                last_seq=last,
                subject=key.value,
            )
        first, last = _seq_range(frame, "_stream_seq")
        return CommittedFile(
            path=path,
            table=key.schema.table,
            stream=key.schema.stream,
            rows=frame.height,
            bytes=size,
            first_seq=first,
            last_seq=last,
            partition_value=key.value,
            hour_start_ns=key.period_start_ns,
        )


def file_target(buffer: Buffer, planned: PlannedFile) -> FileTarget:
    key = buffer.key
    if key.schema is None:
        folder = quarantine_folder(key.value, day_of(key.period_start_ns))
        return FileTarget(buffer, planned, f"{folder}/{planned.name}")
    folder = partition_folder(key.schema.partition_column, key.value, key.period_start)
    return FileTarget(buffer, planned, f"bronze/{key.schema.table}/{folder}/{planned.name}")


def planned_files(buffer: Buffer, now: dt.datetime) -> list[PlannedFile]:
    """The buffer's files: those a failed commit planned, then its taken rows (already in
    event-time order) in Bronze files of at most `max_events` rows, or one quarantine file.
    Each new file gets its name here, once."""
    planned = list(buffer.planned)
    if buffer.taken is None:
        return planned
    if buffer.key.is_quarantine or buffer.taken.height <= buffer.max_events:
        frames = [buffer.taken]
    else:
        frames = list(buffer.taken.iter_slices(buffer.max_events))
    return planned + [PlannedFile(frame, part_file_name(now)) for frame in frames]


def leftover(buffer: Buffer, files: list[PlannedFile]) -> Buffer:
    """A buffer of the same key and age holding only the files not yet written, named."""
    rest = Buffer(
        buffer.key, buffer.max_events, buffer.max_age_s, buffer.id, opened_at=buffer.opened_at
    )
    for planned in files:
        rest.add_planned(PlannedFile(_own_copy(planned.frame), planned.name))
    return rest


def _own_copy(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` in memory of its own: a planned file's rows are a zero-copy slice of every row
    its commit took, which a file kept for the retry must not hold on to."""
    return pl.DataFrame(pl.from_arrow(frame.to_arrow())).cast(frame.schema)


def untouched(buffers: list[Buffer]) -> list[Buffer]:
    """`buffers` as left to retry: their files cut and named, none written."""
    now = dt.datetime.now(dt.UTC)
    return [leftover(buffer, planned_files(buffer, now)) for buffer in buffers]
