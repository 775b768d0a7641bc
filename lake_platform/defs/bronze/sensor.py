"""`bronze_ingest_sensor`: the Bronze ingest inside the Dagster daemon.

Each tick pulls for a bounded time (far below the 60 s sensor timeout), commits and acks
everything it pulled, then reports what the ledger holds since its cursor. Reporting from the
ledger, not from the tick's memory, means that batches of a tick that timed out (its side
effects happen, its events are discarded) or of a standalone service that could not reach
the Dagster instance are reported by the next tick. A tick reads a bounded number of
ledger entries, so a backlog after downtime is reported over several ticks.

A tick's time is bounded whatever storage and NATS do: the ingest and the ledger read each
run in a worker thread that the tick waits for at most `INGEST_WAIT_S` / `REPORT_WAIT_S`
(a store that accepts connections and never answers holds a call for minutes, and Python
cannot stop a thread blocked in a read). A worker that outlives its tick keeps its slot:
later ticks of this code server start no second ingest (or ledger read) beside it, say so,
and still report the ledger. The ingest part never decides whether the ledger is reported.
"""

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from lake_platform.defs.bronze.reporting import LedgerCursor, materializations, read_unreported
from lake_platform.defs.resources import LakeResource
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.storage import LakeStore, StorageError

TICK_PULL_S = 20.0
"""Pulling time of one tick; committing the last batches follows within a few seconds."""
INGEST_WAIT_S = 30.0
"""How long a tick waits for its ingest (pull, then the last commit) before it reports."""
REPORT_WAIT_S = 15.0
"""How long a tick waits for its ledger read. With `INGEST_WAIT_S`, a tick ends ~15 s
inside the sensor timeout, whatever storage does."""

T = TypeVar("T")


class WorkerSlot:
    """At most one call of a kind running in this process, each in a daemon thread.

    `started` counts the calls started; `busy` is true while one runs. A finished call that
    no tick waited for keeps its outcome until `take_unwaited` hands it to a later tick.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = 0
        self._lock = threading.Lock()
        self._unwaited: concurrent.futures.Future[object] | None = None

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def start(self, work: Callable[[], T]) -> "concurrent.futures.Future[T] | None":
        """Run `work` in a new daemon thread, or return None when a call is still running."""
        if not self._lock.acquire(blocking=False):
            return None
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(work())
            except BaseException as error:  # handed to whoever waits, never lost in a thread
                future.set_exception(error)
            finally:
                self._lock.release()

        self.started += 1
        threading.Thread(target=run, name=f"bronze-{self.name}", daemon=True).start()
        return future

    def wait(self, future: "concurrent.futures.Future[T]", timeout_s: float) -> T:
        """`future`'s result; past `timeout_s` it is kept for `take_unwaited` and
        `TimeoutError` is raised."""
        try:
            return future.result(timeout=timeout_s)
        except TimeoutError:
            self._unwaited = future  # type: ignore[assignment]
            raise

    def take_unwaited(self) -> "concurrent.futures.Future[object] | None":
        """A call an earlier tick gave up waiting for, once it has finished (then forgotten)."""
        future = self._unwaited
        if future is None or not future.done():
            return None
        self._unwaited = None
        return future


INGEST_SLOT = WorkerSlot("ingest")
LEDGER_READ_SLOT = WorkerSlot("ledger-read")


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _log_late_ingest(context: dg.SensorEvaluationContext) -> None:
    """Log how an ingest that outlived its tick ended."""
    late = INGEST_SLOT.take_unwaited()
    if late is None:
        return
    if late.exception() is not None:
        context.log.error(f"the ingest of an earlier tick failed: {_describe(late.exception())}")
    else:
        context.log.info(f"the ingest of an earlier tick ended: {late.result()}")


def _ingest(context: dg.SensorEvaluationContext, lake: LakeResource) -> str | None:
    """Run this tick's ingest, waiting at most `INGEST_WAIT_S`; never raises.

    Returns why the ingest did not complete in this tick (None when it did)."""
    # Imported here: the NATS client is ~0.4 s of imports that every run process loading this
    # code location would pay, and only this sensor uses it.
    from lake_platform.ingest.service import IngestService, writer_name

    _log_late_ingest(context)
    try:
        service = IngestService(
            lake.settings(), lake.store(), writer=writer_name("sensor"), final_commit_attempts=1
        )
    except Exception as error:
        context.log.error(f"ingest not started: {_describe(error)}")
        return f"ingest not started: {_describe(error)}"
    future = INGEST_SLOT.start(
        lambda: asyncio.run(service.run(until_idle=True, max_seconds=TICK_PULL_S)).line()
    )
    if future is None:
        note = "the ingest of an earlier tick is still running: no second ingest started"
        context.log.warning(note)
        return note
    try:
        context.log.info(f"ingested {INGEST_SLOT.wait(future, INGEST_WAIT_S)}")
    except TimeoutError:
        note = (
            f"ingest still running after {INGEST_WAIT_S:.0f}s (storage or NATS not answering); "
            f"it goes on in the background, its batches are reported once committed "
            f"(so far: {service.stats.line()})"
        )
        context.log.warning(note)
        return note
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # from the worker: a Polars panic is a BaseException too
        context.log.error(f"ingest failed: {_describe(error)}")
        return f"ingest failed: {_describe(error)}"
    return None


def _read_ledger(
    store: LakeStore, cursor: LedgerCursor, now_ns: int
) -> tuple[list[LedgerEntry], LedgerCursor] | str:
    """The unreported entries and the next cursor, or why they could not be read in time."""
    future = LEDGER_READ_SLOT.start(lambda: read_unreported(store, cursor, now_ns))
    if future is None:
        return "the ledger read of an earlier tick is still running"
    try:
        return LEDGER_READ_SLOT.wait(future, REPORT_WAIT_S)
    except TimeoutError:
        return f"the ledger read did not finish within {REPORT_WAIT_S:.0f}s"
    except StorageError as error:  # the cursor stays: the next tick reads the same entries
        return f"cannot read the ledger: {error}"


@dg.sensor(
    name="bronze_ingest_sensor",
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Pulls NATS JetStream into Bronze and reports each committed hour partition.",
)
def bronze_ingest_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    failure = _ingest(context, lake)
    now_ns = time.time_ns()
    cursor = LedgerCursor.load(context.cursor, now_ns)
    read = _read_ledger(lake.store(), cursor, now_ns)
    if isinstance(read, str):
        context.log.error(read)
        return dg.SkipReason(f"{failure}; {read}" if failure else read)
    entries, next_cursor = read
    events = materializations(entry for entry in entries if not entry.reported)
    context.log.info(f"{len(entries)} ledger entries read, reporting {len(events)} partitions")
    if failure and not events:
        context.update_cursor(next_cursor.dump())  # entries read are settled all the same
        return dg.SkipReason(failure)
    return dg.SensorResult(asset_events=events, cursor=next_cursor.dump())
