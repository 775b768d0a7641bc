"""Committing buffers: write their files atomically, record the ledger entry, then (the
caller) acks their messages. A crash between any two steps loses nothing: unacked messages
are redelivered, and the duplicate rows this creates in Bronze are removed by Silver.

The steps live in modules of their own:
- `file_targets`: a buffer's rows cut into files, each named once, so a retry after an
  ambiguous failure overwrites the same object instead of adding a copy no entry names;
- `file_writes`: all files of a commit written at once, one failing file never costing the
  others; the files written are kept in `Written` across a failed commit, and only the
  files not written go back to the caller to be retried;
- `write_outcomes`: what a failed write comes to: quarantined when the store rejects it or
  when the file is poison (the same failure `STRIKES_TO_QUARANTINE` times and a frame that
  cannot be encoded), else retried;
- `quarantine_writes`: quarantine records, and the last-resort folder `_quarantine/_rejected/`;
- `reports`: the report to Dagster, after the acks.

The ledger entry is never doubled: an entry whose write failed is kept (`Written.entry`) and
the retry writes it again under its name, before anything else, so an entry that was stored
after all is overwritten.

A failure other than `StorageError` anywhere in a commit (a panic outside the writes, in
the ledger write, an unforeseen error) is a storage failure too: retried, never the end of
the worker.

Order of a commit: files, ledger entry, acks (the caller), then the report to Dagster
(`reports.report_entry`, off the ingest's path and at least once).
"""

import time
from dataclasses import dataclass

from lake_platform.ingest.buffers import Buffer
from lake_platform.ingest.failpoints import failpoint
from lake_platform.ingest.file_targets import untouched
from lake_platform.ingest.file_writes import Written, write_buffers
from lake_platform.ingest.ledger import LedgerEntry, new_entry_id, write_entry
from lake_platform.ingest.write_outcomes import UNEXPECTED, Strikes, signature
from lake_platform.storage import LakeStore, StorageError


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


def _write_ledger_entry(store: LakeStore, entry: LedgerEntry) -> None:
    """`write_entry`, with any other failure (a panic) as a transient `StorageError`."""
    try:
        write_entry(store, entry)
    except StorageError:
        raise
    except UNEXPECTED as error:
        raise StorageError(
            f"cannot write ledger entry {entry.entry_id}: {signature(error)}"
        ) from error


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
            return Commit((), [], untouched(buffers), failure)
        earlier, earlier_replies = (written.entry,), written.clear()
    unwritten, error = write_buffers(store, buffers, written, strikes or Strikes())
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
