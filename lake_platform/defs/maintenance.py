"""Iceberg maintenance of every Silver and Gold table: the `lake_maintenance` job, its hourly
schedule, and `run_maintenance`, the work itself (`lake-platform maintain` runs it too).

Per table, in this order:
1. `tables.maintenance.maintain`: expire untagged snapshots older than
   `LAKE_SNAPSHOT_RETENTION`, delete the files only expired snapshots referenced and the
   unreferenced ones older than the grace period; then the lake's leftover temporaries.
2. `tables.manifests.compact_manifests`: merge the manifests of closed days and months, so
   a commit's cost stays flat as history grows.
3. Day tags (`LAKE_DAILY_TAGS`): each closed UTC day of the last `LAKE_DAILY_TAGS` days that
   has no `day-YYYY-MM-DD` tag yet and whose hours are all materialized gets one, on the
   table's current snapshot. "All materialized" is asked of the Dagster instance: every hour
   of the day whose upstream asset has a materialization has one of its own recorded after
   the upstream's latest (it is not stale), and at least one hour has. An hour without
   upstream data (a market closed at night) has nothing to materialize and does not hold
   the day back; an hour still waiting for its rebuild does. Without an instance no day
   is tagged.

The schedule skips a tick while a run of the job is still in progress: maintenance is safe
against concurrent commits, but two sweeps of the same folders only do the work twice.
"""

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from lake_platform.defs.keys import derived_key
from lake_platform.defs.partitions import HOURLY, hours_of_day
from lake_platform.defs.resources import LakeResource
from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.tables.hours import RUN_ID_PROPERTY
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.tables.maintenance import LakeMaintenance, MaintenanceReport, maintain
from lake_platform.tables.manifests import ManifestCompaction, compact_manifests
from lake_platform.tables.tags import DAY_TAG, TagResult, day_tag, tag_day, tags

MAINTENANCE_JOB = "lake_maintenance"
MAINTENANCE_SCHEDULE = "lake_maintenance_hourly"
MAINTENANCE_CRON = "10 * * * *"
"""Ten minutes past each hour (UTC): the hour that just closed has had its rebuilds."""
IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
"""Run statuses of a maintenance run still going (or about to)."""


@dataclass(frozen=True)
class TableMaintenance:
    """What one run did to one table: the sweep, the manifest rewrite, the day tags made."""

    report: MaintenanceReport
    compaction: ManifestCompaction
    day_tags: tuple[TagResult, ...]

    def metadata(self) -> dict[str, int]:
        """The sweep's counts, the live manifests before and after, the day tags made and
        removed."""
        return {
            **self.report.metadata(),
            "manifests_before": self.compaction.manifests_before,
            "manifests_after": self.compaction.manifests_after,
            "day_tags_made": sum(result.tag is not None for result in self.day_tags),
            "day_tags_removed": sum(len(result.removed) for result in self.day_tags),
        }

    def line(self) -> str:
        """One line for a log or a terminal: what was expired, deleted, merged and tagged."""
        report, compaction = self.report, self.compaction
        made = [result.tag for result in self.day_tags if result.tag is not None]
        removed = [tag for result in self.day_tags for tag in result.removed]
        parts = [
            f"{table_identifier(report.table)}: {len(report.snapshots_expired)} snapshots "
            f"expired ({report.snapshots_kept} kept, {report.tags} tags)",
            f"deleted {len(report.data_files)} data files, {len(report.manifests)} manifests, "
            f"{len(report.manifest_lists)} manifest lists, {len(report.orphans)} orphans",
            f"manifests {compaction.manifests_before} -> {compaction.manifests_after}",
        ]
        if made:
            parts.append(f"tagged {', '.join(made)}")
        if removed:
            parts.append(f"untagged {', '.join(removed)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class MaintenanceRun:
    """What `run_maintenance` did, table by table (lake paths), and the temporaries swept."""

    tables: dict[str, TableMaintenance]
    temporaries: tuple[str, ...]

    def metadata(self) -> dict[str, int]:
        """Every table's counts summed, with the tables and the temporaries deleted."""
        totals = {"tables": len(self.tables), "temporaries_deleted": len(self.temporaries)}
        for table in self.tables.values():
            for name, count in table.metadata().items():
                totals[name] = totals.get(name, 0) + count
        return totals

    def dagster_metadata(self) -> dict[str, dg.MetadataValue]:
        """`metadata()` as Dagster values, with each table's counts as JSON."""
        by_table = {
            table_identifier(target): table.metadata() for target, table in self.tables.items()
        }
        return {
            **{name: dg.MetadataValue.int(count) for name, count in self.metadata().items()},
            "by_table": dg.MetadataValue.json(by_table),
        }


def run_maintenance(
    tables: LakeTables,
    derived_tables: Sequence[DerivedTable],
    instance: dg.DagsterInstance | None,
    *,
    now: dt.datetime | None = None,
    run_id: str = "",
) -> MaintenanceRun:
    """Maintain `derived_tables` (see the module): the day tags come from `instance`'s
    materializations (none without one); `run_id` goes into the manifest rewrite's summary."""
    now = now or dt.datetime.now(dt.UTC)
    swept: LakeMaintenance = maintain(tables, derived_tables, now=now)
    today = now.astimezone(dt.UTC).date()
    properties = {RUN_ID_PROPERTY: run_id} if run_id else {}
    keep = tables.settings.daily_tags
    done = {}
    for table in derived_tables:
        iceberg = tables.table(table)
        compaction = compact_manifests(iceberg, today, properties=properties)
        made: list[TagResult] = []
        if instance is not None and keep:
            untagged = untagged_days(tags(iceberg), today, keep)
            for day in complete_days(instance, table, untagged):
                made.append(tag_day(iceberg, day, keep))
        done[table.target] = TableMaintenance(swept.tables[table.target], compaction, tuple(made))
    return MaintenanceRun(done, swept.temporaries)


def untagged_days(current_tags: Mapping[str, int], today: dt.date, keep: int) -> list[dt.date]:
    """The closed UTC days of the last `keep` that have no day tag, oldest first."""
    window = [today - dt.timedelta(days=back) for back in range(keep, 0, -1)]
    tagged = {tag for tag in current_tags if DAY_TAG.fullmatch(tag)}
    return [day for day in window if day_tag(day) not in tagged]


def complete_days(
    instance: dg.DagsterInstance, table: DerivedTable, days: Sequence[dt.date]
) -> list[dt.date]:
    """The `days` whose hours are all materialized in `instance` (see the module), in order."""
    partitions_by_day = {day: _day_partitions(day) for day in days}
    wanted = {key for keys in partitions_by_day.values() for key in keys}
    if not wanted:
        return []
    events = instance.event_log_storage
    kind = dg.DagsterEventType.ASSET_MATERIALIZATION
    own = events.get_latest_storage_id_by_partition(derived_key(table.target), kind, wanted)
    upstream = events.get_latest_storage_id_by_partition(derived_key(table.source), kind, wanted)
    return [
        day
        for day, keys in partitions_by_day.items()
        if any(key in own for key in keys)
        and all(own.get(key, -1) > upstream[key] for key in keys if key in upstream)
    ]


def _day_partitions(day: dt.date) -> list[str]:
    """The day's 24 hourly partition keys; none when some of its hours are not partitions
    (before `LAKE_PARTITIONS_START`)."""
    try:
        first, last = hours_of_day(day)
    except ValueError:
        return []
    keys = HOURLY.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    return keys if len(keys) == 24 else []


@dg.op(
    description="Expires old Iceberg snapshots, deletes the files nothing kept needs, merges "
    "closed periods' manifests and makes the day tags, for every Silver and Gold table.",
)
def maintain_lake_tables(context: dg.OpExecutionContext, lake: LakeResource) -> dg.Output[None]:
    done = run_maintenance(lake.tables(), CATALOG_TABLES, context.instance, run_id=context.run_id)
    for table in done.tables.values():
        context.log.info(table.line())
    return dg.Output(None, metadata=done.dagster_metadata())


@dg.job(
    name=MAINTENANCE_JOB,
    description="Iceberg maintenance of every Silver and Gold table: snapshot expiry, deletion "
    "of unreferenced files and leftover temporaries, manifest merging, day tags. What it "
    "deleted is in the run's output metadata.",
)
def lake_maintenance_job() -> None:
    maintain_lake_tables()


@dg.schedule(
    name=MAINTENANCE_SCHEDULE,
    job=lake_maintenance_job,
    cron_schedule=MAINTENANCE_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Runs lake_maintenance hourly; skips a tick while a run is in progress.",
)
def lake_maintenance_hourly(
    context: dg.ScheduleEvaluationContext,
) -> dg.RunRequest | dg.SkipReason:
    running = context.instance.get_run_records(
        dg.RunsFilter(job_name=MAINTENANCE_JOB, statuses=list(IN_PROGRESS)), limit=1
    )
    if running:
        run_id = running[0].dagster_run.run_id
        return dg.SkipReason(f"run {run_id} of {MAINTENANCE_JOB} is still in progress")
    return dg.RunRequest()
