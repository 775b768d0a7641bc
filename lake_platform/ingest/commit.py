"""Committing buffers: write their files atomically, record the ledger entry, then (the
caller) acks their messages. A crash between any two steps loses nothing: unacked messages
are redelivered, and the duplicate rows this creates in Bronze are removed by Silver.
"""

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import msgspec
import polars as pl

from lake_platform.ingest.buffers import Buffer
from lake_platform.ingest.failpoints import failpoint
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry, new_entry_id, write_entry
from lake_platform.ingest.route import REPLY, cached_schema_for_subject
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import part_file_name, partition_folder, quarantine_folder

Reporter = Callable[[LedgerEntry], bool]
"""Records an entry's materializations in Dagster before the ledger write; True when done."""


@dataclass(frozen=True)
class Commit:
    entry: LedgerEntry
    replies: list[str]


def _seq_range(frame: pl.DataFrame, column: str) -> tuple[int | None, int | None]:
    seqs = frame.get_column(column)
    return seqs.min(), seqs.max()  # type: ignore[return-value]


def _write_bronze(store: LakeStore, buffer: Buffer, now: dt.datetime) -> list[CommittedFile]:
    """The buffer's rows, sorted by event time, in files of at most `max_events` rows."""
    schema = buffer.key.schema
    assert schema is not None
    rows = buffer.frame().sort(["ts_event_ns", "_stream_seq"]).select(schema.bronze_schema.names())
    folder = partition_folder(schema.partition_column, buffer.key.value, buffer.key.period_start)
    files = []
    for frame in rows.iter_slices(buffer.max_events):
        path = f"bronze/{schema.table}/{folder}/{part_file_name(now)}"
        size = store.write_parquet(frame, path)
        first, last = _seq_range(frame, "_stream_seq")
        files.append(
            CommittedFile(
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
        )
    return files


def _write_quarantine(store: LakeStore, buffer: Buffer, now: dt.datetime) -> CommittedFile:
    frame = buffer.frame().drop(REPLY).sort("stream_seq")
    path = f"{quarantine_folder(buffer.key.value, buffer.key.period_start.date())}/"
    path += part_file_name(now)
    size = store.write_parquet(frame, path)
    first, last = _seq_range(frame, "stream_seq")
    schema = cached_schema_for_subject(buffer.key.value)
    return CommittedFile(
        path=path,
        table=schema.table if schema else None,
        stream=frame.get_column("stream")[0],
        rows=frame.height,
        bytes=size,
        first_seq=first,
        last_seq=last,
        subject=buffer.key.value,
    )


def commit(
    store: LakeStore,
    buffers: list[Buffer],
    *,
    writer: str,
    unknown_field_messages: dict[str, int],
    reporter: Reporter | None = None,
) -> Commit:
    """Write every buffer's file, then the ledger entry; returns the entry and the acks due."""
    failpoint("before_write")
    now = dt.datetime.now(dt.UTC)
    files, quarantine = [], []
    for buffer in buffers:
        if buffer.key.is_quarantine:
            quarantine.append(_write_quarantine(store, buffer, now))
        else:
            files.extend(_write_bronze(store, buffer, now))
    failpoint("after_write")
    committed_ns = time.time_ns()
    entry = LedgerEntry(
        entry_id=new_entry_id(committed_ns),
        committed_ns=committed_ns,
        writer=writer,
        reported=False,
        files=tuple(files),
        quarantine=tuple(quarantine),
        unknown_field_messages=unknown_field_messages,
    )
    if reporter is not None and reporter(entry):
        entry = msgspec.structs.replace(entry, reported=True)
    write_entry(store, entry)
    failpoint("after_ledger")
    return Commit(entry, [reply for buffer in buffers for reply in buffer.replies()])
