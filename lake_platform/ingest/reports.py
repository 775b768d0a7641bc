"""Reporting committed ledger entries to Dagster, after their acks and off the ingest's path.

A commit's order is files, ledger entry, acks, then the report: a slow or locked Dagster
instance never holds back the acks or the commits. The service queues each acked entry
(`ReportQueue`) for a task of its own, which reports them one at a time in a worker thread
(`report_entry`). Reporting is at least once: what a stopping service cannot report in
`REPORT_DRAIN_S`, and what a report failed on, the Bronze sensor reports from the ledger.
"""

import asyncio
import logging
from collections.abc import Callable

import msgspec

from lake_platform.ingest.ledger import LedgerEntry, write_entry
from lake_platform.storage import LakeStore, StorageError

log = logging.getLogger(__name__)

Reporter = Callable[[LedgerEntry], bool]
"""Records an entry's materializations in Dagster after the acks; True when done."""
REPORT_DRAIN_S = 10.0
"""How long a stopping service waits for pending reports; the sensor reports what is left."""


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


class ReportQueue:
    """Acked ledger entries waiting to be reported to Dagster."""

    def __init__(self) -> None:
        self._entries: asyncio.Queue[LedgerEntry] = asyncio.Queue()

    def put(self, entry: LedgerEntry) -> None:
        self._entries.put_nowait(entry)

    async def report(self, store: LakeStore, reporter: Reporter) -> None:
        """Report acked entries to Dagster one at a time, in a worker thread."""
        while True:
            entry = await self._entries.get()
            try:
                await asyncio.to_thread(report_entry, store, entry, reporter)
            finally:
                self._entries.task_done()

    async def drain(self, reporting: asyncio.Task[None] | None) -> None:
        """Wait a little for queued reports, then stop; the sensor reports what is left."""
        if reporting is None:
            return
        try:
            await asyncio.wait_for(self._entries.join(), REPORT_DRAIN_S)
        except TimeoutError:
            log.warning(
                "Dagster reporting is slow: %d ledger entries left for the sensor to report",
                self._entries.qsize(),
            )
        reporting.cancel()
        await asyncio.gather(reporting, return_exceptions=True)
