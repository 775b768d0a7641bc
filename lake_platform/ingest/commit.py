"""Committing buffers: write their files atomically, record the ledger entry, then (the
caller) acks their messages. A crash between any two steps loses nothing: unacked messages
are redelivered, and the duplicate rows this creates in Bronze are removed by Silver.

Each file is a unit of its own, so one failing write never costs the others:
- a write the store *rejects* (`StorageError.kind == "rejected"`: a name or an object it
  will never accept) turns that file's messages into quarantine records, and the commit goes on;
- a *transient* or *denied* failure stops the commit there: the files already written are
  kept in `Written` and committed (ledger entry, then acks), and only the rows not yet
  written go back to the caller to be retried. A retry never writes a row twice, so a
  failed commit leaves no file that no ledger entry names.
"""

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import polars as pl

from lake_platform.ingest.buffers import DAY_NS, Buffer
from lake_platform.ingest.failpoints import failpoint
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id, write_entry
from lake_platform.ingest.route import QUARANTINE_SCHEMA, REPLY, cached_schema_for_subject
from lake_platform.schemas import TableSchema
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.paths import part_file_name, partition_folder, quarantine_folder

log = logging.getLogger(__name__)

Reporter = Callable[[LedgerEntry], bool]
"""Records an entry's materializations in Dagster after the ledger write; True when done."""


@dataclass
class Written:
    """Files written and not yet named by a ledger entry, with the acks they make due.

    It outlives a failed commit, so the retry records these files instead of writing their
    rows again under new names.
    """

    files: list[CommittedFile] = field(default_factory=list)
    quarantine: list[CommittedFile] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.files or self.quarantine)


@dataclass(frozen=True)
class Commit:
    """What a commit achieved: its ledger entry (None when it wrote none), the acks now due,
    the buffers left to retry and the failure that left them."""

    entry: LedgerEntry | None
    replies: list[str]
    unwritten: list[Buffer]
    error: StorageError | None


def _seq_range(frame: pl.DataFrame, column: str) -> tuple[int | None, int | None]:
    seqs = frame.get_column(column)
    return seqs.min(), seqs.max()  # type: ignore[return-value]


def _write_bronze_file(
    store: LakeStore, buffer: Buffer, frame: pl.DataFrame, now: dt.datetime
) -> CommittedFile:
    schema = buffer.key.schema
    assert schema is not None
    folder = partition_folder(schema.partition_column, buffer.key.value, buffer.key.period_start)
    path = f"bronze/{schema.table}/{folder}/{part_file_name(now)}"
    size = store.write_parquet(frame.select(schema.bronze_schema.names()), path)
    first, last = _seq_range(frame, "_stream_seq")
    return CommittedFile(
        path=path,
        table=schema.table,
        stream=schema.stream,
        rows=frame.height,
        bytes=size,
        first_seq=first,
        last_seq=last,
        partition_value=buffer.key.value,
        hour_start_ns=buffer.key.period_start_ns,
    )


def _write_quarantine_file(
    store: LakeStore, subject: str, day_ns: int, frame: pl.DataFrame, now: dt.datetime
) -> CommittedFile:
    frame = frame.drop(REPLY).sort("stream_seq")
    day = dt.datetime.fromtimestamp(day_ns / 1e9, tz=dt.UTC).date()
    path = f"{quarantine_folder(subject, day)}/{part_file_name(now)}"
    size = store.write_parquet(frame, path)
    first, last = _seq_range(frame, "stream_seq")
    schema = cached_schema_for_subject(subject)
    return CommittedFile(
        path=path,
        table=schema.table if schema else None,
        stream=frame.get_column("stream")[0],
        rows=frame.height,
        bytes=size,
        first_seq=first,
        last_seq=last,
        subject=subject,
    )


def rejected_records(schema: TableSchema, rows: pl.DataFrame, reason: str) -> pl.DataFrame:
    """Quarantine records of Bronze rows the store refused to hold.

    The raw payload is gone by now: the record keeps the decoded message as JSON, and its
    stream sequence finds the original in JetStream while the stream retains it.
    """
    fields = [name for name in schema.stored_schema.names() if name != "event_id"]
    return rows.select(
        pl.col("_subject").alias("subject"),
        pl.lit(schema.stream).alias("stream"),
        pl.col("_stream_seq").alias("stream_seq"),
        pl.col("ts_recv_ns").alias("received_ns"),
        pl.lit(reason).alias("error"),
        pl.lit(json.dumps({})).alias("headers"),
        pl.struct(fields).struct.json_encode().cast(pl.Binary).alias("payload"),
        pl.col(REPLY),
    ).cast({**QUARANTINE_SCHEMA, REPLY: pl.String()})  # type: ignore[arg-type]


def _slices(buffer: Buffer) -> list[pl.DataFrame]:
    """The buffer's rows as its files will hold them: Bronze sorted by event time, in files
    of at most `max_events` rows; a quarantine buffer is one file."""
    if buffer.key.is_quarantine:
        return [buffer.frame()]
    rows = buffer.frame().sort(["ts_event_ns", "_stream_seq"])
    return list(rows.iter_slices(buffer.max_events))


def _leftover(buffer: Buffer, frames: list[pl.DataFrame]) -> Buffer:
    """A buffer of the same key and age holding only the rows not yet written."""
    rest = Buffer(buffer.key, buffer.max_events, buffer.max_age_s, opened_at=buffer.opened_at)
    for frame in frames:
        rest.add(frame)
    return rest


def _write_slice(
    store: LakeStore, buffer: Buffer, frame: pl.DataFrame, now: dt.datetime, written: Written
) -> None:
    """Write one file; a rejected Bronze file becomes quarantine records, written at once."""
    try:
        if buffer.key.is_quarantine:
            day_ns = buffer.key.period_start_ns
            written.quarantine.append(
                _write_quarantine_file(store, buffer.key.value, day_ns, frame, now)
            )
        else:
            written.files.append(_write_bronze_file(store, buffer, frame, now))
    except StorageError as error:
        if error.kind != "rejected" or buffer.key.schema is None:
            raise
        log.error("quarantining %d messages the store rejected: %s", frame.height, error)
        records = rejected_records(buffer.key.schema, frame, f"storage rejected the file: {error}")
        days = records.with_columns(_day=pl.col("received_ns") // DAY_NS * DAY_NS)
        for (subject, day_ns), part in days.partition_by(
            ["subject", "_day"], as_dict=True, maintain_order=True
        ).items():
            written.quarantine.append(
                _write_quarantine_file(store, str(subject), int(day_ns), part.drop("_day"), now)
            )
    written.replies.extend(frame.get_column(REPLY).to_list())


def _write_buffers(
    store: LakeStore, buffers: list[Buffer], written: Written
) -> tuple[list[Buffer], StorageError | None]:
    """Write every buffer's files into `written`; on a failure, what is left to retry."""
    now = dt.datetime.now(dt.UTC)
    for index, buffer in enumerate(buffers):
        slices = _slices(buffer)
        for position, frame in enumerate(slices):
            try:
                _write_slice(store, buffer, frame, now, written)
            except StorageError as error:
                rest = _leftover(buffer, slices[position:])
                return [rest, *buffers[index + 1 :]], error
    return [], None


def _report(store: LakeStore, entry: LedgerEntry, reporter: Reporter) -> LedgerEntry:
    """Report a written entry to Dagster, then mark it reported; on failure the sensor will."""
    try:
        if not reporter(entry):
            return entry
    except Exception as error:  # a locked or unreachable instance must not stop the ingest
        log.warning("cannot report entry %s to Dagster, the sensor will: %s", entry.entry_id, error)
        return entry
    reported = msgspec.structs.replace(entry, reported=True)
    try:
        write_entry(store, reported)
    except StorageError as error:
        log.warning("cannot mark entry %s reported: %s", entry.entry_id, error)
        return entry
    return reported


def commit(
    store: LakeStore,
    buffers: list[Buffer],
    *,
    written: Written,
    writer: str,
    unknown_field_messages: dict[str, int],
    reporter: Reporter | None = None,
) -> Commit:
    """Write the buffers' files, then one ledger entry for everything in `written`.

    Never raises `StorageError`: a failure is returned with the buffers left unwritten, and
    `written` keeps the files of a ledger entry that could not be written, for the retry.
    When the entry is written, `written` is emptied and its acks are returned.
    """
    failpoint("before_write")
    unwritten, error = _write_buffers(store, buffers, written)
    failpoint("after_write")
    if not written:
        return Commit(None, [], unwritten, error)
    committed_ns = time.time_ns()
    entry = LedgerEntry(
        entry_id=new_entry_id(committed_ns),
        committed_ns=committed_ns,
        writer=writer,
        reported=False,
        files=tuple(written.files),
        quarantine=tuple(written.quarantine),
        unknown_field_messages=unknown_field_messages,
    )
    try:
        write_entry(store, entry)
    except StorageError as ledger_error:
        return Commit(None, [], unwritten, error or ledger_error)
    failpoint("after_ledger")
    if reporter is not None:
        entry = _report(store, entry, reporter)
    replies = written.replies
    written.files, written.quarantine, written.replies = [], [], []
    return Commit(entry, replies, unwritten, error)
