"""How Silver and Gold follow their upstream, and the sensor that evaluates it.

A derived hour is requested when an upstream hour it reads was materialized after the latest
run planned for it, or when that run failed before materializing it (again after a backoff,
at most MAX_RETRIES times: `FailedHourRetry`), within LAKE_AUTOMATION_LOOKBACK_H (default
48 h), with no run of it or of its upstream in progress and no upstream hour it reads
materialized without passing its blocking checks. The hours it reads are those of the asset
graph's partition mapping: the same hour, the hour before too for the as-of tables
(`follows_upstream`), a day's hours for a daily table.

Why not `AutomationCondition.eager()`: it remembers "an upstream changed" until the asset is
updated, and Dagster 1.13 forgets that memory in two ordinary cases of a live ingest, leaving
the hour stale for good: a Bronze batch reported while the hour's run is already running (the
run read Bronze before it; its materialization then clears the trigger), and a Bronze batch
reported within the same sensor interval as the hour's materialization (reset and trigger
in one evaluation: the reset wins, because `|` drops the timing that would order them).
Comparing event-log storage ids instead is stateless: Bronze is reported after its files are
committed and a run is planned before it lists Bronze, so an upstream materialization with a
storage id below the run's planned event was in that run's input. One later than the plan
(possibly missed) makes the hour stale again once that run ends.
"""

import datetime as dt
import hashlib
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

# Dagster exports no public names for the run retry daemon's tags.
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, WILL_RETRY_TAG

from lake_platform.settings import LakeSettings

ONE_PLAN_PER_RUN_ENV = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


class PartitionCondition(dg.AutomationCondition[dg.AssetKey]):
    """A condition decided per partition key of the candidates (`true_partitions`), with the
    event log and runs at hand; no candidate, no query."""

    def true_partitions(
        self, context: dg.AutomationContext[dg.AssetKey], partitions: set[str]
    ) -> set[str]:
        raise NotImplementedError

    def evaluate(  # ty: ignore[invalid-method-override]
        self, context: dg.AutomationContext[dg.AssetKey]
    ) -> dg.AutomationResult[dg.AssetKey]:
        candidates = context.candidate_subset
        partitions = set(candidates.expensively_compute_partition_keys())
        if not partitions:
            return dg.AutomationResult(context, true_subset=candidates)
        true = self.true_partitions(context, partitions)
        return dg.AutomationResult(
            context, true_subset=candidates.compute_intersection_with_partition_keys(true)
        )


class UpstreamNewerThanPlan(PartitionCondition):
    """Partitions one of whose upstream partitions was materialized after this asset's latest
    planned run of it (or which were never planned).

    A partition's upstream partitions are those the asset graph's partition mapping gives it:
    the same hour for an hourly asset over hourly inputs, the hour before too with a
    `TimeWindowPartitionMapping(start_offset=-1)` (a late quote of 14:59 makes 14:00 and 15:00
    stale), a day's 24 hours for a daily asset over an hourly one.

    An upstream event from the very run planned for the partition is no news when that run
    rebuilt the partition: a run of Silver and Gold together materializes Silver after
    planning Gold, and Gold read it. When that run failed before recording the partition (its
    Gold step was skipped after Silver failed for another hour), Gold never read it."""

    @property
    def name(self) -> str:
        return "upstream_newer_than_latest_plan"

    def true_partitions(
        self, context: dg.AutomationContext[dg.AssetKey], partitions: set[str]
    ) -> set[str]:
        instance, plans = _plans(context, partitions)
        newer: list[tuple[str, int]] = []  # (partition, upstream event after its baseline)
        for upstream in context.asset_graph.get(context.key).parent_keys:
            reads = _upstream_partitions(context, upstream, partitions)
            updated = instance.event_log_storage.get_latest_storage_id_by_partition(
                upstream,
                dg.DagsterEventType.ASSET_MATERIALIZATION,
                {key for keys in reads.values() for key in keys},
            )
            newer += [
                (partition, updated[key])
                for partition, keys in reads.items()
                for key in keys
                if updated.get(key, 0) > plans.baseline(partition)
            ]
        upstream_runs = _run_ids(instance, [storage_id for _, storage_id in newer])
        stale = {
            partition
            for partition, storage_id in newer
            if upstream_runs.get(storage_id, NO_RUN) != plans.run_that_read(partition)
        }
        return stale


def _upstream_partitions(
    context: dg.AutomationContext[dg.AssetKey], upstream: dg.AssetKey, partitions: set[str]
) -> dict[str, set[str]]:
    """Each of the asset's `partitions` -> the partitions of `upstream` it reads, through the
    asset graph's partition mapping (nonexistent ones left out where the mapping allows them).
    An unpartitioned upstream maps to none: its events name no partition to compare."""
    graph = context.asset_graph
    if graph.get(upstream).partitions_def is None:
        return {}
    return {
        partition: set(
            graph.get_parent_partition_keys_for_child(
                partition, upstream, context.key
            ).partitions_subset.get_partition_keys()
        )
        for partition in partitions
    }


class SourceHourMaterialized(PartitionCondition):
    """Partitions whose namesake partition of the asset's source `key` was materialized, read
    from the event log (one query), whatever the partition mapping between them.

    Dagster's `any_deps_missing` maps through the partition mapping, so with an offset mapping
    a missing previous hour (no quotes or trades before the first trading hour of a day) would
    hold the hour forever; only the same hour of the source must exist."""

    def __init__(self, key: dg.AssetKey) -> None:
        self.key = key

    @property
    def name(self) -> str:
        return f"same_hour_of_{self.key.to_user_string()}_materialized"

    def true_partitions(
        self, context: dg.AutomationContext[dg.AssetKey], partitions: set[str]
    ) -> set[str]:
        events = context.asset_graph_view.instance.event_log_storage
        found = events.get_latest_storage_id_by_partition(
            self.key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions
        )
        return set(found)


NO_RUN = ""
"""The run id of runless events (Bronze is reported by a sensor, not by a run)."""


@dataclass(frozen=True)
class LatestPlans:
    """The latest planned run of each partition of an asset, and what it did.

    `planned` and `materialized` hold the storage id of each partition's latest plan and
    latest materialization, `run_of` the run id of those events, `runs` the plans' runs."""

    planned: Mapping[str, int]
    materialized: Mapping[str, int]
    run_of: Mapping[int, str]
    runs: Mapping[str, dg.RunRecord]

    @classmethod
    def load(
        cls, instance: dg.DagsterInstance, key: dg.AssetKey, partitions: set[str]
    ) -> "LatestPlans":
        """Four queries (plans, materializations, their runs' ids, the runs), whatever the
        number of partitions."""
        storage = instance.event_log_storage
        planned = storage.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, partitions
        )
        materialized = storage.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions
        )
        run_of = _run_ids(instance, [*planned.values(), *materialized.values()])
        plan_runs = sorted({run_of[id_] for id_ in planned.values() if id_ in run_of})
        records = instance.get_run_records(dg.RunsFilter(run_ids=plan_runs)) if plan_runs else []
        return cls(planned, materialized, run_of, {r.dagster_run.run_id: r for r in records})

    def plan_run(self, partition: str) -> dg.RunRecord | None:
        """The run of the partition's latest plan (None when never planned)."""
        plan = self.planned.get(partition)
        return None if plan is None else self.runs.get(self.run_of.get(plan, NO_RUN))

    def status(self, partition: str) -> dg.DagsterRunStatus | None:
        run = self.plan_run(partition)
        return None if run is None else run.dagster_run.status

    def recorded(self, partition: str) -> bool:
        """Whether the latest planned run materialized the partition."""
        run, latest = self.plan_run(partition), self.materialized.get(partition)
        return run is not None and self.run_of.get(latest or 0) == run.dagster_run.run_id

    def baseline(self, partition: str) -> int:
        """The storage id after which an upstream event is news to the partition: its latest
        plan; where that plan's run was canceled (it may never have read its inputs), its
        latest materialization; 0 when never planned."""
        if self.status(partition) == dg.DagsterRunStatus.CANCELED:
            return self.materialized.get(partition, 0)
        return self.planned.get(partition, 0)

    def failed(self, partition: str) -> bool:
        """Whether the latest planned run failed without materializing the partition."""
        failed = self.status(partition) == dg.DagsterRunStatus.FAILURE
        return failed and not self.recorded(partition)

    def run_that_read(self, partition: str) -> str | None:
        """The run whose own upstream events are no news to the partition: the run of its
        baseline event, unless that run failed without recording the partition."""
        if self.failed(partition):
            return None
        return self.run_of.get(self.baseline(partition))


FIRST_RETRY_DELAY = dt.timedelta(minutes=5)
"""Wait after a failed run of an hour before automation requests it again; doubled after
each further failure, times a jitter in [1, MAX_JITTER) fixed per hour and attempt."""
MAX_JITTER = 1.5
MAX_RETRIES = 3
"""Requests of a failed hour by automation before it gives up until the hour is rebuilt or its
upstream changes. Each attempt also gets the instance's run retries (`run_retries`)."""
RETRY_PENDING_GRACE = dt.timedelta(minutes=10)
"""How long a failed run marked for an automatic run retry waits for the daemon to launch it
before automation requests the hour itself."""
MAX_PLANS_COUNTED = 100
"""Plans of a failed hour read to count its attempts (far above what the bound lets happen)."""


class FailedHourRetry(PartitionCondition):
    """Partitions whose latest planned run failed before materializing them, requested again
    after a backoff, at most MAX_RETRIES times in a row.

    A failed run's plan is otherwise the partition's baseline (`UpstreamNewerThanPlan`): the
    hour would stay failed until new upstream data arrived. Attempts are the failed runs that
    planned the partition since its latest materialization, a run and its run retries counted
    once (one root run); a run the retry daemon will retry is left to it."""

    @property
    def name(self) -> str:
        return "failed_hour_retry"

    def true_partitions(
        self, context: dg.AutomationContext[dg.AssetKey], partitions: set[str]
    ) -> set[str]:
        instance, plans = _plans(context, partitions)
        now = context.evaluation_time
        due = {
            partition
            for partition in partitions
            if plans.failed(partition) and _retry_due(instance, context.key, partition, plans, now)
        }
        return due


def _plans(
    context: dg.AutomationContext[dg.AssetKey], partitions: set[str]
) -> tuple[dg.DagsterInstance, "LatestPlans"]:
    """The instance, and the latest planned run of each of the asset's `partitions`."""
    instance = context.asset_graph_view.instance
    return instance, LatestPlans.load(instance, context.key, partitions)


def _retry_due(
    instance: dg.DagsterInstance,
    key: dg.AssetKey,
    partition: str,
    plans: LatestPlans,
    now: dt.datetime,
) -> bool:
    """Whether the failed partition's next attempt is due: not left to the retry daemon,
    attempts left, and the backoff since the failed run ended passed."""
    run = plans.plan_run(partition)
    if run is None:
        return False
    ended = _ended(run)
    if _retry_pending(run.dagster_run, ended, now):
        return False
    attempts = _failed_attempts(instance, key, partition, plans.materialized.get(partition))
    if attempts > MAX_RETRIES:
        return False
    return now >= ended + retry_delay(key, partition, attempts)


def retry_delay(key: dg.AssetKey, partition: str, attempts: int) -> dt.timedelta:
    """The backoff after `attempts` failed attempts: doubling, with a jitter fixed per hour
    and attempt (so hours that failed together are not requested in lockstep, and one
    evaluation agrees with the next)."""
    seed = f"{key.to_user_string()}|{partition}|{attempts}".encode()
    fraction = int.from_bytes(hashlib.sha256(seed).digest()[:4], "big") / 2**32
    jitter = 1 + (MAX_JITTER - 1) * fraction
    return FIRST_RETRY_DELAY * 2 ** max(attempts - 1, 0) * jitter


def _ended(run: dg.RunRecord) -> dt.datetime:
    """When the run ended (its last update when Dagster recorded no end)."""
    if run.end_time is not None:
        return dt.datetime.fromtimestamp(run.end_time, dt.UTC)
    return run.update_timestamp.astimezone(dt.UTC)


def _retry_pending(run: dg.DagsterRun, ended: dt.datetime, now: dt.datetime) -> bool:
    """Whether the run retry daemon is to retry the failed run and has not yet."""
    will_retry = run.tags.get(WILL_RETRY_TAG, "").lower() == "true"
    retried = AUTO_RETRY_RUN_ID_TAG in run.tags
    return will_retry and not retried and now < ended + RETRY_PENDING_GRACE


def _failed_attempts(
    instance: dg.DagsterInstance, key: dg.AssetKey, partition: str, materialized: int | None
) -> int:
    """Failed runs that planned the partition after its latest materialization, a run and its
    retries (one root run) counted once."""
    records = instance.event_log_storage.get_event_records(
        dg.EventRecordsFilter(
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            asset_key=key,
            asset_partitions=[partition],
            after_cursor=materialized,
        ),
        limit=MAX_PLANS_COUNTED,
        ascending=False,
    )
    run_ids = sorted({record.event_log_entry.run_id for record in records})
    if not run_ids:
        return 0
    failed = instance.get_runs(
        dg.RunsFilter(run_ids=run_ids, statuses=[dg.DagsterRunStatus.FAILURE])
    )
    return len({run.root_run_id or run.run_id for run in failed})


def _run_ids(instance: dg.DagsterInstance, storage_ids: list[int]) -> dict[int, str]:
    """Storage id -> run id of those events (materializations and plans), one query each."""
    if not storage_ids:
        return {}
    return {
        record.storage_id: record.event_log_entry.run_id
        for event_type in (
            dg.DagsterEventType.ASSET_MATERIALIZATION,
            dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
        )
        for record in instance.event_log_storage.get_event_records(
            dg.EventRecordsFilter(event_type, storage_ids=storage_ids)
        )
    }


def any_upstream_unverified() -> dg.AutomationCondition:
    """Partitions one of whose upstream partitions (any that the partition mapping gives it)
    is materialized and has not passed its blocking checks (unless it will be requested in
    this tick, with them).

    Dagster's `all_deps_blocking_checks_passed` maps a dependency's partitions onto the
    asset's by *any*: with several upstream partitions per partition (the hour before too, a
    day's hours) one passing partition would outweigh a failing one. Partitions never
    materialized (the hour before the first trade, a night) hold nothing here: whether an
    input may be missing is each rule's own gate."""
    passed = dg.AutomationCondition.all_checks_match(
        dg.AutomationCondition.check_passed() | dg.AutomationCondition.will_be_requested(),
        blocking_only=True,
    )
    return dg.AutomationCondition.any_deps_match(
        ~dg.AutomationCondition.missing() & ~passed
    ).with_label("an upstream partition it reads has not passed its blocking checks")


def follows_upstream_within(
    window: dt.timedelta, label: str, missing: dg.AutomationCondition | None = None
) -> dg.AutomationCondition:
    """Run a partition within `window` of the latest when an upstream partition it reads
    changed after its latest plan, or again when that plan's run failed (see the module);
    never while it or an upstream runs, while `missing` holds it, or while an upstream
    partition it reads is unverified (`any_upstream_unverified`)."""
    ready = (
        dg.AutomationCondition.in_latest_time_window(window)
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.any_deps_in_progress()
    )
    if missing is not None:
        ready = ready & ~missing
    return (
        ready & (UpstreamNewerThanPlan() | FailedHourRetry()) & ~any_upstream_unverified()
    ).with_label(label)


def follows_upstream(lookback_hours: int, same_hour_input: dg.AssetKey) -> dg.AutomationCondition:
    """Run an hour when an upstream hour it reads changed after its latest plan, or again
    when that plan's run failed (see the module).

    Only a missing same hour of `same_hour_input` (the table's source) holds it: an as-of
    table's hour before may have no quotes or trades (the first trading hour of a day), and
    an input other than the source may have none at all (its columns are then null)."""
    missing = ~SourceHourMaterialized(same_hour_input)
    return follows_upstream_within(dt.timedelta(hours=lookback_hours), "follows upstream", missing)


def derived_automation(source: dg.AssetKey) -> dg.AutomationCondition:
    """The automation of an hourly derived table whose source is `source`
    (`follows_upstream`, the look-back of the settings)."""
    return follows_upstream(LakeSettings.from_env().automation_lookback_hours, source)


if os.environ.get(ONE_PLAN_PER_RUN_ENV, "").lower() in ("1", "true"):
    raise RuntimeError(
        f"{ONE_PLAN_PER_RUN_ENV} is set: Dagster then records one plan per range run instead of "
        "one per hour, and lake_platform's automation compares plans per hour; unset it"
    )
with warnings.catch_warnings():
    # Evaluating our own condition needs the code location: `use_user_code_server` is beta.
    warnings.simplefilter("ignore", dg.BetaWarning)
    automation_sensor = dg.AutomationConditionSensorDefinition(
        "lake_automation_sensor",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        use_user_code_server=True,
        description=(
            "Materializes Silver and Gold partitions whose upstream changed, and again (with "
            "backoff, a bounded number of times) those whose run failed."
        ),
    )
