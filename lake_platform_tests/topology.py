"""The compose topology (docker/compose.yaml) as local processes on 127.0.0.1.

There is no Docker engine here, so the topology test reads the compose file and starts every
service of ours with **its command and environment from the file**, interpolated from a test
`.env` made from docker/.env.example, as a local process of the project's venv in its own
process group. The third-party services come from real binaries: PostgreSQL, a 3-node NATS
cluster and SeaweedFS. What containers get from their network and image is mapped:

- service host names and container ports (`nats-1:4222`, `DAGSTER_POSTGRES_HOST=postgres`
  with its `_PORT`) become 127.0.0.1 and the local servers' ports;
- ports a service listens on (`-p 4000`, `LAKE_METRICS_PORT=9100`, `0.0.0.0`) become free
  loopback ports of that instance, so two ingest replicas do not collide;
- the image's paths (`/opt/dagster/home`, `/opt/dagster/workspace.yaml`) become a temporary
  DAGSTER_HOME holding docker/dagster.yaml and docker/workspace.yaml pointed at the local
  code server.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
import yaml

from lake_platform.embedded_nats import HOST, StopsOnExit, terminate_group
from lake_platform_tests.servers import (
    LaterProcess,
    NatsCluster,
    PostgresServer,
    S3Server,
    claim_ports,
    find_postgres_bin,
    release_ports,
)

REQUIRE_POSTGRES_ENV = "LAKE_REQUIRE_POSTGRES"
REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
VENV_BIN = Path(sys.executable).parent
CONTAINER_HOME = "/opt/dagster/home"
"""DAGSTER_HOME of the image (docker/Dockerfile), holding docker/dagster.yaml."""
CONTAINER_WORKSPACE = "/opt/dagster/workspace.yaml"
THIRD_PARTY = {"nats": 4222, "seaweedfs": 8333, "postgres": 5432}
"""Container ports of the third-party services (NATS client, SeaweedFS S3, PostgreSQL)."""
STOP_ORDER = ("simulator", "ingest", "daemon", "webserver", "code-server", "init")
"""Ours stop before the servers they use (a code server outliving Postgres hangs)."""
STOP_TIMEOUT_S = 30.0
T = TypeVar("T")
HEALTHCHECK_TIMEOUT_S = 120.0
"""Local health checks share the machine with everything else: no container CPU budget."""


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is not installed, unless CI requires it
    (`LAKE_REQUIRE_POSTGRES=1`): then fail."""
    try:
        find_postgres_bin()
    except FileNotFoundError as missing:
        message = f"{missing} (apt-get install postgresql to run this test)"
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(f"{message}; {REQUIRE_POSTGRES_ENV} is set", pytrace=False)
        pytest.skip(message)


# --- Reading the compose file --------------------------------------------------------------

_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:?[-?])([^}]*))?\}|\$(\w+)")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation of ``value``: ``${VAR}``, ``$VAR``, ``${VAR:-default}`` (unset
    or empty), ``${VAR-default}`` (unset), ``${VAR:?error}``/``${VAR?error}``, ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        operator, argument = match.group(2) or "", match.group(3) or ""
        found = variables.get(name)
        missing = found is None or (operator.startswith(":") and not found)
        if missing and operator.endswith("?"):
            raise KeyError(f"compose variable {name} is required: {argument}")
        if missing and operator.endswith("-"):
            return argument
        return found or ""

    return _VARIABLE.sub(replace, value)


@dataclass(frozen=True)
class ComposeService:
    """What a service of compose.yaml runs: command, environment (not yet interpolated),
    whether it reads the `.env` file, its replicas and its health check command."""

    name: str
    command: tuple[str, ...]
    environment: dict[str, str]
    reads_env_file: bool
    replicas: int
    healthcheck: tuple[str, ...] | None


def _environment(raw: object) -> dict[str, str]:
    if isinstance(raw, list):
        return dict(str(item).partition("=")[::2] for item in raw)
    return {str(key): "" if value is None else str(value) for key, value in (raw or {}).items()}


def _healthcheck(raw: dict[str, Any] | None) -> tuple[str, ...] | None:
    test = (raw or {}).get("test")
    if not test or raw.get("disable") or test == ["NONE"]:
        return None
    if isinstance(test, str):
        return ("/bin/sh", "-c", test)
    kind, *rest = test
    return ("/bin/sh", "-c", rest[0]) if kind == "CMD-SHELL" else tuple(rest)


def load_compose(path: Path = DOCKER / "compose.yaml") -> dict[str, ComposeService]:
    """Every service of the compose file (YAML anchors and `<<` merges resolved)."""
    document = yaml.safe_load(path.read_text())
    services = {}
    for name, spec in document["services"].items():
        command = spec.get("command") or ()
        services[name] = ComposeService(
            name=name,
            command=tuple(command.split() if isinstance(command, str) else map(str, command)),
            environment=_environment(spec.get("environment")),
            reads_env_file=bool(spec.get("env_file")),
            replicas=int((spec.get("deploy") or {}).get("replicas", 1)),
            healthcheck=_healthcheck(spec.get("healthcheck")),
        )
    return services


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def with_options(command: Iterable[str], options: Mapping[str, str]) -> list[str]:
    """``command`` with the values of ``options`` replaced (appended when absent), as
    `docker compose run SERVICE …` would override them."""
    args = list(command)
    for option, value in options.items():
        if option in args:
            args[args.index(option) + 1] = value
        else:
            args += [option, value]
    return args


# --- Mapping compose's network and image onto 127.0.0.1 ------------------------------------

_ADDRESS = re.compile(r"(?<![\w.-])([A-Za-z][\w.-]*|\d+\.\d+\.\d+\.\d+):(\d+)\b")
_LOCAL_NAMES = {"0.0.0.0", "127.0.0.1", "localhost"}
_PORT_FLAGS = {"-p", "--port"}


@dataclass(frozen=True)
class Rewriter:
    """Maps one service instance's command and environment onto loopback."""

    remote: Mapping[tuple[str, int], int]
    """(service host name, container port) -> local port of that service."""
    own: Mapping[int, int]
    """Container ports this instance listens on -> its local ports."""
    paths: Mapping[str, str]
    """Paths of the image -> local paths."""

    def text(self, value: str) -> str:
        value = _ADDRESS.sub(self._address, value)
        for container, local in self.paths.items():
            value = value.replace(container, local)
        return value

    def _address(self, match: re.Match[str]) -> str:
        host, port = match.group(1), int(match.group(2))
        if (host, port) in self.remote:
            return f"{HOST}:{self.remote[host, port]}"
        if host in _LOCAL_NAMES and port in self.own:
            return f"{HOST}:{self.own[port]}"
        return match.group(0)

    def command(self, args: Iterable[str]) -> list[str]:
        rewritten: list[str] = []
        for arg in args:
            previous = rewritten[-1] if rewritten else ""
            if previous in _PORT_FLAGS and arg.isdigit() and int(arg) in self.own:
                rewritten.append(str(self.own[int(arg)]))
            elif arg == "0.0.0.0":
                rewritten.append(HOST)
            else:
                rewritten.append(self.text(arg))
        return rewritten

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``X_HOST`` naming a service (with its ``X_PORT``) points at that service's local
        port; ``X_HOST=0.0.0.0`` becomes loopback; an ``X_PORT`` this instance listens on
        (see `own_ports`) becomes its local port."""
        hosts = {host for host, _ in self.remote}
        rewritten = {key: self.text(value) for key, value in env.items()}
        for key, value in env.items():
            prefix = key.removesuffix("_HOST").removesuffix("_PORT")
            if key.endswith("_HOST") and value in hosts:
                rewritten[key] = HOST
                if (port := env.get(f"{prefix}_PORT", "")).isdigit():
                    rewritten[f"{prefix}_PORT"] = str(self.remote[value, int(port)])
            elif key.endswith("_HOST") and value in _LOCAL_NAMES:
                rewritten[key] = HOST
            elif _listens_on(key, env) and int(value) in self.own:
                rewritten[key] = str(self.own[int(value)])
        return rewritten


def _listens_on(key: str, env: Mapping[str, str]) -> bool:
    """``key`` is a port the service itself listens on: an ``X_PORT`` whose ``X_HOST`` is
    unset or a local address (LAKE_METRICS_PORT), not the port of another service."""
    host = env.get(f"{key.removesuffix('_PORT')}_HOST")
    return key.endswith("_PORT") and env[key].isdigit() and (host is None or host in _LOCAL_NAMES)


def own_ports(service: ComposeService, env: Mapping[str, str]) -> list[int]:
    """Container ports ``service`` listens on: ``-p N`` of its command, and ``X_PORT``
    variables of its own (LAKE_METRICS_PORT)."""
    ports = [
        int(arg)
        for flag, arg in zip(service.command, service.command[1:], strict=False)
        if flag in _PORT_FLAGS and arg.isdigit()
    ]
    ports += [int(value) for key, value in env.items() if _listens_on(key, env)]
    return sorted(set(ports))


# --- Processes -----------------------------------------------------------------------------


@dataclass
class ServiceProcess(LaterProcess):
    """One instance of a compose service, run as a local process in its own process group."""

    name: str
    command: list[str]
    environment: dict[str, str] = field(repr=False)
    healthcheck: list[str] | None
    ports: dict[int, int]
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    pids: list[int] = field(default_factory=list)
    """Every pid this instance had (restarts included)."""

    @property
    def log_path(self) -> Path:
        return self.workdir / "output.log"

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.workdir,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pids.append(self.process.pid)
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash: nothing flushed, nothing acked)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group (as `docker stop`), SIGKILL it after ``timeout``."""
        if self.process is not None:
            terminate_group(self.process, timeout)
            # Children that outlived their leader (run workers) are still in the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        """Wait for a one-shot service to exit; its exit code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            message = f"{self.name} still running after {timeout:.0f}s:\n{self.log()}"
            raise AssertionError(message) from None

    def healthy(self) -> bool:
        """The compose health check of the service passes (run like the container would)."""
        assert self.healthcheck is not None, f"{self.name} has no health check"
        try:
            result = subprocess.run(
                self.healthcheck,
                env=self.environment,
                cwd=self.workdir,
                capture_output=True,
                timeout=HEALTHCHECK_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def log(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 1.0
) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(interval)
    return time.monotonic() - started


def first_value(
    produce: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2
) -> T:
    """Poll ``produce`` until it returns something other than None; that value. Fails the
    test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (value := produce()) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s")
        time.sleep(interval)
    return value


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment holds ``marker`` (our DAGSTER_HOME): the
    services and everything they started, whatever process group it moved to."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (proc / "environ").read_bytes():
                status = (proc / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(int(proc.name))
    return found


# --- The topology --------------------------------------------------------------------------


@dataclass
class Topology(StopsOnExit):
    """The compose deployment on 127.0.0.1: third-party servers from real binaries, and
    our services as local processes made from compose.yaml."""

    workdir: Path
    compose: dict[str, ComposeService]
    dotenv: dict[str, str]
    postgres: PostgresServer
    nats: NatsCluster
    s3: S3Server
    remote: dict[tuple[str, int], int]
    home: Path
    instances: list[ServiceProcess] = field(default_factory=list)
    _claimed: list[int] = field(default_factory=list, repr=False)

    @classmethod
    def start(cls, workdir: Path, settings: Mapping[str, str] | None = None) -> Topology:
        """Start PostgreSQL, the NATS cluster and SeaweedFS with the credentials of a test
        `.env` (docker/.env.example, secrets replaced, plus ``settings``), and prepare
        DAGSTER_HOME and the workspace. Our services are started by `start_service`."""
        compose = load_compose()
        dotenv = read_dotenv(DOCKER / ".env.example")
        dotenv |= {key: secrets.token_hex(12) for key, v in dotenv.items() if v == "change-me"}
        dotenv |= dict(settings or {})
        servers: list[Any] = []
        try:
            servers.append(
                PostgresServer.start(
                    workdir / "postgres",
                    user=dotenv["DAGSTER_POSTGRES_USER"],
                    password=dotenv["DAGSTER_POSTGRES_PASSWORD"],
                    database=dotenv["DAGSTER_POSTGRES_DB"],
                )
            )
            nats_names = sorted(name for name in compose if name.startswith("nats-"))
            servers.append(NatsCluster.start(workdir / "nats", size=len(nats_names)))
            servers.append(
                S3Server.start(
                    workdir / "seaweedfs",
                    access_key=dotenv["S3_ACCESS_KEY"],
                    secret_key=dotenv["S3_SECRET_KEY"],
                )
            )
        except BaseException:
            for server in reversed(servers):
                server.stop()
            raise
        postgres, nats, s3 = servers
        claimed = claim_ports(2)
        remote = {
            ("postgres", THIRD_PARTY["postgres"]): postgres.port,
            ("seaweedfs", THIRD_PARTY["seaweedfs"]): s3.ports["s3"],
            **{(node.name, THIRD_PARTY["nats"]): node.port for node in nats.nodes},
        }
        remote |= _listen_addresses(
            compose, dict(zip(("code-server", "webserver"), claimed, strict=True))
        )
        topology = cls(workdir, compose, dotenv, postgres, nats, s3, remote, workdir / "home")
        topology._claimed = claimed
        topology._write_dagster_files()
        return topology

    def _write_dagster_files(self) -> None:
        """DAGSTER_HOME with docker/dagster.yaml as is; docker/workspace.yaml with its gRPC
        servers pointed at their local ports."""
        self.home.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text((DOCKER / "dagster.yaml").read_text())
        workspace = yaml.safe_load((DOCKER / "workspace.yaml").read_text())
        for entry in workspace["load_from"]:
            server = entry.get("grpc_server")
            if server:
                server["port"] = self.remote[server["host"], int(server["port"])]
                server["host"] = HOST
        self.workspace_path.write_text(yaml.safe_dump(workspace))

    @property
    def workspace_path(self) -> Path:
        return self.workdir / "workspace.yaml"

    def service(
        self, name: str, options: Mapping[str, str] | None = None, replica: int = 1
    ) -> ServiceProcess:
        """Instance ``replica`` of compose service ``name`` (not started), its command's
        ``options`` overridden (as `docker compose run` would)."""
        spec = self.compose[name]
        environment = {
            key: interpolate(value, self.dotenv) for key, value in spec.environment.items()
        }
        if spec.reads_env_file:
            environment = {**self.dotenv, **environment}
        listens = own_ports(spec, environment)
        ports = {port: self.remote.get((name, port)) or claim_ports(1)[0] for port in listens}
        self._claimed += [port for port in ports.values() if port not in self._claimed]
        rewriter = Rewriter(
            self.remote,
            ports,
            {CONTAINER_WORKSPACE: str(self.workspace_path), CONTAINER_HOME: str(self.home)},
        )
        command = with_options(spec.command, options or {})
        suffix = f"-{replica}" if spec.replicas > 1 else ""
        return ServiceProcess(
            name=f"{name}{suffix}",
            command=rewriter.command(command),
            environment=self.image_environment() | rewriter.environment(environment),
            healthcheck=rewriter.command(spec.healthcheck) if spec.healthcheck else None,
            ports=ports,
            workdir=self.workdir / "services" / f"{name}{suffix}",
        )

    def image_environment(self) -> dict[str, str]:
        """What the image gives every container: our venv first on PATH, DAGSTER_HOME."""
        return {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", str(self.workdir)),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "DAGSTER_HOME": str(self.home),
        }

    def start_service(
        self, name: str, options: Mapping[str, str] | None = None, replica: int = 1
    ) -> ServiceProcess:
        instance = self.service(name, options, replica).start()
        self.instances.append(instance)
        return instance

    def run_once(self, name: str, timeout: float) -> ServiceProcess:
        """Run a one-shot service (``init``) to completion; fails the test unless it exits 0."""
        instance = self.start_service(name)
        code = instance.wait(timeout)
        assert code == 0, f"{name} exited with {code}:\n{instance.log()}"
        return instance

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The data of a query to the webserver's GraphQL API."""
        port = self.remote["webserver", _container_port(self.compose["webserver"])]
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"http://{HOST}:{port}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert not answer.get("errors"), answer["errors"]
        return answer["data"]

    @property
    def pids(self) -> list[int]:
        """Every pid of our services and the servers, restarted ones included."""
        ours = [pid for instance in self.instances for pid in instance.pids]
        return [*ours, self.postgres.pid, self.s3.pid, *self.nats_pids]

    @property
    def nats_pids(self) -> list[int]:
        return [node.pid for node in self.nats.nodes]

    def stop(self) -> None:
        """Ours in `STOP_ORDER` (daemon, webserver, code server), then PostgreSQL, NATS and
        SeaweedFS: each by its own process group."""
        rank = {name: index for index, name in enumerate(STOP_ORDER)}
        for instance in sorted(self.instances, key=lambda i: rank.get(_service_of(i), -1)):
            instance.stop()
        self.postgres.stop()
        self.nats.stop()
        self.s3.stop()
        release_ports(self._claimed)


def _service_of(instance: ServiceProcess) -> str:
    return re.sub(r"-\d+$", "", instance.name)


def _container_port(service: ComposeService) -> int:
    """The port a server service listens on (``-p N`` of its command)."""
    ports = own_ports(service, {})
    assert len(ports) == 1, f"{service.name} listens on {ports}"
    return ports[0]


def _listen_addresses(
    compose: Mapping[str, ComposeService], local: Mapping[str, int]
) -> dict[tuple[str, int], int]:
    """(host name, container port) of services other services dial (code server, webserver)."""
    return {(name, _container_port(compose[name])): port for name, port in local.items()}
