"""Run overhead: one hour of every derived asset, queued through the daemon vs in process.

Builds one Bronze hour of every table (by default one hour of the simulator's default
market session, 360,000 events, decoded and written as the ingest would), then materializes
the six Silver and two Gold assets of that hour (with their blocking checks) four ways, in
turns, on the same lake and machine:

* in process, in-memory instance: `dg.materialize(...)` in this process (imports done), the
  cost of the work itself;
* in process, on the deployment's instance: the same, recording every event in the
  deployment's storage;
* `dagster asset materialize`, on the deployment's instance: the in-process materialization
  as users run it, a new process that imports Dagster and the code location (the goal's
  baseline: a queued run is that plus the queue, the daemon and the code server);
* queued: a real deployment on a temporary `DAGSTER_HOME` (PostgreSQL storage as in
  docker/dagster.yaml; `--storage dagster-postgres` the same database through
  dagster-postgres' own class, `--storage sqlite` SQLite; `QueuedRunCoordinator` dequeuing
  every `--dequeue-interval` s): `dagster code-server start`, `dagster-webserver` and
  `dagster-daemon run` as separate processes. The run is launched through the webserver's
  GraphQL API (as the UI launches it) and timed from the launch until the webserver reports
  SUCCESS: the daemon dequeues it, the code server spawns the run worker, the code
  location's executor runs the steps.

Each run first clears Silver and Gold, so all do the same work. The code location is
`lake_platform.definitions` as committed (`--executor definitions`, the default), or the same
`Definitions` with another executor (`in_process`, `multiprocess` = Dagster's default, spawn
per step, `forkserver` = multiprocess with `lake_platform.definitions` preloaded). The
sensors are stopped before the runs so that their ticks do not compete for the cores. Each
run's own event log tells where its time went: run creation, queue wait, run worker start,
code location load, steps (the sum of the steps' own durations alongside), run end. Prints
medians, the ratios and the fixed cost of a queued run (a new run process importing Dagster
and the code location: ~3–4 s whatever the hour holds, so a tiny `--events` shows a larger
ratio); asserts nothing.

    uv run python benchmarks/run_overhead.py [--events 360000] [--repeat 3]
        [--executor definitions|in_process|multiprocess|forkserver]
        [--storage postgres|dagster-postgres|sqlite] [--dequeue-interval 1]
"""

import argparse
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl
import yaml
from dagster._core.events.log import EventLogEntry
from dagster._core.instance.ref import InstanceRef
from dagster_shared.record import replace

from lake_platform.definitions import defs
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.partitions import partition_key_for
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.schemas import BY_NAME, decode_batch
from lake_platform.settings import LakeSettings
from lake_platform.simulate.market import SessionSpec, session
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import part_file_name, partition_folder
from lake_platform.timestamps import HOUR_NS
from lake_platform_tests.servers import PostgresServer

if TYPE_CHECKING:
    from dagster_graphql import DagsterGraphQLClient

HOUR = dt.datetime(2025, 12, 16, 14, tzinfo=dt.UTC)
PARTITION = partition_key_for(HOUR)
SIMULATED_HOUR_EVENTS = int(SessionSpec().rate * 3_600)
"""One hour of `lake-platform publish`'s default session (100 events/s): 360,000 events."""
LOCATION = "lake_platform"
DERIVED = [*SILVER_ASSETS, *GOLD_ASSETS]
EXECUTORS: dict[str, dg.ExecutorDefinition] = {
    "in_process": dg.in_process_executor,
    "multiprocess": dg.multiprocess_executor,
    "forkserver": dg.multiprocess_executor.configured(
        {"start_method": {"forkserver": {"preload_modules": ["lake_platform.definitions"]}}}
    ),
}
CHOICES = ("definitions", *EXECUTORS)
POLL_S = 0.1
READY_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 600.0
INSTANCE_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 4
    dequeue_interval_seconds: {dequeue_s}
telemetry:
  enabled: false
"""
WORKSPACE_YAML = """\
load_from:
  - grpc_server: {{host: 127.0.0.1, port: {port}, location_name: {location}}}
"""
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""Both runs log warnings only to their terminal (their events all go to the instance)."""
LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
} } } }"""
SENSORS = """
query Sensors($selector: RepositorySelector!) {
  sensorsOrError(repositorySelector: $selector) {
    ... on Sensors { results { name sensorState { id status } } }
  }
}"""
PRODUCTION_INSTANCE = Path(__file__).parents[1] / "docker" / "dagster.yaml"
"""Its `storage` block (PostgreSQL through `{env: DAGSTER_POSTGRES_*}`) is the deployment's."""
STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) { __typename ... on PythonError { message } }
}"""


@contextmanager
def instance_yaml(storage: str, folder: Path, dequeue_s: int) -> Iterator[str]:
    """The deployment's dagster.yaml; with `postgres`, a PostgreSQL server runs meanwhile and
    the `DAGSTER_POSTGRES_*` variables of docker/dagster.yaml's storage point at it (in this
    process's environment, which the services inherit). `dagster-postgres` is the same
    database through dagster-postgres' own storage class (a connection per statement)."""
    queued = INSTANCE_YAML.format(dequeue_s=dequeue_s)
    if storage == "sqlite":
        yield queued
        return
    production = yaml.safe_load(PRODUCTION_INSTANCE.read_text())
    with PostgresServer.start(folder / "postgres") as server:
        os.environ.update(
            DAGSTER_POSTGRES_HOST="127.0.0.1",
            DAGSTER_POSTGRES_PORT=str(server.port),
            DAGSTER_POSTGRES_USER=server.user,
            DAGSTER_POSTGRES_PASSWORD=server.password,
            DAGSTER_POSTGRES_DB=server.database,
        )
        block = production["storage"]
        if storage == "dagster-postgres":
            block = {"postgres": block["custom"]["config"]}
        yield queued + yaml.safe_dump({"storage": block})


def variant_definitions(executor: str) -> dg.Definitions:
    """The committed code location, or the same with `executor` instead of its own."""
    return defs if executor == "definitions" else replace(defs, executor=EXECUTORS[executor])


@dg.definitions
def benchmark_location() -> dg.Definitions:
    """The code location the code server loads: `RUN_OVERHEAD_EXECUTOR` picks the variant."""
    return variant_definitions(os.environ["RUN_OVERHEAD_EXECUTOR"])


def executor_name(executor: str) -> str:
    """The name of the executor a run of the derived assets uses in that variant."""
    job = variant_definitions(executor).resolve_implicit_global_asset_job_def()
    return job.executor_def.name


# --- the Bronze hour -------------------------------------------------------------------------


def build_bronze(store: LakeStore, events: int, seed: int) -> dict[str, int]:
    """Write `events` simulated events of HOUR as Bronze files; rows per table."""
    end_ns = int(HOUR.timestamp()) * 10**9 + HOUR_NS - 1
    spec = SessionSpec(
        minutes=60, rate=events / 3_600, late_rate=0, bad_rate=0, seed=seed, end_ns=end_ns
    )
    payloads: dict[str, list[tuple[str, bytes]]] = {}
    for message in session(spec):
        assert message.schema is not None
        payloads.setdefault(message.schema, []).append((message.subject, message.payload))
    return {name: write_table(store, name, messages, end_ns) for name, messages in payloads.items()}


def write_table(store: LakeStore, name: str, messages: list[tuple[str, bytes]], now: int) -> int:
    """Decode one table's messages and write them as one Bronze file per partition value."""
    schema = BY_NAME[name]
    decoded = decode_batch(
        schema,
        [payload for _, payload in messages],
        received_ns=[now] * len(messages),
        earliest_ns=0,
        now_ns=now,
    )
    if decoded.rejections:
        raise SystemExit(f"{name}: the simulator's events were rejected: {decoded.rejections[:3]}")
    rows = decoded.rows.with_columns(
        _stream_seq=pl.int_range(1, decoded.rows.height + 1, dtype=pl.Int64),
        _subject=pl.Series([subject for subject, _ in messages]).gather(decoded.positions),
    ).select(list(schema.bronze_schema))
    for (value,), part in rows.partition_by(schema.partition_column, as_dict=True).items():
        folder = f"bronze/{schema.table}/{partition_folder(schema.partition_column, value, HOUR)}"
        file = part.select(schema.bronze_file_schema.names())  # as the ingest writes it
        store.write_parquet(file, f"{folder}/{part_file_name(HOUR)}")
    return rows.height


def clear_derived(store: LakeStore) -> None:
    """Remove every Silver and Gold file, so each run rebuilds the hour from nothing."""
    store.delete([*store.list_files("silver"), *store.list_files("gold")])


# --- in process ------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One run: wall seconds, what it produced (both ways must agree), its phases (seconds)."""

    seconds: float
    materializations: int
    checks_passed: int
    checks: int
    phases: dict[str, float]


def in_process(store: LakeStore, instance: dg.DagsterInstance) -> Outcome:
    """`dg.materialize` of the derived assets for the hour in this process, on `instance`."""
    clear_derived(store)
    resources = {"lake": LakeResource(data_root=store.root)}
    started_at, start = time.time(), time.perf_counter()
    result = dg.materialize(DERIVED, QUIET_RUN, instance, resources, partition_key=PARTITION)
    seconds = time.perf_counter() - start
    events = run_events(instance, result.run_id)
    marks = [
        ("until the first step", first_at(events, is_type("STEP_START"))),
        ("steps (first start to last end)", last_step_end(events)),
        ("run end", started_at + seconds),
    ]
    return outcome_of(seconds, events, phases(started_at, marks, events))


def command_line(store: LakeStore, running: "Deployment") -> Outcome:
    """`dagster asset materialize` of the hour on the deployment's instance, as a user types
    it: a new process that imports Dagster, loads the code location and runs the steps in
    process."""
    clear_derived(store)
    command = [
        str(Path(sys.executable).parent / "dagster"),
        *("asset", "materialize", *code_location_args(running.executor)),
        *("--select", ",".join(asset.key.to_user_string() for asset in DERIVED)),
        *("--partition", PARTITION, "--config-json", json.dumps(QUIET_RUN)),
    ]
    started_at, start = time.time(), time.perf_counter()
    subprocess.run(command, env=running.env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    (run,) = running.instance.get_runs(limit=1)
    events = run_events(running.instance, run.run_id)
    marks = [
        ("process start, imports, code location load", first_at(events, is_type("PIPELINE_START"))),
        ("until the first step", first_at(events, is_type("STEP_START"))),
        ("steps (first start to last end)", last_step_end(events)),
        ("run end and process exit", started_at + seconds),
    ]
    return outcome_of(seconds, events, phases(started_at, marks, events))


# --- the queued deployment -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def service(command: Sequence[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """One process in its own process group; stopped (the group, by its id) on exit."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group; after its leader exits (or 30 s), SIGKILL what is left of
    the group (a hung step worker ignores SIGTERM)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def wait_for(what: str, ready: Callable[[], bool], logs: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not ready after {READY_TIMEOUT_S:.0f} s; logs in {logs}")
        time.sleep(0.5)


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def grpc_serving(port: int) -> bool:
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.client import DagsterGrpcClient

    try:
        DagsterGrpcClient(port=port, host="127.0.0.1").ping("ready?")
    except DagsterUserCodeUnreachableError:
        return False
    return True


@dataclass
class Deployment:
    """A running code server, webserver and daemon on one instance."""

    home: Path
    client: "DagsterGraphQLClient"
    instance: dg.DagsterInstance
    env: dict[str, str]
    """The services' environment (instance, lake, code location variant)."""
    executor: str

    def location_loaded(self) -> bool:
        """Whether the webserver has loaded the code location (raises on a load error)."""
        entries = self.client._execute(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
        for entry in entries:
            kind = (entry["locationOrLoadError"] or {}).get("__typename")
            if kind == "PythonError":  # the code server was still starting: load it again
                self.client.reload_repository_location(entry["name"])
            elif entry["loadStatus"] == "LOADED" and kind:
                return True
        return False

    def running_sensors(self) -> list[dict]:
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
        found = self.client._execute(SENSORS, {"selector": selector})["sensorsOrError"]["results"]
        return [sensor for sensor in found if sensor["sensorState"]["status"] == "RUNNING"]

    def stop_sensors(self) -> list[str]:
        """Stop every running sensor of the location; their names.

        A stop can race with the daemon storing a default-running sensor's first state: those
        are stopped again on the next round.
        """
        stopped = set()
        while sensors := self.running_sensors():
            for sensor in sensors:
                self.client._execute(STOP_SENSOR, {"id": sensor["sensorState"]["id"]})
                stopped.add(sensor["name"])
            time.sleep(0.5)
        return sorted(stopped)


def code_location_args(executor: str) -> list[str]:
    """The `dagster` CLI options that load the code location of `executor`'s variant."""
    if executor == "definitions":
        return ["-m", "lake_platform.definitions"]
    return ["-f", str(Path(__file__).absolute()), "-a", "benchmark_location"]


def commands(executor: str, grpc_port: int, web_port: int, workspace: Path) -> dict[str, list]:
    """The three services, as docker/compose.yaml runs them, on loopback ports."""
    code = code_location_args(executor)
    bin_dir = Path(sys.executable).parent
    return {
        "code-server": [bin_dir / "dagster", "code-server", "start", "-p", grpc_port, *code],
        "webserver": [bin_dir / "dagster-webserver", "-p", web_port, "-w", workspace],
        "daemon": [bin_dir / "dagster-daemon", "run", "-w", workspace],
    }


@contextmanager
def deployment(folder: Path, lake_root: str, executor: str, config: str) -> Iterator[Deployment]:
    """Code server, webserver and daemon on a temporary instance (`config` is its
    dagster.yaml), sensors stopped."""
    from dagster_graphql import DagsterGraphQLClient  # not in the code location's imports

    home, logs = folder / "home", folder / "logs"
    home.mkdir()
    logs.mkdir()
    (home / "dagster.yaml").write_text(config)
    grpc_port, web_port = free_port(), free_port()
    workspace = folder / "workspace.yaml"
    workspace.write_text(WORKSPACE_YAML.format(port=grpc_port, location=LOCATION))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DATA_ROOT": lake_root,
        "USE_S3": "false",
        "NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "RUN_OVERHEAD_EXECUTOR": executor,
    }
    with ExitStack() as stack:
        for name, command in commands(executor, grpc_port, web_port, workspace).items():
            args = [str(arg) for arg in command] + ["-h", "127.0.0.1"] * (name != "daemon")
            stack.enter_context(service(args, env, logs / f"{name}.log"))
            if name == "code-server":
                wait_for("code server", lambda: grpc_serving(grpc_port), logs)
        wait_for("webserver", lambda: answers(f"http://127.0.0.1:{web_port}/server_info"), logs)
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        client = DagsterGraphQLClient("127.0.0.1", web_port)
        running = Deployment(home, client, instance, env, executor)
        stack.callback(instance.dispose)
        wait_for("code location", running.location_loaded, logs)
        print(f"  sensors stopped: {', '.join(running.stop_sensors()) or 'none'}", flush=True)
        yield running


# --- the queued run --------------------------------------------------------------------------

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
RUN_PROCESS_STARTED = "Started process for run"
"""The engine event the run worker reports once it runs (spawned, Dagster imported)."""


def queued(store: LakeStore, running: Deployment) -> Outcome:
    """Launch the hour through GraphQL as the UI does; wait until the run has ended."""
    clear_derived(store)
    launched_at, start = time.time(), time.perf_counter()
    run_id = running.client.submit_job_execution(
        "__ASSET_JOB",
        repository_location_name=LOCATION,
        repository_name="__repository__",
        run_config=QUIET_RUN,
        tags={"dagster/partition": PARTITION},
        asset_selection=[asset.key for asset in DERIVED],
    )
    deadline = start + RUN_TIMEOUT_S
    while (status := running.client.get_run_status(run_id).value) not in TERMINAL:
        if time.perf_counter() > deadline:
            raise SystemExit(f"run {run_id} still {status} after {RUN_TIMEOUT_S:.0f} s")
        time.sleep(POLL_S)
    seconds = time.perf_counter() - start
    if status != "SUCCESS":
        raise SystemExit(f"queued run {run_id} ended {status}; see the instance in {running.home}")
    events = run_events(running.instance, run_id)
    started = first_at(events, lambda e: (e.message or "").startswith(RUN_PROCESS_STARTED))
    marks = [
        ("webserver creates and enqueues the run", first_at(events, is_type("PIPELINE_ENQUEUED"))),
        ("queue wait until the daemon launches it", first_at(events, is_type("PIPELINE_STARTING"))),
        ("run worker start (spawn, import Dagster)", started),
        ("code location load and plan", first_at(events, is_type("PIPELINE_START"))),
        ("until the first step", first_at(events, is_type("STEP_START"))),
        ("steps (first start to last end)", last_step_end(events)),
        ("run end", first_at(events, is_type("PIPELINE_SUCCESS"))),
        ("until the client sees SUCCESS", launched_at + seconds),
    ]
    return outcome_of(seconds, events, phases(launched_at, marks, events))


# --- event logs ------------------------------------------------------------------------------


def run_events(instance: dg.DagsterInstance, run_id: str) -> list[EventLogEntry]:
    return [entry for entry in instance.all_logs(run_id) if entry.dagster_event]


def is_type(name: str) -> Callable[[EventLogEntry], bool]:
    return lambda entry: entry.get_dagster_event().event_type_value == name


def first_at(events: list[EventLogEntry], matches: Callable[[EventLogEntry], bool]) -> float:
    """The time of the first event that `matches`."""
    return next(entry.timestamp for entry in events if matches(entry))


def last_step_end(events: list[EventLogEntry]) -> float:
    ends = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
    return max(entry.timestamp for entry in events if entry.dagster_event_type in ends)


def step_seconds(events: list[EventLogEntry]) -> float:
    """Sum over steps of STEP_START -> STEP_SUCCESS: the work, without step process starts."""
    starts: dict[str | None, float] = {}
    total = 0.0
    for entry in events:
        if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
            starts[entry.step_key] = entry.timestamp
        elif entry.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS:
            total += entry.timestamp - starts[entry.step_key]
    return total


def phases(
    start: float, marks: list[tuple[str, float]], events: list[EventLogEntry]
) -> dict[str, float]:
    """Seconds from `start` to the first mark and between marks; the steps' own sum."""
    result, previous = {}, start
    for name, at in marks:
        result[name], previous = at - previous, at
    result["(sum of the step durations)"] = step_seconds(events)
    return result


def outcome_of(seconds: float, events: list[EventLogEntry], spent: dict[str, float]) -> Outcome:
    """What the run produced, from its event log."""
    types = [entry.dagster_event_type for entry in events]
    checks = [
        entry.get_dagster_event().asset_check_evaluation_data.passed
        for entry in events
        if entry.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION
    ]
    materialized = types.count(dg.DagsterEventType.ASSET_MATERIALIZATION)
    return Outcome(seconds, materialized, sum(checks), len(checks), spent)


# --- the report ------------------------------------------------------------------------------


def describe(outcome: Outcome) -> str:
    return (
        f"{outcome.seconds:.2f} s ({outcome.materializations} assets, "
        f"{outcome.checks_passed}/{outcome.checks} checks passed)"
    )


def median_phases(outcomes: list[Outcome]) -> dict[str, float]:
    names = outcomes[0].phases
    return {name: statistics.median(outcome.phases[name] for outcome in outcomes) for name in names}


WAYS = {
    "memory": "in process, in-memory instance",
    "instance": "in process, on the deployment's instance",
    "command": "`dagster asset materialize`, on the deployment's instance",
    "queued": "queued run, launch to SUCCESS",
}


def report(runs: dict[str, list[Outcome]], executor: str) -> None:
    """Medians of each way, where their time went, and the ratios."""
    seconds = {way: statistics.median(o.seconds for o in done) for way, done in runs.items()}
    print(f"\nexecutor of the derived assets' runs: {executor}")
    for way, outcomes in runs.items():
        print(f"{WAYS[way]} (median of {len(outcomes)}): {seconds[way]:6.2f} s")
        for name, spent in median_phases(outcomes).items():
            print(f"    {name:<44} {spent:6.2f} s")
    for way in ("command", "instance", "memory"):
        ratio = seconds["queued"] / seconds[way]
        print(f"ratio queued / {WAYS[way]}: {ratio:.2f}" + " (goal <= 2)" * (way == "command"))
    fixed = seconds["queued"] - seconds["memory"]
    print(f"fixed cost of a queued run (queued - in-memory in process): {fixed:.2f} s")
    produced = {(o.materializations, o.checks_passed, o.checks) for d in runs.values() for o in d}
    if len(produced) > 1:
        print(f"WARNING: the runs produced different results: {produced}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events",
        type=int,
        default=SIMULATED_HOUR_EVENTS,
        help="events in the Bronze hour (default: one hour of the simulator's default session)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs each way (medians shown)")
    parser.add_argument("--executor", choices=CHOICES, default="definitions")
    parser.add_argument(
        "--dequeue-interval", type=int, default=1, help="QueuedRunCoordinator dequeue seconds"
    )
    parser.add_argument(
        "--storage", choices=("postgres", "dagster-postgres", "sqlite"), default="postgres"
    )
    args = parser.parse_args()
    if min(args.events, args.repeat, args.dequeue_interval) <= 0:
        parser.error("--events, --repeat and --dequeue-interval must be positive")
    executor = executor_name(args.executor)
    print(
        f"code location: {args.executor} (executor {executor}); {args.storage} storage; "
        f"hour {PARTITION}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-run-overhead-") as tmp:
        folder = Path(tmp)
        store = LakeStore.from_settings(LakeSettings(data_root=str(folder / "lake")))
        rows = build_bronze(store, args.events, args.seed)
        print(f"bronze hour: {sum(rows.values()):,} rows ({json.dumps(rows)})", flush=True)
        runs: dict[str, list[Outcome]] = {way: [] for way in WAYS}
        with (
            instance_yaml(args.storage, folder, args.dequeue_interval) as config,
            deployment(folder, store.root, args.executor, config) as running,
        ):
            for attempt in range(1, args.repeat + 1):
                with dg.DagsterInstance.ephemeral() as memory:
                    runs["memory"].append(in_process(store, memory))
                runs["instance"].append(in_process(store, running.instance))
                runs["command"].append(command_line(store, running))
                runs["queued"].append(queued(store, running))
                done = "; ".join(f"{way} {describe(o[-1])}" for way, o in runs.items())
                print(f"  run {attempt}: {done}", flush=True)
        report(runs, executor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
