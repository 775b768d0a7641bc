"""`lake-platform demo`: the whole chain as one batch on embedded defaults.

An embedded nats-server on a free port, a simulated session published to it, the ingest until
idle, Silver and Gold materialized through Dagster for every touched hour, and a summary.
"""

import asyncio
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

from lake_platform.commands.dagster_runs import command_instance, materialize_hours
from lake_platform.defs.bronze.reporting import instance_reporter
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.partitions import partition_key_for
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.tables import DERIVED_TABLES, GOLD_TABLES, SILVER_TABLES
from lake_platform.embedded_nats import NatsServer
from lake_platform.ingest.ledger import LedgerEntry, read_entries
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.schemas import BY_NAME, SCHEMAS
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import SessionSpec, session
from lake_platform.simulate.publisher import PublishStats, publish
from lake_platform.storage import LakeStore

SUMMARY_ROW = {
    derived.target: derived.source.split("/", 1)[1]
    if derived in SILVER_TABLES.values()
    else derived.target
    for derived in DERIVED_TABLES
}
"""The summary row of each derived asset: a Silver table's is the table it is derived from
(Bronze to Silver in one row), a Gold table's its own."""


@dataclasses.dataclass
class TableSummary:
    published: int | None = 0
    quarantined: int | None = 0
    bronze_rows: int | None = 0
    silver_rows: int | None = None
    duplicates_removed: int | None = None
    gold_rows: int | None = None
    checks_passed: int = 0
    checks: int = 0


def gold_summary() -> TableSummary:
    """A Gold table's row: no Bronze or Silver counts of its own."""
    return TableSummary(published=None, quarantined=None, bronze_rows=None)


def _hour_keys(entries: list[LedgerEntry]) -> tuple[str, str] | None:
    hours = [f.hour_start_ns for e in entries for f in e.files if f.hour_start_ns is not None]
    if not hours:
        return None
    first, last = (
        dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC) for ns in (min(hours), max(hours))
    )
    return partition_key_for(first), partition_key_for(last)


def _summaries(published: PublishStats, entries: list[LedgerEntry]) -> dict[str, TableSummary]:
    tables = {schema.table: TableSummary() for schema in SCHEMAS}
    tables.update({gold.target: gold_summary() for gold in GOLD_TABLES})
    for name, count in published.by_schema.items():
        if name is not None:
            tables[BY_NAME[name].table].published += count  # type: ignore[operator]
    for entry in entries:
        for file in entry.files:
            tables[file.table or ""].bronze_rows += file.rows  # type: ignore[operator]
        for bad in entry.quarantine:
            if bad.table in tables:
                tables[bad.table].quarantined += bad.rows  # type: ignore[operator]
    return tables


def _add_run(tables: dict[str, TableSummary], result: dg.ExecuteInProcessResult) -> bool:
    for asset in [*SILVER_ASSETS, *GOLD_ASSETS]:
        events = result.asset_materializations_for_node(asset.node_def.name)
        if not events:
            continue
        metadata = events[0].metadata  # each event of a range run carries the run's totals
        table = tables[SUMMARY_ROW[asset.key.to_user_string()]]
        if asset.key.path[0] == "silver":
            table.silver_rows = metadata["rows_written"].value
            table.duplicates_removed = metadata["duplicates_removed"].value
        else:
            table.gold_rows = metadata["rows_written"].value
    all_passed = result.success
    for check in result.get_asset_check_evaluations():
        table = tables[SUMMARY_ROW[check.asset_key.to_user_string()]]
        table.checks += 1
        table.checks_passed += check.passed
        all_passed = all_passed and check.passed
    return all_passed


def _print_summary(tables: dict[str, TableSummary], unrouted: int, lake: str) -> None:
    def show(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    header = (
        "table",
        "published",
        "quarantined",
        "bronze",
        "silver",
        "dups removed",
        "gold",
        "checks",
    )
    print(f"{header[0]:<30}" + "".join(f"{h:>13}" for h in header[1:]))
    for name, t in tables.items():
        cells = (
            t.published,
            t.quarantined,
            t.bronze_rows,
            t.silver_rows,
            t.duplicates_removed,
            t.gold_rows,
        )
        print(
            f"{name:<30}"
            + "".join(f"{show(c):>13}" for c in cells)
            + f"{t.checks_passed:>9}/{t.checks}"
        )
    print(f"malformed messages published on purpose: {unrouted:,} (in _quarantine)")
    print(f"lake: {lake}")


def run_demo(minutes: float, rate: float, seed: int, progress: bool = True) -> int:
    """The whole chain on a simulated session; 0 only when every check passed."""
    settings = LakeSettings.from_env()
    instance = command_instance()  # a DAGSTER_HOME problem stops the demo before it starts
    started_ns = time.time_ns()
    with (
        tempfile.TemporaryDirectory(prefix="lake-demo-nats-") as workdir,
        NatsServer.start(Path(workdir)) as server,
    ):
        settings = dataclasses.replace(settings, nats_servers=(server.url,))
        spec = SessionSpec(minutes=minutes, rate=rate, seed=seed, end_ns=time.time_ns())
        published = asyncio.run(publish(settings, session(spec), progress=progress))
        store = LakeStore.from_settings(settings)
        writer = writer_name("demo")
        service = IngestService(
            settings, store, writer=writer, reporter=instance_reporter(instance)
        )
        stats = asyncio.run(service.run(until_idle=True, max_seconds=600))
        print(f"ingested {stats.line()}")
    entries = [e for e in read_entries(store, started_ns, time.time_ns()) if e.writer == writer]
    hours = _hour_keys(entries)
    tables = _summaries(published, entries)
    if hours is None:
        print("nothing was ingested", file=sys.stderr)
        return 1
    result = materialize_hours([*SILVER_ASSETS, *GOLD_ASSETS], instance, settings, *hours)
    all_passed = _add_run(tables, result)
    print(f"Silver and Gold for {hours[0]} … {hours[1]}: run {result.run_id}")
    _print_summary(tables, published.by_schema[None], store.url)
    return 0 if all_passed else 1
