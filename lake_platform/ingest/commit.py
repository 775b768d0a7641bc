"""Committing buffers: write their files atomically, record the ledger entry, then (the
caller) acks their messages. A crash between any two steps loses nothing: unacked messages
are redelivered, and the duplicate rows this creates in Bronze are removed by Silver.

Each file is a unit of its own, so one failing write never costs the others:
- a write the store *rejects* (`StorageError.kind == "rejected"`: a name or an object it
  will never accept) turns that file's messages into quarantine records, and the commit goes on;
  a rejected quarantine file goes to the last-resort folder `_quarantine/_rejected/`;
- a *transient* or *denied* failure stops the commit there: the files already written are
  kept in `Written` and committed (ledger entry, then acks), and only the files not yet
  written go back to the caller to be retried.

Every file's name is chosen once, when its rows are cut into files, and kept with the rows
left to retry: a retry after an ambiguous failure (an S3 PUT that timed out after the object
was stored, a folder sync failing after the rename) overwrites the same object instead of
adding a second copy that no ledger entry names.

Order of a commit: files, ledger entry, acks (the caller), then the report to Dagster
(`report_entry`, off the ingest's path and at least once).
"""

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import polars as pl

from lake_platform.ingest.buffers import DAY_NS, Buffer, PlannedFile
from lake_platform.ingest.failpoints import failpoint
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id, write_entry
from lake_platform.ingest.route import QUARANTINE_SCHEMA, REPLY, cached_schema_for_subject
from lake_platform.schemas import TableSchema
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.paths import part_file_name, partition_folder, quarantine_folder

log = logging.getLogger(__name__)

REJECTED_QUARANTINE = "_quarantine/_rejected"
"""Quarantine records whose own folder the store rejects, by day."""

Reporter = Callable[[LedgerEntry], bool]
"""Records an entry's materializations in Dagster after the acks; True when done."""


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


def _write_bronze_file(store: LakeStore, buffer: Buffer, planned: PlannedFile) -> CommittedFile:
    schema = buffer.key.schema
    assert schema is not None
    folder = partition_folder(schema.partition_column, buffer.key.value, buffer.key.period_start)
    path = f"bronze/{schema.table}/{folder}/{planned.name}"
    frame = planned.frame
    size = store.write_parquet(frame.select(schema.bronze_file_schema.names()), path)
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


def rejected_quarantine_path(subject: str, day: dt.date, name: str) -> str:
    """`_quarantine/_rejected/date=…/{name}-{hash}`: the last-resort place of quarantine records
    whose own folder the store refuses; the records keep their subject in column `subject`.

    The hash of the subject keeps the names of two subjects' files of one commit apart.
    """
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    stem = name.removesuffix(".parquet")
    return f"{REJECTED_QUARANTINE}/date={day:%Y-%m-%d}/{stem}-{digest}.parquet"


def _write_quarantine_file(
    store: LakeStore, subject: str, day_ns: int, frame: pl.DataFrame, name: str
) -> CommittedFile:
    frame = frame.drop(REPLY).sort("stream_seq")
    day = dt.datetime.fromtimestamp(day_ns / 1e9, tz=dt.UTC).date()
    path = f"{quarantine_folder(subject, day)}/{name}"
    try:
        size = store.write_parquet(frame, path)
    except StorageError as error:
        if error.kind != "rejected":
            raise
        log.error(
            "the store rejected quarantine file %s (%s), writing it under %s",
            path,
            error,
            REJECTED_QUARANTINE,
        )
        path = rejected_quarantine_path(subject, day, name)
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


def _slices(buffer: Buffer, now: dt.datetime) -> list[PlannedFile]:
    """The buffer's files: those a failed commit planned, then its other rows, Bronze sorted
    by event time in files of at most `max_events` rows, a quarantine buffer in one file.
    Each new file gets its name here, once."""
    planned = list(buffer.planned)
    if not buffer.frames:
        return planned
    if buffer.key.is_quarantine:
        frames = [buffer.frame()]
    else:
        rows = buffer.frame().sort(["ts_event_ns", "_stream_seq"])
        frames = list(rows.iter_slices(buffer.max_events))
    return planned + [PlannedFile(frame, part_file_name(now)) for frame in frames]


def _leftover(buffer: Buffer, files: list[PlannedFile]) -> Buffer:
    """A buffer of the same key and age holding only the files not yet written, named."""
    rest = Buffer(buffer.key, buffer.max_events, buffer.max_age_s, opened_at=buffer.opened_at)
    for planned in files:
        rest.add_planned(planned)
    return rest


def _quarantine_rejected(
    store: LakeStore, schema: TableSchema, planned: PlannedFile, error: StorageError
) -> list[CommittedFile]:
    """Write a rejected Bronze file's rows as quarantine records, one file per subject and
    day, all named after the planned file: a retry after a partial failure overwrites."""
    log.error("quarantining %d messages the store rejected: %s", planned.frame.height, error)
    records = rejected_records(schema, planned.frame, f"storage rejected the file: {error}")
    days = records.with_columns(_day=pl.col("received_ns") // DAY_NS * DAY_NS)
    return [
        _write_quarantine_file(store, str(subject), int(day_ns), part.drop("_day"), planned.name)
        for (subject, day_ns), part in days.partition_by(
            ["subject", "_day"], as_dict=True, maintain_order=True
        ).items()
    ]


def _write_slice(store: LakeStore, buffer: Buffer, planned: PlannedFile, written: Written) -> None:
    """Write one file; a rejected Bronze file becomes quarantine records, written at once."""
    if buffer.key.is_quarantine:
        day_ns = buffer.key.period_start_ns
        written.quarantine.append(
            _write_quarantine_file(store, buffer.key.value, day_ns, planned.frame, planned.name)
        )
    else:
        try:
            written.files.append(_write_bronze_file(store, buffer, planned))
        except StorageError as error:
            if error.kind != "rejected":
                raise
            assert buffer.key.schema is not None
            written.quarantine.extend(
                _quarantine_rejected(store, buffer.key.schema, planned, error)
            )
    written.replies.extend(planned.frame.get_column(REPLY).to_list())


def _write_buffers(
    store: LakeStore, buffers: list[Buffer], written: Written
) -> tuple[list[Buffer], StorageError | None]:
    """Write every buffer's files into `written`; what is left to retry, and why.

    A file the store rejects even in the last-resort quarantine folder is left for the retry
    and the other files go on; a transient or denied failure stops the writing there.
    """
    now = dt.datetime.now(dt.UTC)
    unwritten: list[Buffer] = []
    rejected: StorageError | None = None
    for index, buffer in enumerate(buffers):
        files = _slices(buffer, now)
        left: list[PlannedFile] = []
        for position, planned in enumerate(files):
            try:
                _write_slice(store, buffer, planned, written)
            except StorageError as error:
                if error.kind == "rejected":
                    log.error("the store rejected a quarantine file, retrying later: %s", error)
                    left.append(planned)
                    rejected = error
                    continue
                rest = _leftover(buffer, [*left, *files[position:]])
                return [*unwritten, rest, *buffers[index + 1 :]], error
        if left:
            unwritten.append(_leftover(buffer, left))
    return unwritten, rejected


def report_entry(store: LakeStore, entry: LedgerEntry, reporter: Reporter) -> LedgerEntry:
    """Report a written entry to Dagster, then mark it reported; on failure the sensor will.

    Called after the entry's messages are acked, so a slow or locked Dagster instance never
    holds back the ingest. Reporting is at least once: a sensor tick that reads the entry
    between the report and the mark reports it again, and a duplicate runless
    materialization of the same partition is harmless.
    """
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
) -> Commit:
    """Write the buffers' files, then one ledger entry for everything in `written`.

    The caller then acks the returned replies and, after the acks, reports the entry to
    Dagster (`report_entry`).

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
    replies = written.replies
    written.files, written.quarantine, written.replies = [], [], []
    return Commit(entry, replies, unwritten, error)
