"""What one file's write comes to: written, quarantined, or left to retry.

- Written: its ledger record.
- Rejected by the store (`StorageError.kind == "rejected"`: a name or an object it will never
  accept): its messages become quarantine records (`quarantine_writes`).
- Failed `STRIKES_TO_QUARANTINE` times in a row with the same error, and then its frame
  cannot even be encoded in memory: poison (a frame Polars cannot encode, a writer that
  panics on it). Its messages are quarantined with the error, so it never holds the stream.
  A store that is down fails the same way every time too, but the frame then encodes: that
  file is retried.
- Anything else: a `StorageError` the caller retries. A failure other than `StorageError`
  (a Polars panic is a `BaseException`) is one too, never the end of the worker.
"""

import io
import logging
from dataclasses import dataclass, field

import polars as pl

from lake_platform.ingest.file_targets import FileTarget
from lake_platform.ingest.ledger import CommittedFile
from lake_platform.ingest.quarantine_writes import (
    after_rejection,
    quarantine_bronze_file,
    write_quarantine_file,
)
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.store import PARQUET_OPTIONS

log = logging.getLogger(__name__)

STRIKES_TO_QUARANTINE = 3
"""Identical failures in a row after which a file's frame is tested for poison."""
UNEXPECTED = (Exception, pl.exceptions.PanicException)
"""What a write may raise besides `StorageError`: Polars panics are `BaseException`s."""


def signature(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


@dataclass
class Strikes:
    """Failures in a row of each planned file (by path) with the same error."""

    counts: dict[str, tuple[str, int]] = field(default_factory=dict)

    def add(self, path: str, error: BaseException) -> int:
        """Count a failure of `path`; returns how many in a row failed like this one."""
        error_signature = signature(error)
        previous, count = self.counts.get(path, ("", 0))
        count = count + 1 if previous == error_signature else 1
        self.counts[path] = (error_signature, count)
        return count

    def clear(self, path: str) -> None:
        self.counts.pop(path, None)


def _encode_failure(target: FileTarget) -> BaseException | None:
    """What encoding the file's frame in memory raises, without the store; None if it
    encodes (then the store, not the frame, is failing)."""
    try:
        target.body.write_parquet(io.BytesIO(), **PARQUET_OPTIONS)  # type: ignore[arg-type]
    except UNEXPECTED as error:
        return error
    return None


def _after_poison(
    store: LakeStore, target: FileTarget, error: BaseException
) -> list[CommittedFile]:
    """Quarantine the messages of a file that can never be written, with the error: Bronze
    rows as quarantine records; a quarantine file's records without their payloads (the
    stream sequence still finds each message in JetStream while the stream keeps it)."""
    reason = (
        f"writing its file failed {STRIKES_TO_QUARANTINE} times alike and its rows cannot be "
        f"encoded: {signature(error)}"
    )
    key = target.buffer.key
    if key.schema is not None:
        return quarantine_bronze_file(store, key.schema, target.planned, reason)
    log.error("quarantine records kept without payloads: %s", reason)
    stripped = target.planned.frame.with_columns(
        pl.lit(b"", pl.Binary()).alias("payload"),
        (pl.col("error") + f" (payload not kept: {reason})").alias("error"),
    )
    name = target.planned.name
    return [write_quarantine_file(store, key.value, key.period_start_ns, stripped, name)]


def _settle(
    store: LakeStore, target: FileTarget, result: int | BaseException, strikes: Strikes
) -> list[CommittedFile]:
    """The committed files of one write's outcome; raises `StorageError` to retry it."""
    if isinstance(result, int):
        strikes.clear(target.path)
        return [target.committed(target.path, result)]
    if isinstance(result, StorageError) and result.kind == "rejected":
        return after_rejection(store, target, result)
    tried = not isinstance(result, StorageError) or result.__cause__ is not None
    repeated = tried and strikes.add(target.path, result) >= STRIKES_TO_QUARANTINE
    if repeated and _encode_failure(target) is not None:
        try:
            done = _after_poison(store, target, result)
        except StorageError:
            raise
        except UNEXPECTED as error:
            raise StorageError(f"cannot quarantine {target.path}: {signature(error)}") from error
        strikes.clear(target.path)
        return done
    if isinstance(result, StorageError):
        raise result
    raise StorageError(f"cannot write {target.path}: {signature(result)}") from result


def settled(
    store: LakeStore, target: FileTarget, result: int | BaseException, strikes: Strikes
) -> list[CommittedFile]:
    """`_settle`, with an unforeseen failure (a panic) as a `StorageError` to retry."""
    try:
        return _settle(store, target, result, strikes)
    except StorageError:
        raise
    except UNEXPECTED as error:
        raise StorageError(f"cannot settle {target.path}: {signature(error)}") from error
