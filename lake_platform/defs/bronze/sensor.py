"""`bronze_ingest_sensor`: the Bronze ingest inside the Dagster daemon.

Each tick pulls for a bounded time (far below the 60 s sensor timeout), commits and acks
everything it pulled, then reports what the ledger holds since its cursor. Reporting from the
ledger, not from the tick's memory, means that batches of a tick that timed out (its side
effects happen, its events are discarded) or of a standalone service that could not reach
the Dagster instance are reported by the next tick. A tick reads a bounded number of
ledger entries, so a backlog after downtime is reported over several ticks.
"""

import asyncio
import time

import dagster as dg

from lake_platform.defs.bronze.reporting import LedgerCursor, materializations, read_unreported
from lake_platform.defs.resources import LakeResource
from lake_platform.storage import StorageError

TICK_PULL_S = 20.0
"""Pulling time of one tick; committing the last batches follows within a few seconds (one
attempt: a tick whose store hangs leaves the rest unacked for the next tick, inside the 60 s
sensor timeout)."""


@dg.sensor(
    name="bronze_ingest_sensor",
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Pulls NATS JetStream into Bronze and reports each committed hour partition.",
)
def bronze_ingest_sensor(
    context: dg.SensorEvaluationContext, lake: LakeResource
) -> dg.SensorResult | dg.SkipReason:
    # Imported here: the NATS client is ~0.4 s of imports that every run process loading this
    # code location would pay, and only this sensor uses it.
    from lake_platform.ingest.connection import NatsUnavailableError
    from lake_platform.ingest.jetstream import ConsumerConfigError
    from lake_platform.ingest.service import IngestService, writer_name

    settings = lake.settings()
    store = lake.store()
    service = IngestService(settings, store, writer=writer_name("sensor"), final_commit_attempts=1)
    failure = None
    try:
        asyncio.run(service.run(until_idle=True, max_seconds=TICK_PULL_S))
    except (NatsUnavailableError, ConsumerConfigError, StorageError) as error:
        failure = str(error)
        context.log.error(f"ingest failed: {failure}")
    now_ns = time.time_ns()
    cursor = LedgerCursor.load(context.cursor, now_ns)
    try:
        entries, next_cursor = read_unreported(store, cursor, now_ns)
    except StorageError as error:  # the cursor stays: the next tick reads the same entries
        context.log.error(f"cannot read the ledger: {error}")
        reason = f"cannot read the ledger: {error}"
        return dg.SkipReason(f"ingest failed: {failure}; {reason}" if failure else reason)
    events = materializations(entry for entry in entries if not entry.reported)
    context.log.info(
        f"ingested {service.stats.line()}; {len(entries)} ledger entries read, "
        f"reporting {len(events)} partitions"
    )
    if failure and not events:
        context.update_cursor(next_cursor.dump())  # entries read are settled all the same
        return dg.SkipReason(f"ingest failed: {failure}")
    return dg.SensorResult(asset_events=events, cursor=next_cursor.dump())
