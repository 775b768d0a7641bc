"""Quarantine files of a commit, and where they go when the store refuses them.

Bronze rows the store will not hold (their file was rejected, or is poison) are written as
quarantine records instead (`quarantine_bronze_file`): the raw payload is gone by then, so
a record keeps the decoded message as JSON, and its stream sequence finds the original in
JetStream while the stream retains it. A quarantine file the store rejects under its own
folder (a subject it will never accept in a name) goes to the last-resort folder
`_quarantine/_rejected/`, where its records keep their subject in a column.
"""

import datetime as dt
import hashlib
import json
import logging

import polars as pl

from lake_platform.ingest.buffers import DAY_NS, Buffer, BufferKey, PlannedFile
from lake_platform.ingest.file_targets import FileTarget, day_of, file_target
from lake_platform.ingest.ledger import CommittedFile
from lake_platform.ingest.route import QUARANTINE_SCHEMA, REPLY
from lake_platform.schemas import TableSchema
from lake_platform.storage import LakeStore, StorageError

log = logging.getLogger(__name__)

REJECTED_QUARANTINE = "_quarantine/_rejected"
"""Quarantine records whose own folder the store rejects, by day."""


def rejected_quarantine_path(subject: str, day: dt.date, name: str) -> str:
    """`_quarantine/_rejected/date=…/{name}-{hash}`: the last-resort place of quarantine records
    whose own folder the store refuses; the records keep their subject in column `subject`.

    The hash of the subject keeps the names of two subjects' files of one commit apart.
    """
    digest = hashlib.sha256(subject.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    stem = name.removesuffix(".parquet")
    return f"{REJECTED_QUARANTINE}/date={day:%Y-%m-%d}/{stem}-{digest}.parquet"


def write_quarantine_file(
    store: LakeStore, subject: str, day_ns: int, frame: pl.DataFrame, name: str
) -> CommittedFile:
    """One quarantine file, in the last-resort folder when the store rejects its own."""
    target = file_target(
        Buffer(BufferKey(None, subject, day_ns), 0, 0.0, -1), PlannedFile(frame, name)
    )
    try:
        size = store.write_parquet(target.body, target.path)
    except StorageError as error:
        if error.kind != "rejected":
            raise
        return _rejected_quarantine_file(store, target, error)
    return target.committed(target.path, size)


def _rejected_quarantine_file(
    store: LakeStore, target: FileTarget, error: StorageError
) -> CommittedFile:
    log.error(
        "the store rejected quarantine file %s (%s), writing it under %s",
        target.path,
        error,
        REJECTED_QUARANTINE,
    )
    key = target.buffer.key
    path = rejected_quarantine_path(key.value, day_of(key.period_start_ns), target.planned.name)
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


def quarantine_bronze_file(
    store: LakeStore, schema: TableSchema, planned: PlannedFile, reason: str
) -> list[CommittedFile]:
    """Write the rows of a Bronze file that cannot be stored as quarantine records, one file
    per subject and day, all named after the planned file: a retry after a partial failure
    overwrites."""
    log.error("quarantining %d messages: %s", planned.frame.height, reason)
    records = rejected_records(schema, planned.frame, reason)
    days = records.with_columns(_day=pl.col("received_ns") // DAY_NS * DAY_NS)
    return [
        write_quarantine_file(
            store, str(subject), int(day_ns), part.drop("_day").sort("stream_seq"), planned.name
        )
        for (subject, day_ns), part in days.partition_by(
            ["subject", "_day"], as_dict=True, maintain_order=True
        ).items()
    ]


def after_rejection(
    store: LakeStore, target: FileTarget, error: StorageError
) -> list[CommittedFile]:
    """Where a file the store rejected goes: Bronze rows become quarantine records, a
    quarantine file goes to the last-resort folder."""
    schema = target.buffer.key.schema
    if schema is None:
        return [_rejected_quarantine_file(store, target, error)]
    return quarantine_bronze_file(
        store, schema, target.planned, f"storage rejected the file: {error}"
    )
