"""Writing a commit's files, all at once, each a unit of its own, and what was written.

The store takes `FILES_PER_WRITE` files per call (`LakeStore.write_parquet_files`), and one
failing file never costs the others: a file the store rejects is quarantined, and after a
*transient* or *denied* failure the files already written are kept (`Written`) while the
rest waits, untried, for the retry. A panic (`PanicException`, a `BaseException`) of the
writer takes the whole call down: the files of that call are then written one by one, so
that the failure is its own file's only. What each file's outcome comes to is decided in
`write_outcomes`.
"""

import datetime as dt
import logging
from dataclasses import dataclass, field

import polars as pl

from lake_platform.ingest.buffers import Buffer, PlannedFile
from lake_platform.ingest.file_targets import FileTarget, file_target, leftover, planned_files
from lake_platform.ingest.ledger import CommittedFile, LedgerEntry
from lake_platform.ingest.route import REPLY
from lake_platform.ingest.write_outcomes import UNEXPECTED, Strikes, settled
from lake_platform.storage import LakeStore, StorageError

log = logging.getLogger(__name__)

FILES_PER_WRITE = 1_024
"""Files handed to the store at once: the column selections of a commit of thousands of
partition values are made (and freed) a slice at a time."""


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


def _body_or_failure(target: FileTarget) -> pl.DataFrame | BaseException:
    try:
        return target.body
    except UNEXPECTED as error:
        return error


def _write_alone(store: LakeStore, body: pl.DataFrame, path: str) -> int | BaseException:
    try:
        return store.write_parquet_files([(body, path)])[0]
    except UNEXPECTED as error:
        return error


def _write_chunk(store: LakeStore, chunk: list[FileTarget]) -> list[int | BaseException]:
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


def write_buffers(
    store: LakeStore, buffers: list[Buffer], written: Written, strikes: Strikes
) -> tuple[list[Buffer], StorageError | None]:
    """Write every buffer's files into `written`, all at once; what is left to retry, and why.

    Every file is tried: a file the store rejects is quarantined (a quarantine file rejected
    even in the last-resort folder is left for the retry), a transient or denied failure
    leaves that file for the retry, and the others are written regardless.
    """
    now = dt.datetime.now(dt.UTC)
    targets = [
        file_target(buffer, planned) for buffer in buffers for planned in planned_files(buffer, now)
    ]
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
            done = settled(store, target, result, strikes)
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
    unwritten = [leftover(buffer, left[id(buffer)]) for buffer in buffers if id(buffer) in left]
    return unwritten, failure or rejected
