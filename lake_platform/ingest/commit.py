"""Committing buffers: write their files atomically, record the ledger entry, then (the
caller) acks their messages. A crash between any two steps loses nothing: unacked messages
are redelivered, and the duplicate rows this creates in Bronze are removed by Silver.

All files of a commit are written at once (`LakeStore.write_parquet_files`), each a unit
of its own, so one failing write never costs the others:
- a write the store *rejects* (`StorageError.kind == "rejected"`: a name or an object it
  will never accept) turns that file's messages into quarantine records, and the commit goes on;
  a rejected quarantine file goes to the last-resort folder `_quarantine/_rejected/`;
- after a *transient* or *denied* failure no further file is tried: the files already written
  are kept in `Written` and committed (ledger entry, then acks), and only the files not
  written go back to the caller to be retried;
- a file that fails `STRIKES_TO_QUARANTINE` times in a row with the same error, and then
  cannot even be encoded in memory, is poison (a frame Polars cannot encode, a writer that
  panics on it): its messages are quarantined with the error, so it never holds the stream.
  A store that is down fails the same way every time too, but the frame then encodes: it
  is retried. A panic (`PanicException`, a `BaseException`) of the writer fails its own
  file only: the files of that write are then written one by one.

Every file's name is chosen once, when its rows are cut into files, and kept with the rows
left to retry: a retry after an ambiguous failure (an S3 PUT that timed out after the object
was stored, a folder sync failing after the rename) overwrites the same object instead of
adding a second copy that no ledger entry names. The ledger entry likewise: an entry whose
write failed is kept (`Written.entry`) and the retry writes it again under its name, before
anything else, so an entry that was stored after all is overwritten, never doubled.

A failure other than `StorageError` anywhere in a commit (a panic outside the writes, in
the ledger write, an unforeseen error) is a storage failure too: retried, never the end of
the worker.

Order of a commit: files, ledger entry, acks (the caller), then the report to Dagster
(`report_entry`, off the ingest's path and at least once).
"""

import datetime as dt
import hashlib
import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import polars as pl

from lake_platform.ingest.buffers import DAY_NS, Buffer, BufferKey, PlannedFile
from lake_platform.ingest.failpoints import failpoint, poisoned_body
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id, write_entry
from lake_platform.ingest.route import QUARANTINE_SCHEMA, REPLY, cached_schema_for_subject
from lake_platform.schemas import TableSchema
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.paths import part_file_name, partition_folder, quarantine_folder
from lake_platform.storage.store import PARQUET_OPTIONS

log = logging.getLogger(__name__)

REJECTED_QUARANTINE = "_quarantine/_rejected"
"""Quarantine records whose own folder the store rejects, by day."""

FILES_PER_WRITE = 1_024
"""Files handed to the store at once: the column selections of a commit of thousands of
partition values are made (and freed) a slice at a time."""
Reporter = Callable[[LedgerEntry], bool]
"""Records an entry's materializations in Dagster after the acks; True when done."""
STRIKES_TO_QUARANTINE = 3
"""Identical failures in a row after which a file's frame is tested for poison."""
UNEXPECTED = (Exception, pl.exceptions.PanicException)
"""What a write may raise besides `StorageError`: Polars panics are `BaseException`s."""


@dataclass
class Strikes:
    """Failures in a row of each planned file (by path) with the same error."""

    counts: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add(self, path: str, error: BaseException) -> int:
        """Count a failure of `path`; returns how many in a row failed like this one."""
        signature = _signature(error)
        previous, count = self.counts.get(path, ("", 0))
        count = count + 1 if previous == signature else 1
        self.counts[path] = (signature, count)
        return count

    def clear(self, path: str) -> None:
        self.counts.pop(path, None)


@dataclass
class Written:
    """Files written and not yet named by a ledger entry, with the acks they make due.

    It outlives a failed commit, so the retry records these files instead of writing their
    rows again under new names.
    """

    files: list[CommittedFile] = field(default_factory=list)
    quarantine: list[CommittedFile] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    entry: LedgerEntry | None = None
    """The ledger entry of these files whose write failed: the retry writes this one again."""

    def __bool__(self) -> bool:
        return bool(self.files or self.quarantine)

    def clear(self) -> list[str]:
        """Forget the files (now named by a stored entry); returns their acks."""
        replies = self.replies
        self.files, self.quarantine, self.replies, self.entry = [], [], [], None
        return replies


@dataclass(frozen=True)
class Commit:
    """What a commit achieved: the ledger entries it wrote (an earlier try's entry written
    again, then the entry of this try's files), the acks now due, the buffers left to retry
    and the failure that left them."""

    entries: tuple[LedgerEntry, ...]
    replies: list[str]
    unwritten: list[Buffer]
    error: StorageError | None

    @property
    def entry(self) -> LedgerEntry | None:
        """The last entry written, None when none was."""
        return self.entries[-1] if self.entries else None


def _seq_range(frame: pl.DataFrame, column: str) -> tuple[int | None, int | None]:
    seqs = frame.get_column(column)
    return seqs.min(), seqs.max()  # type: ignore[return-value]


def _day(day_ns: int) -> dt.date:
    return dt.datetime.fromtimestamp(day_ns / 1e9, tz=dt.UTC).date()


@dataclass(frozen=True)
class _Target:
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


def _target(buffer: Buffer, planned: PlannedFile) -> _Target:
    key = buffer.key
    if key.schema is None:
        folder = quarantine_folder(key.value, _day(key.period_start_ns))
        return _Target(buffer, planned, f"{folder}/{planned.name}")
    folder = partition_folder(key.schema.partition_column, key.value, key.period_start)
    return _Target(buffer, planned, f"bronze/{key.schema.table}/{folder}/{planned.name}")


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
    """One quarantine file, in the last-resort folder when the store rejects its own."""
    target = _target(Buffer(BufferKey(None, subject, day_ns), 0, 0.0, -1), PlannedFile(frame, name))
    try:
        size = store.write_parquet(target.body, target.path)
    except StorageError as error:
        if error.kind != "rejected":
            raise
        return _rejected_quarantine_file(store, target, error)
    return target.committed(target.path, size)


def _rejected_quarantine_file(
    store: LakeStore, target: _Target, error: StorageError
) -> CommittedFile:
    log.error(
        "the store rejected quarantine file %s (%s), writing it under %s",
        target.path,
        error,
        REJECTED_QUARANTINE,
    )
    key = target.buffer.key
    path = rejected_quarantine_path(key.value, _day(key.period_start_ns), target.planned.name)
    return target.committed(path, store.write_parquet(target.body, path))


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


def _leftover(buffer: Buffer, files: list[PlannedFile]) -> Buffer:
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


def _quarantine_rejected(
    store: LakeStore, schema: TableSchema, planned: PlannedFile, reason: str
) -> list[CommittedFile]:
    """Write the rows of a Bronze file that cannot be stored as quarantine records, one file
    per subject and day, all named after the planned file: a retry after a partial failure
    overwrites."""
    log.error("quarantining %d messages: %s", planned.frame.height, reason)
    records = rejected_records(schema, planned.frame, reason)
    days = records.with_columns(_day=pl.col("received_ns") // DAY_NS * DAY_NS)
    return [
        _write_quarantine_file(
            store, str(subject), int(day_ns), part.drop("_day").sort("stream_seq"), planned.name
        )
        for (subject, day_ns), part in days.partition_by(
            ["subject", "_day"], as_dict=True, maintain_order=True
        ).items()
    ]


def _after_rejection(store: LakeStore, target: _Target, error: StorageError) -> list[CommittedFile]:
    """Where a file the store rejected goes: Bronze rows become quarantine records, a
    quarantine file goes to the last-resort folder."""
    schema = target.buffer.key.schema
    if schema is None:
        return [_rejected_quarantine_file(store, target, error)]
    return _quarantine_rejected(
        store, schema, target.planned, f"storage rejected the file: {error}"
    )


def _signature(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _encode_failure(target: _Target) -> BaseException | None:
    """What encoding the file's frame in memory raises, without the store; None if it
    encodes (then the store, not the frame, is failing)."""
    try:
        target.body.write_parquet(io.BytesIO(), **PARQUET_OPTIONS)  # type: ignore[arg-type]
    except UNEXPECTED as error:
        return error
    return None


def _after_poison(store: LakeStore, target: _Target, error: BaseException) -> list[CommittedFile]:
    """Quarantine the messages of a file that can never be written, with the error: Bronze
    rows as quarantine records; a quarantine file's records without their payloads (the
    stream sequence still finds each message in JetStream while the stream keeps it)."""
    reason = (
        f"writing its file failed {STRIKES_TO_QUARANTINE} times alike and its rows cannot be "
        f"encoded: {_signature(error)}"
    )
    key = target.buffer.key
    if key.schema is not None:
        return _quarantine_rejected(store, key.schema, target.planned, reason)
    log.error("quarantine records kept without payloads: %s", reason)
    stripped = target.planned.frame.with_columns(
        pl.lit(b"", pl.Binary()).alias("payload"),
        (pl.col("error") + f" (payload not kept: {reason})").alias("error"),
    )
    name = target.planned.name
    return [_write_quarantine_file(store, key.value, key.period_start_ns, stripped, name)]


def _settle(
    store: LakeStore, target: _Target, result: int | BaseException, strikes: Strikes
) -> list[CommittedFile]:
    """The committed files of one write's outcome; raises `StorageError` to retry it."""
    if isinstance(result, int):
        strikes.clear(target.path)
        return [target.committed(target.path, result)]
    if isinstance(result, StorageError) and result.kind == "rejected":
        return _after_rejection(store, target, result)
    tried = not isinstance(result, StorageError) or result.__cause__ is not None
    repeated = tried and strikes.add(target.path, result) >= STRIKES_TO_QUARANTINE
    if repeated and _encode_failure(target) is not None:
        try:
            done = _after_poison(store, target, result)
        except StorageError:
            raise
        except UNEXPECTED as error:
            raise StorageError(f"cannot quarantine {target.path}: {_signature(error)}") from error
        strikes.clear(target.path)
        return done
    if isinstance(result, StorageError):
        raise result
    raise StorageError(f"cannot write {target.path}: {_signature(result)}") from result


def _settled(
    store: LakeStore, target: _Target, result: int | BaseException, strikes: Strikes
) -> list[CommittedFile]:
    """`_settle`, with an unforeseen failure (a panic) as a `StorageError` to retry."""
    try:
        return _settle(store, target, result, strikes)
    except StorageError:
        raise
    except UNEXPECTED as error:
        raise StorageError(f"cannot settle {target.path}: {_signature(error)}") from error


def _body_or_failure(target: _Target) -> pl.DataFrame | BaseException:
    try:
        return target.body
    except UNEXPECTED as error:
        return error


def _write_alone(store: LakeStore, body: pl.DataFrame, path: str) -> int | BaseException:
    try:
        return store.write_parquet_files([(body, path)])[0]
    except UNEXPECTED as error:
        return error


def _write_chunk(store: LakeStore, chunk: list[_Target]) -> list[int | BaseException]:
    """Each target's size or failure. When the store's write raises (a panic of one file's
    writer takes the whole call down), every file is written alone, so that the failure is
    its own file's only."""
    bodies = [_body_or_failure(target) for target in chunk]
    ready = [
        (body, target.path)
        for body, target in zip(bodies, chunk, strict=True)
        if isinstance(body, pl.DataFrame)
    ]
    outcomes: list[int | BaseException]
    try:
        outcomes = list(store.write_parquet_files(ready))
    except UNEXPECTED as error:
        log.error("a write of %d files failed (%s): writing each alone", len(ready), error)
        outcomes = [_write_alone(store, body, path) for body, path in ready]
    written = iter(outcomes)
    return [body if isinstance(body, BaseException) else next(written) for body in bodies]


def _write_buffers(
    store: LakeStore, buffers: list[Buffer], written: Written, strikes: Strikes
) -> tuple[list[Buffer], StorageError | None]:
    """Write every buffer's files into `written`, all at once; what is left to retry, and why.

    Every file is tried: a file the store rejects is quarantined (a quarantine file rejected
    even in the last-resort folder is left for the retry), a transient or denied failure
    leaves that file for the retry, and the others are written regardless.
    """
    now = dt.datetime.now(dt.UTC)
    targets = [_target(buffer, planned) for buffer in buffers for planned in _slices(buffer, now)]
    results: list[int | BaseException] = []
    for start in range(0, len(targets), FILES_PER_WRITE):
        written_now = _write_chunk(store, targets[start : start + FILES_PER_WRITE])
        results.extend(written_now)
        stopped = [r for r in written_now if isinstance(r, StorageError) and r.kind != "rejected"]
        if stopped:  # the store is failing: the rest waits for the retry, untried
            results.extend(stopped[:1] * (len(targets) - len(results)))
            break
    left: dict[int, list[PlannedFile]] = {}
    failure: StorageError | None = None
    rejected: StorageError | None = None
    for target, result in zip(targets, results, strict=True):
        try:
            done = _settled(store, target, result, strikes)
        except StorageError as error:
            if error.kind == "rejected":
                log.error("the store rejected a quarantine file, retrying later: %s", error)
                rejected = error
            else:
                failure = failure or error
            left.setdefault(id(target.buffer), []).append(target.planned)
            continue
        for file in done:
            (written.files if file.subject is None else written.quarantine).append(file)
        written.replies.extend(target.planned.frame.get_column(REPLY).to_list())
    unwritten = [_leftover(buffer, left[id(buffer)]) for buffer in buffers if id(buffer) in left]
    return unwritten, failure or rejected


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


def _write_ledger_entry(store: LakeStore, entry: LedgerEntry) -> None:
    """`write_entry`, with any other failure (a panic) as a transient `StorageError`."""
    try:
        write_entry(store, entry)
    except StorageError:
        raise
    except UNEXPECTED as error:
        raise StorageError(
            f"cannot write ledger entry {entry.entry_id}: {_signature(error)}"
        ) from error


def _untouched(buffers: list[Buffer]) -> list[Buffer]:
    """`buffers` as left to retry: their files cut and named, none written."""
    now = dt.datetime.now(dt.UTC)
    return [_leftover(buffer, _slices(buffer, now)) for buffer in buffers]


def commit(
    store: LakeStore,
    buffers: list[Buffer],
    *,
    written: Written,
    writer: str,
    unknown_field_messages: dict[str, int],
    strikes: Strikes | None = None,
) -> Commit:
    """Write the ledger entry an earlier try could not, then the buffers' files, then one
    ledger entry for everything in `written`.

    The caller then acks the returned replies and, after the acks, reports the entries to
    Dagster (`report_entry`).

    Never raises `StorageError` (nor a panic of a write or of the ledger write): a failure
    is returned with the buffers left unwritten, and `written` keeps the files (and the
    entry) of a ledger entry that could not be written, for the retry. When the entry is
    written, `written` is emptied and its acks are returned.
    `strikes` counts each file's failures across the caller's retries (without it, no file
    is ever found to be poison).
    """
    failpoint("before_write")
    earlier: tuple[LedgerEntry, ...] = ()
    earlier_replies: list[str] = []
    if written.entry is not None:
        try:
            _write_ledger_entry(store, written.entry)
        except StorageError as failure:
            return Commit((), [], _untouched(buffers), failure)
        earlier, earlier_replies = (written.entry,), written.clear()
    unwritten, error = _write_buffers(store, buffers, written, strikes or Strikes())
    failpoint("after_write")
    if not written:
        return Commit(earlier, earlier_replies, unwritten, error)
    committed_ns = time.time_ns()
    written.entry = LedgerEntry(
        entry_id=new_entry_id(committed_ns),
        committed_ns=committed_ns,
        writer=writer,
        reported=False,
        files=tuple(written.files),
        quarantine=tuple(written.quarantine),
        unknown_field_messages=unknown_field_messages,
    )
    try:
        _write_ledger_entry(store, written.entry)
    except StorageError as ledger_error:
        return Commit(earlier, earlier_replies, unwritten, error or ledger_error)
    failpoint("after_ledger")
    entry = written.entry
    return Commit((*earlier, entry), earlier_replies + written.clear(), unwritten, error)
