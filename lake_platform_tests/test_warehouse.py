"""The DuckDB warehouse file (`serving/duckdb`): a view per table with the catalog's rows,
macros, readable by another process while it is refreshed, refreshed once per burst of
commits, built through `dagster_duckdb.DuckDBResource` in the code location."""

import datetime as dt
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest
from dagster_duckdb import DuckDBResource

from lake_platform.definitions import defs
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.partitions import partition_key_for
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.serving.assets import SERVED_KEYS, WAREHOUSE_KEY, serving_duckdb
from lake_platform.defs.serving.refresh import (
    REFRESH_INTERVAL_S,
    refresh_due,
    warehouse_refresh_sensor,
)
from lake_platform.defs.serving.resources import WAREHOUSE_RESOURCE, warehouse_duckdb
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.query.views import lake_views
from lake_platform.query.warehouse import (
    TABLES_TABLE,
    build_warehouse,
    building_path,
)
from lake_platform.schemas import BY_NAME
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.samples import SAMPLES

SIGNALS = BY_NAME["levels.signals"]
QUOTES = BY_NAME["stocks.quotes"]
HOURS = (HOUR, HOUR + dt.timedelta(hours=1))
SILVER_TRADES = "silver.stocks_trades"
GOLD_BARS = "gold.stocks_bars_1m"
WAIT_S = 120
"""How long the reader may take to report (a guard against a hang, not a timing assert)."""


@dataclass
class ServedLake:
    """A local lake with Bronze for two hours, a Dagster instance, and the resources of the
    code location pointed at them."""

    settings: LakeSettings
    instance: dg.DagsterInstance
    resources: dict[str, dg.ConfigurableResource] = field(init=False)

    def __post_init__(self) -> None:
        self.resources = {
            "lake": LakeResource(data_root=self.settings.data_root),
            WAREHOUSE_RESOURCE: warehouse_duckdb(self.settings),
        }

    @property
    def path(self) -> str:
        return self.settings.warehouse_path

    def tables(self) -> LakeTables:
        return open_lake_tables(self.settings)

    def build_hour(self, hour: dt.datetime, assets=(*SILVER_ASSETS, *GOLD_ASSETS)) -> None:
        """Silver and Gold of `hour`, through Dagster."""
        result = dg.materialize(
            list(assets),
            instance=self.instance,
            partition_key=partition_key_for(hour),
            resources={"lake": self.resources["lake"]},
        )
        assert result.success

    def refresh(self) -> dg.ExecuteInProcessResult:
        """Materialize `serving/duckdb`."""
        result = dg.materialize([serving_duckdb], instance=self.instance, resources=self.resources)
        assert result.success
        return result


def write_lake_bronze(settings: LakeSettings) -> None:
    """Trades, quotes and level signals in each of `HOURS`."""
    store = LakeStore.from_settings(settings)
    sample = SAMPLES[SIGNALS.name]
    for index, hour in enumerate(HOURS):
        write_bronze(store, TRADES, bronze_rows(TRADES, trades(300, seed=index, hour=hour)))
        quotes = [
            {**SAMPLES[QUOTES.name], **trade, "bid_px": trade["price"], "ask_px": trade["price"]}
            for trade in trades(200, seed=100 + index, hour=hour)
        ]
        for quote in quotes:
            for name in ("price", "size", "exchange", "conditions", "ts_recv_ns"):
                quote.pop(name, None)
        write_bronze(store, QUOTES, bronze_rows(QUOTES, quotes))
        start_ns = int(hour.timestamp()) * 10**9
        signals = [
            {**sample, "ts_event_ns": start_ns + i * 10**9, "levels": sample["levels"][: 1 + i % 2]}
            for i in range(20)
        ]
        write_bronze(store, SIGNALS, bronze_rows(SIGNALS, signals))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedLake]:
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    write_lake_bronze(settings)
    with dg.instance_for_test() as instance:
        yield ServedLake(settings, instance)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedLake]:
    """Both hours of Silver and Gold, and the warehouse refreshed once."""
    settings = LakeSettings(data_root=str(tmp_path_factory.mktemp("built") / "lake"))
    write_lake_bronze(settings)
    with dg.instance_for_test() as instance:
        lake = ServedLake(settings, instance)
        for hour in HOURS:
            lake.build_hour(hour)
        lake.refresh()
        yield lake


def read_only(path: str) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(path, read_only=True)


def test_every_table_is_a_view_with_the_rows_of_the_catalog(built):
    tables = built.tables()
    expected = {view.name: view for view in lake_views(tables)}
    compared = 0
    with read_only(built.path) as connection:
        listed = connection.sql(
            "select schema_name || '.' || view_name from duckdb_views() where not internal"
        ).fetchall()
        assert {name for (name,) in listed} == set(expected)
        pinned = {
            name: (snapshot, rows)
            for name, snapshot, rows in connection.sql(
                f"select name, snapshot_id, rows from {TABLES_TABLE}"
            ).fetchall()
        }
        for view in expected.values():
            if view.tier == "bronze":
                continue
            iceberg = tables.existing(view.target)
            if iceberg is None:  # a table no run created yet (the daily summary here)
                ((count,),) = connection.sql(f"select count(*) from {view.name}").fetchall()
                assert count == 0 and pinned[view.name][0] is None, view.name
                continue
            current = iceberg.current_snapshot()
            snapshot = None if current is None else current.snapshot_id
            catalog = pl.from_arrow(iceberg.scan(snapshot_id=snapshot).to_arrow())
            assert pinned[view.name] == (snapshot, catalog.height), view.name
            served = connection.sql(f"select * from {view.name}").pl()
            compared += served.height > 0
            assert served.height == catalog.height, view.name
            assert (
                served.select(catalog.columns)
                .sort(catalog.columns)
                .equals(catalog.cast(served.select(catalog.columns).schema).sort(catalog.columns))
            ), view.name
        trades = connection.sql(f"select count(*) from {SILVER_TRADES}").fetchall()
        assert trades == [(600,)]
    assert compared == 5  # Silver trades and quotes, Gold bars, signals and trades_nbbo


def test_the_refresh_records_path_tables_snapshots_and_size(built):
    result = built.refresh()
    (materialization,) = result.asset_materializations_for_node(serving_duckdb.op.name)
    metadata = {name: value.value for name, value in materialization.metadata.items()}
    tables = built.tables()
    assert metadata["path"] == built.path
    assert metadata["tables"] == len(lake_views(tables))
    assert metadata["snapshot_ids"][SILVER_TRADES] == (
        tables.existing("silver/stocks/trades").current_snapshot().snapshot_id
    )
    assert metadata["bytes"] == Path(built.path).stat().st_size > 0
    assert metadata["macros"] == ["bars", "nbbo_at"]
    assert not Path(building_path(built.path)).exists()


def test_bars_macro_returns_a_symbols_bars_of_a_day_in_time_order(built):
    with read_only(built.path) as connection:
        bars = connection.sql("select * from bars('SPY', '2025-12-16')").pl()
        same = connection.sql(
            f"select * from {GOLD_BARS} where symbol = 'SPY' and date = date '2025-12-16' "
            "order by ts_event_ns"
        ).pl()
        assert bars.height > 60  # two hours of minutes
        assert bars.equals(same)
        assert bars["ts_event_ns"].is_sorted()
        assert connection.sql("select count(*) from bars('SPY', date '2025-12-17')").fetchall() == [
            (0,)
        ]
        qqq = connection.sql("select distinct symbol from bars('QQQ', '2025-12-16')").fetchall()
        assert qqq == [("QQQ",)]


def test_nbbo_at_returns_the_quote_the_enriched_trade_holds(built):
    """The macro and `gold.stocks_trades_nbbo` apply one as-of rule: for every SPY trade the
    quote `nbbo_at` finds is the one the enriched row joined (or none for both)."""
    with read_only(built.path) as connection:
        enriched = connection.sql(
            "select ts_event_ns, quote_event_id from gold.stocks_trades_nbbo "
            "where symbol = 'SPY' order by ts_event_ns limit 40"
        ).fetchall()
        assert len(enriched) == 40 and any(quote is not None for _, quote in enriched)
        for ts, quote_event_id in enriched:
            found = connection.sql(f"select event_id from nbbo_at('SPY', {ts})").fetchall()
            assert found == ([] if quote_event_id is None else [(quote_event_id,)])
        assert connection.sql("select * from nbbo_at('SPY', 0)").fetchall() == []


QUERY = (
    f"select (select snapshot_id from {TABLES_TABLE} where name = '{SILVER_TRADES}'), "
    f"(select count(*) from {SILVER_TRADES}), "
    f"(select snapshot_id from {TABLES_TABLE} where name = '{GOLD_BARS}'), "
    f"(select count(*) from {GOLD_BARS})"
)
"""One version's answer: the Silver trades' and Gold bars' pinned snapshots and row counts."""
READER = """
import json, os, sys
import duckdb

path, stop, query, kind = sys.argv[1:]
held = duckdb.connect(path, read_only=True) if kind == "held" else None
while not os.path.exists(stop):
    try:
        if held is None:
            with duckdb.connect(path, read_only=True) as connection:
                (row,) = connection.sql(query).fetchall()
        else:
            (row,) = held.sql(query).fetchall()
        print(json.dumps(list(row)), flush=True)
    except Exception as error:
        print(json.dumps(f"{type(error).__name__}: {error}"), flush=True)
"""
"""Runs `query` on the warehouse in a loop until `stop` exists, printing each answer (or
error) as a JSON line: through a new connection each time (`fresh`) or through one opened at
the start (`held`). One process each: DuckDB shares one open database per path within a
process, so a new connection beside a held one would still read the file it opened."""


class Reader:
    """The reader script in its own process, its answers collected by a thread."""

    def __init__(self, path: str, stop: Path, kind: str) -> None:
        self.stop = stop
        self.answers: list[list[int] | str] = []
        self.changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, "-c", READER, path, str(stop), QUERY, kind],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.thread = threading.Thread(target=self._collect, daemon=True)
        self.thread.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.answers.append(json.loads(line))
                self.changed.notify_all()

    def wait_for(self, count: int) -> list[int] | str:
        """Wait until `count` more answers came; the last one."""
        with self.changed:
            target = len(self.answers) + count
            assert self.changed.wait_for(lambda: len(self.answers) >= target, timeout=WAIT_S)
            return self.answers[-1]

    def stop_and_collect(self) -> list[tuple[int, ...] | str]:
        """Stop the process; every answer it gave."""
        self.stop.touch()
        self.process.wait(timeout=WAIT_S)
        self.thread.join(timeout=WAIT_S)
        return [a if isinstance(a, str) else tuple(a) for a in self.answers]


def served_version(tables: LakeTables) -> list[int]:
    """What the reader's query answers for the catalog as it is now."""
    answer = []
    for target in ("silver/stocks/trades", "gold/stocks/bars_1m"):
        iceberg = tables.existing(target)
        assert iceberg is not None
        snapshot = iceberg.current_snapshot().snapshot_id
        answer += [snapshot, iceberg.scan(snapshot_id=snapshot).to_arrow().num_rows]
    return answer


def test_the_file_stays_readable_while_it_is_refreshed(served, tmp_path):
    served.build_hour(HOURS[0])
    served.refresh()
    first = served_version(served.tables())
    stop = tmp_path / "stop"
    fresh, held = Reader(served.path, stop, "fresh"), Reader(served.path, stop, "held")
    try:
        assert fresh.wait_for(2) == held.wait_for(2) == first
        served.build_hour(HOURS[1])
        second = served_version(served.tables())
        assert second != first
        for _ in range(4):
            served.refresh()
            assert fresh.wait_for(2) == second
            assert held.wait_for(2) == first  # the file it opened, still whole
    finally:
        answers = {"fresh": fresh.stop_and_collect(), "held": held.stop_and_collect()}
    assert set(answers["fresh"]) == {tuple(first), tuple(second)}, set(answers["fresh"])
    assert set(answers["held"]) == {tuple(first)}, set(answers["held"])


def test_a_leftover_build_file_is_replaced_and_a_build_elsewhere_refused(served, tmp_path):
    served.build_hour(HOURS[0], assets=[a for a in SILVER_ASSETS if a.key.path[1] == "stocks"])
    building = Path(building_path(served.path))
    building.parent.mkdir(parents=True, exist_ok=True)
    building.write_bytes(b"half a file from a killed refresh")
    served.refresh()
    with read_only(served.path) as connection:
        assert connection.sql(f"select count(*) from {SILVER_TRADES}").fetchall() == [(300,)]
    with pytest.raises(ValueError, match="folder of LAKE_DUCKDB_PATH"):
        build_warehouse(served.tables(), str(tmp_path / "elsewhere" / "lake.duckdb"))
    with pytest.raises(ValueError, match="another file"):
        build_warehouse(served.tables(), served.path)


def test_a_burst_of_commits_gives_one_refresh_request(served):
    silver = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]]
    instance = served.instance

    def tick() -> dg.RunRequest | dg.SkipReason:
        return warehouse_refresh_sensor(dg.build_sensor_context(instance=instance))

    assert isinstance(tick(), dg.SkipReason)  # nothing committed yet
    for hour in HOURS:  # two commits in quick succession
        served.build_hour(hour, silver)
    assert isinstance(tick(), dg.RunRequest)
    served.refresh()
    assert isinstance(tick(), dg.SkipReason)
    assert warehouse_refresh_sensor.minimum_interval_seconds == REFRESH_INTERVAL_S == 60


def test_no_refresh_is_requested_while_one_is_in_progress(served):
    silver = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]]
    served.build_hour(HOURS[0], silver)
    served.refresh()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={WAREHOUSE_KEY})
    run = served.instance.create_run_for_job(job, asset_selection=frozenset({WAREHOUSE_KEY}))
    served.build_hour(HOURS[1], silver)  # a commit after that run was planned
    assert refresh_due(served.instance) is None  # one at a time: asked again once it ends
    served.instance.report_run_canceled(run)
    assert refresh_due(served.instance) is not None


def test_a_failed_refresh_is_requested_again_and_names_the_missing_path(
    served, tmp_path, monkeypatch
):
    silver = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]]
    served.build_hour(HOURS[0], silver)
    monkeypatch.setenv("LAKE_CATALOG_URI", f"sqlite:///{tmp_path}/s3-catalog.db")
    s3_lake = LakeResource(data_root="s3://market/lake", use_s3=True)
    failed = dg.materialize(
        [serving_duckdb],
        instance=served.instance,
        resources={**served.resources, "lake": s3_lake},
        raise_on_error=False,
    )
    assert not failed.success
    (failure,) = failed.get_step_failure_events()
    assert "LAKE_DUCKDB_PATH is required" in str(failure.step_failure_data.error)
    assert refresh_due(served.instance) is not None


def test_the_code_location_builds_the_warehouse_with_dagster_duckdb():
    resource = defs.resources[WAREHOUSE_RESOURCE]
    assert isinstance(resource, DuckDBResource)
    assert resource.database == building_path(LakeSettings.from_env().warehouse_path)
    graph = defs.resolve_asset_graph()
    node = graph.get(WAREHOUSE_KEY)
    assert node.parent_keys == set(SERVED_KEYS)
    assert {key.path[0] for key in node.parent_keys} == {"silver", "gold"}
    assert node.partitions_def is None
    spec = defs.resolve_assets_def(WAREHOUSE_KEY).specs_by_key[WAREHOUSE_KEY]
    assert spec.group_name == "serving" and spec.kinds == {"duckdb"}
    assert spec.owners == ["team:data-platform"]
    assert WAREHOUSE_RESOURCE in serving_duckdb.required_resource_keys
    assert defs.resolve_sensor_def("warehouse_refresh_sensor") is warehouse_refresh_sensor


def sensor_result(instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    return warehouse_refresh_sensor(dg.build_sensor_context(instance=instance))


def test_an_s3_lake_without_a_warehouse_path_is_never_refreshed(served, monkeypatch):
    """A deployment on S3 without LAKE_DUCKDB_PATH: the sensor skips with the reason instead
    of requesting a run that can only fail, every minute, forever."""
    silver = [a for a in SILVER_ASSETS if a.key.path[1:] == ["stocks", "trades"]]
    served.build_hour(HOURS[0], silver)
    assert isinstance(sensor_result(served.instance), dg.RunRequest)
    monkeypatch.setenv("DATA_ROOT", "s3://market/lake")
    monkeypatch.setenv("USE_S3", "true")
    skipped = sensor_result(served.instance)
    assert isinstance(skipped, dg.SkipReason) and "LAKE_DUCKDB_PATH" in skipped.skip_message
    monkeypatch.setenv("LAKE_DUCKDB_PATH", str(served.path))
    assert isinstance(sensor_result(served.instance), dg.RunRequest)


def test_an_s3_lake_without_a_warehouse_path_still_loads():
    settings = LakeSettings(data_root="s3://market/lake", use_s3=True)
    assert warehouse_duckdb(settings).database == ":memory:"
    located = LakeSettings(data_root="s3://market/lake", use_s3=True, duckdb_path="/w/l.duckdb")
    assert warehouse_duckdb(located).database == "/w/l.duckdb.building"
