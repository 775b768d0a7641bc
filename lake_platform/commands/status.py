"""`lake-platform status`: the lake at a glance, for an operator, cron or CI.

Per asset (Bronze, Silver, Gold): hour partitions and rows materialized within the window,
the latest hour, the last materialization, failing checks, and whether it is stale; per
stream, the JetStream lag of the ingest's durable consumer. Everything comes from what the
platform already records (the Dagster instance of `DAGSTER_HOME`, JetStream): nothing in the
lake is listed or read.

Stale means: a Bronze asset with data whose last materialization is older than its freshness
bound (the ingest or its publishers stopped; an asset that never had data is not stale), or a
derived hour whose upstream was materialized after it more than `CATCH_UP_GRACE` ago
(automation should have rebuilt it). Exit code 1 when any check fails or anything is stale.
"""

import asyncio
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Iterable, Sequence

import dagster as dg
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from lake_platform.defs.bronze.assets import BRONZE_ASSETS, FRESHNESS_LOWER_BOUND
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.partitions import HOURLY
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.settings import LakeSettings

CATCH_UP_GRACE = dt.timedelta(minutes=15)
"""How long a derived hour may lag its upstream before it counts as stale (automation, the
run queue and the rebuild itself take minutes under load)."""
RECORDS_PAGE = 1_000
NATS_TIMEOUT_S = 3.0


@dataclasses.dataclass
class AssetStatus:
    """One asset's state within the window."""

    asset: str
    tier: str
    hours: int = 0
    rows: int = 0
    latest_hour: str | None = None
    last_materialized: str | None = None
    failing_checks: list[str] = dataclasses.field(default_factory=list)
    stale: list[str] = dataclasses.field(default_factory=list)
    """Why the asset is stale (empty: it is not)."""

    @property
    def healthy(self) -> bool:
        return not self.failing_checks and not self.stale


@dataclasses.dataclass
class LakeStatus:
    window_hours: int
    assets: list[AssetStatus]
    consumer_lag: dict[str, int | None]
    """Stream -> messages its durable consumer has not delivered yet (None: not known)."""
    nats_error: str | None = None

    @property
    def healthy(self) -> bool:
        return all(asset.healthy for asset in self.assets)


@dataclasses.dataclass
class _Partitions:
    """An asset's latest materialization per partition in the window, and its rows."""

    latest: dict[str, dg.EventLogRecord] = dataclasses.field(default_factory=dict)
    rows: int = 0


def _window_keys(hours: int, now: dt.datetime) -> list[str]:
    start = now - dt.timedelta(hours=hours)
    return HOURLY.get_partition_keys_in_range(
        dg.PartitionKeyRange(
            HOURLY.get_partition_key_for_timestamp(max(start, HOURLY.start).timestamp()),
            HOURLY.get_partition_key_for_timestamp(now.timestamp()),
        )
    )


def _records(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str]
) -> Iterable[dg.EventLogRecord]:
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=list(partitions)),
            limit=RECORDS_PAGE,
            cursor=cursor,
        )
        yield from page.records
        if not page.has_more:
            return
        cursor = page.cursor


def _metadata_int(record: dg.EventLogRecord, name: str) -> int:
    materialization = record.asset_materialization
    value = materialization.metadata.get(name) if materialization else None
    return int(value.value) if value is not None else 0


def _partitions(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Sequence[str], bronze: bool
) -> _Partitions:
    """Bronze rows are the sum of every batch reported; a derived hour's are those of its
    latest rebuild."""
    found = _Partitions()
    for record in _records(instance, key, partitions):
        partition = record.partition_key
        if partition is None:
            continue
        if bronze:
            found.rows += _metadata_int(record, "rows")
        current = found.latest.get(partition)
        if current is None or record.storage_id > current.storage_id:
            found.latest[partition] = record
    if not bronze:
        found.rows = sum(_metadata_int(r, "hour_written_rows") for r in found.latest.values())
    return found


def _failing_checks(
    instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey], partitions: list[str]
) -> list[str]:
    if not check_keys:
        return []
    infos = instance.event_log_storage.get_asset_check_partition_info(
        list(check_keys), partition_keys=partitions
    )
    failed = AssetCheckExecutionRecordStatus.FAILED
    return sorted(
        f"{info.check_key.name}@{info.partition_key}" if info.partition_key else info.check_key.name
        for info in infos
        if info.latest_execution_status == failed
        and (info.partition_key is None or info.partition_key in partitions)
    )


def _timestamp(record: dg.EventLogRecord) -> dt.datetime:
    return dt.datetime.fromtimestamp(record.timestamp, dt.UTC)


def _freshness_checks(key: dg.AssetKey) -> list[dg.AssetCheckKey]:
    from lake_platform.defs.bronze.assets import BRONZE_FRESHNESS_CHECKS

    return [
        check_key
        for checks in BRONZE_FRESHNESS_CHECKS
        for check_key in checks.check_keys
        if check_key.asset_key == key
    ]


def lake_status(instance: dg.DagsterInstance, hours: int, now: dt.datetime) -> list[AssetStatus]:
    """Every asset's status over the `hours` hour partitions up to the one holding `now`."""
    window = _window_keys(hours, now)
    found: dict[dg.AssetKey, _Partitions] = {}
    statuses: list[AssetStatus] = []
    for spec in BRONZE_ASSETS:
        found[spec.key] = _partitions(instance, spec.key, window, bronze=True)
        status = _status(instance, spec.key, "bronze", found[spec.key], window)
        status.failing_checks = _failing_checks(instance, _freshness_checks(spec.key), window)
        latest = instance.get_latest_materialization_event(spec.key)
        if latest is not None and now - dt.datetime.fromtimestamp(latest.timestamp, dt.UTC) > (
            FRESHNESS_LOWER_BOUND
        ):
            status.stale.append(f"no new data for over {FRESHNESS_LOWER_BOUND}")
        statuses.append(status)
    for assets_def in [*SILVER_ASSETS, *GOLD_ASSETS]:
        key = assets_def.key
        found[key] = _partitions(instance, key, window, bronze=False)
        status = _status(instance, key, key.path[0], found[key], window)
        status.failing_checks = _failing_checks(instance, list(assets_def.check_keys), window)
        status.stale = _behind_upstream(
            found[key], [found[dep] for dep in assets_def.asset_deps[key] if dep in found], now
        )
        statuses.append(status)
    return statuses


def _status(
    instance: dg.DagsterInstance, key: dg.AssetKey, tier: str, found: _Partitions, window: list
) -> AssetStatus:
    latest = instance.get_latest_materialization_event(key)
    return AssetStatus(
        asset=key.to_user_string(),
        tier=tier,
        hours=len(found.latest),
        rows=found.rows,
        latest_hour=max(found.latest, default=None),
        last_materialized=(
            dt.datetime.fromtimestamp(latest.timestamp, dt.UTC).isoformat(timespec="seconds")
            if latest is not None
            else None
        ),
    )


def _behind_upstream(own: _Partitions, upstream: list[_Partitions], now: dt.datetime) -> list[str]:
    """The hours whose upstream was materialized after them, longer ago than the grace."""
    behind = []
    for dep in upstream:
        for partition, record in dep.latest.items():
            mine = own.latest.get(partition)
            updated = _timestamp(record)
            if (mine is None or record.storage_id > mine.storage_id) and (
                now - updated > CATCH_UP_GRACE
            ):
                behind.append(partition)
    if not behind:
        return []
    hours = sorted(set(behind))
    return [f"{len(hours)} hours behind their upstream (first {hours[0]})"]


async def _consumer_lag(settings: LakeSettings) -> dict[str, int | None]:
    from lake_platform.ingest.connection import connect
    from lake_platform.ingest.jetstream import DURABLE
    from lake_platform.schemas import STREAMS

    nc = await asyncio.wait_for(connect(settings, name="lake-platform status"), NATS_TIMEOUT_S)
    try:
        js = nc.jetstream(timeout=NATS_TIMEOUT_S)
        lag: dict[str, int | None] = {}
        for stream in STREAMS:
            try:
                lag[stream] = (await js.consumer_info(stream, DURABLE)).num_pending
            except Exception:  # a missing stream or consumer: not known
                lag[stream] = None
        return lag
    finally:
        await nc.close()


def gather(instance: dg.DagsterInstance, settings: LakeSettings, hours: int) -> LakeStatus:
    """The whole status: assets from the instance, lag from JetStream (optional: an
    unreachable NATS is reported, not fatal)."""
    from lake_platform.schemas import STREAMS

    assets = lake_status(instance, hours, dt.datetime.now(dt.UTC))
    try:
        lag, nats_error = asyncio.run(_consumer_lag(settings)), None
    except Exception as error:  # shown as one line, the rest still printed
        lag, nats_error = dict.fromkeys(STREAMS), f"{type(error).__name__}: {error}"
    return LakeStatus(hours, assets, lag, nats_error)


def _rows(status: LakeStatus) -> list[list[str]]:
    def show(value: object) -> str:
        return "-" if value in (None, "") else str(value)

    return [
        [
            asset.asset,
            f"{asset.hours:,}",
            f"{asset.rows:,}",
            show(asset.latest_hour),
            show(asset.last_materialized),
            ", ".join(asset.failing_checks) or "-",
            "; ".join(asset.stale) or "-",
        ]
        for asset in status.assets
    ]


HEADER = ["asset", "hours", "rows", "latest hour", "last materialized", "failing checks", "stale"]


def render_text(status: LakeStatus) -> str:
    """Plain aligned text, for logs and pipes."""
    rows = [HEADER, *_rows(status)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.append(_lag_line(status))
    lines.append("healthy" if status.healthy else "NOT healthy: a check fails or a table is stale")
    return "\n".join(lines)


def _lag_line(status: LakeStatus) -> str:
    if status.nats_error:
        return f"JetStream lag: unknown (NATS: {status.nats_error})"
    return "JetStream lag: " + ", ".join(
        f"{stream} {'-' if lag is None else f'{lag:,}'}"
        for stream, lag in status.consumer_lag.items()
    )


def render_rich(status: LakeStatus) -> None:
    """A table for a terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lake status, last {status.window_hours} h")
    for name in HEADER:
        table.add_column(name, justify="right" if name in ("hours", "rows") else "left")
    for asset, row in zip(status.assets, _rows(status), strict=True):
        table.add_row(*row, style=None if asset.healthy else "bold red")
    console = Console()
    console.print(table)
    console.print(_lag_line(status))
    console.print("[green]healthy[/]" if status.healthy else "[bold red]NOT healthy[/]")


def run_status(hours: int, as_json: bool) -> int:
    """Print the status; 0 when healthy, 1 otherwise."""
    from lake_platform.commands.dagster_runs import command_instance

    status = gather(command_instance(), LakeSettings.from_env(), hours)
    if as_json:
        print(json.dumps({**dataclasses.asdict(status), "healthy": status.healthy}, indent=2))
    elif sys.stdout.isatty():
        render_rich(status)
    else:
        print(render_text(status))
    return 0 if status.healthy else 1
