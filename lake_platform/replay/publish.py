"""Publishing a replayed stream (`replay_hours`) to JetStream, in stream order, at a speed.

The stream is encoded a chunk at a time (`encoding`), checked against the target's
streams (`target`), paced (`pacing`) and sent with its PubAcks awaited in a window (`acks`).

Cancelling (Ctrl-C under `asyncio.run`) stops sending, waits for the PubAcks in flight,
marks the stats `interrupted` and raises again: pass `stats` to read them afterwards.
"""

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Iterable
from typing import Protocol

from lake_platform.ingest.connection import connect
from lake_platform.replay.acks import AckWindow
from lake_platform.replay.encoding import EncodedChunk, encoded_chunks
from lake_platform.replay.pacing import Pacer
from lake_platform.replay.stats import ReplayStats
from lake_platform.replay.stream import ReplayError, ReplayHour
from lake_platform.replay.target import Target
from lake_platform.settings import LakeSettings
from lake_platform.simulate.publisher import IN_FLIGHT

MIN_SLEEP_S = 0.001
"""An event due sooner than this is sent at once (a sleep that short oversleeps anyway)."""
PROGRESS_EVERY_S = 0.2
REPORT_EVERY = 256
"""Events sent between two looks at the clock for a progress report."""


class ReplayProgress(Protocol):
    """Told of a replay's progress: `advanced` every `PROGRESS_EVERY_S` or so while events
    are acked, `hour_done` once every event of an hour is acked."""

    def advanced(self, stats: ReplayStats) -> None: ...

    def hour_done(self, hour: dt.datetime, stats: ReplayStats) -> None: ...


async def publish_replay(
    settings: LakeSettings,
    hours: Iterable[ReplayHour],
    *,
    speed: float | None,
    prefix: str,
    as_recorded: bool,
    progress: ReplayProgress | None = None,
    stats: ReplayStats | None = None,
) -> ReplayStats:
    """Publish the stream of `hours` to the JetStream of `settings` (see the modules): on
    `{prefix}.{subject}`, `source` set to `replay` unless `as_recorded`, at `speed` times
    real time (None: as fast as acked). Returns `stats` (a new one when None)."""
    if speed is not None and not speed > 0:
        raise ReplayError(f"the speed must be positive: {speed}")
    stats = stats or ReplayStats()
    chunks = encoded_chunks(hours, prefix, as_recorded)
    chunk = await asyncio.to_thread(next, chunks, None)
    if chunk is None:
        stats.finished = time.monotonic()
        return stats
    nc = await connect(settings, name="lake-platform replay")
    upcoming: asyncio.Future[EncodedChunk | None] | None = None
    try:
        js = nc.jetstream(publish_async_max_pending=2 * IN_FLIGHT)
        target = Target(js, settings, prefix)
        await target.prepare()
        window = AckWindow(js, stats)
        sender = _Sender(window, Pacer(speed) if speed else None, progress)
        try:
            while chunk is not None:
                upcoming = asyncio.ensure_future(asyncio.to_thread(next, chunks, None))
                await target.check(chunk.distinct_subjects)
                await sender.send_chunk(chunk)
                if chunk.final:
                    await window.drain()
                    stats.hours += 1
                    if progress is not None:
                        progress.hour_done(chunk.hour, stats)
                chunk = await upcoming
                upcoming = None
            await window.drain()
        except asyncio.CancelledError:
            stats.interrupted = True
            await window.drain()
            raise
        except BaseException:
            window.abandon()
            raise
    finally:
        if upcoming is not None:
            upcoming.cancel()
        stats.finished = time.monotonic()
        with contextlib.suppress(Exception):
            await nc.close()
    return stats


class _Sender:
    """Sends a chunk's events through the window, paced, telling `progress` on the way."""

    def __init__(
        self, window: AckWindow, pacer: Pacer | None, progress: ReplayProgress | None
    ) -> None:
        self.window, self.pacer, self.progress = window, pacer, progress
        self.reported = time.monotonic()

    async def send_chunk(self, chunk: EncodedChunk) -> None:
        window, pacer, stats = self.window, self.pacer, self.window.stats
        for count, (table, subject, payload, msg_id, ts) in enumerate(chunk.events(), 1):
            if pacer is not None:
                delay = pacer.delay(ts, time.monotonic(), stats)
                if delay >= MIN_SLEEP_S:
                    await asyncio.sleep(delay)
                    self._report()
            if window.full():
                await window.settle_oldest()
            await window.send(table, subject, payload, msg_id, ts)
            window.settle_acked()
            if not count % REPORT_EVERY:
                self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if now - self.reported >= PROGRESS_EVERY_S:
            self.reported = now
            self.progress.advanced(self.window.stats)
