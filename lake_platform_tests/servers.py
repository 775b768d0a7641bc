"""Real local servers for the tests and benchmarks: SeaweedFS (S3), PostgreSQL and a 3-node
NATS JetStream cluster, on 127.0.0.1, started by the tests and stopped by process id.

They build on the embedded nats-server's process handling (`lake_platform.embedded_nats`),
which stays in the package because `make run` and the demo use it.

    with S3Server.start(tmp_path / "s3") as s3:
        s3.create_bucket("lake")
        ...
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import s3fs

from lake_platform.embedded_nats import (
    HOST,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    ManagedServer,
    ServerStartError,
    StopsOnExit,
    find_binary,
    http_status,
    log_tail,
    signal_group,
    spawn,
    terminate_group,
    wait_until_ready,
)

# `weed mini` runs these components in one process; each opens an HTTP port and a gRPC port.
_WEED_COMPONENTS = ("master", "volume", "filer", "s3", "admin")
# SeaweedFS's convention is gRPC port = HTTP port + 10000, and the embedded maintenance worker
# dials the admin server at admin.port + 10000 even when -admin.port.grpc says otherwise, so
# every component gets such a pair.
_GRPC_OFFSET = 10000
# HTTP ports come from [10000, 22768) so the gRPC ports stay below 32768, the usual start of
# the kernel's ephemeral range: servers using port 0 and outgoing connections never take them.
_HTTP_PORT_RANGE = (10000, 32768 - _GRPC_OFFSET)
_PORT_ATTEMPTS = 3

_port_lock = threading.Lock()
_claimed_ports: set[int] = set()
# A private generator: tests (e.g. Hypothesis) reseed the global `random` module, which would
# make concurrent test processes pick identical ports.
_port_rng = random.Random()


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _claim_port_pairs(count: int) -> list[int]:
    """Reserve ``count`` HTTP ports whose gRPC partners (port + 10000) are free as well.

    Claimed ports are remembered in-process until released, so servers started concurrently
    in this process never pick the same ports before they have bound them.
    """
    chosen: list[int] = []
    with _port_lock:
        for _ in range(1000):
            port = _port_rng.randrange(*_HTTP_PORT_RANGE)
            pair = (port, port + _GRPC_OFFSET)
            if any(p in _claimed_ports for p in pair) or not all(map(_port_is_free, pair)):
                continue
            _claimed_ports.update(pair)
            chosen.append(port)
            if len(chosen) == count:
                return chosen
        _claimed_ports.difference_update(p for port in chosen for p in (port, port + _GRPC_OFFSET))
    raise ServerStartError(f"could not find {count} free port pairs on {HOST}")


def _release_port_pairs(ports: list[int]) -> None:
    with _port_lock:
        _claimed_ports.difference_update(p for port in ports for p in (port, port + _GRPC_OFFSET))


@dataclass
class S3Server(ManagedServer):
    """A SeaweedFS ``weed mini`` instance serving S3 on 127.0.0.1 with one admin identity.

    Data lives in ``workdir / "data"``, so starting again on the same workdir keeps buckets.
    """

    REGION: ClassVar[str] = "us-east-1"

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    workdir: Path
    log_path: Path
    ports: dict[str, int]
    """HTTP port per ``weed mini`` component; each component's gRPC port is this + 10000."""
    _process: subprocess.Popen[bytes] = field(repr=False)
    _ports_released: bool = field(default=False, init=False, repr=False)

    @classmethod
    def start(
        cls, workdir: Path, access_key: str = "lake-test", secret_key: str | None = None
    ) -> S3Server:
        """Start a server and wait until it answers authenticated S3 requests.

        ``secret_key`` defaults to a fresh random secret.
        """
        binary = find_binary("weed")
        secret_key = secret_key or secrets.token_urlsafe(24)
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        identities = workdir / "s3-identities.json"
        identities.write_text(json.dumps(_s3_identities(access_key, secret_key)))
        identities.chmod(0o600)
        log_path = workdir / "weed-mini.log"

        for attempt in itertools.count(1):
            http_ports = _claim_port_pairs(len(_WEED_COMPONENTS))
            ports = dict(zip(_WEED_COMPONENTS, http_ports, strict=True))
            process = spawn(_weed_mini_command(binary, data_dir, identities, ports), log_path)
            server = cls(
                endpoint=f"http://{HOST}:{ports['s3']}",
                access_key=access_key,
                secret_key=secret_key,
                workdir=workdir,
                log_path=log_path,
                ports=ports,
                _process=process,
            )
            try:
                wait_until_ready(process, "weed mini", log_path, server._s3_answers)
                server._check_credentials()
            except ServerStartError:
                server.stop()
                # Another process may have bound one of our ports between the check and the
                # server's bind; weed then exits with "Port allocation failed". Retry on new ones.
                if attempt < _PORT_ATTEMPTS and "Port allocation failed" in log_tail(log_path):
                    continue
                raise
            except BaseException:
                server.stop()
                raise
            return server

    def kill(self) -> None:
        """SIGKILL the server, simulating an outage; its ports stay reserved for `restart`."""
        if self.running:
            signal_group(self._process, signal.SIGKILL)
        self._process.wait()

    def restart(self) -> None:
        """Stop the server if running, then start it again on the same ports and data dir,
        so clients find the same endpoint and buckets."""
        if self.running:
            terminate_group(self._process, STOP_TIMEOUT_S)
        command = _weed_mini_command(
            find_binary("weed"),
            self.workdir / "data",
            self.workdir / "s3-identities.json",
            self.ports,
        )
        self._process = spawn(command, self.log_path)
        wait_until_ready(self._process, "weed mini", self.log_path, self._s3_answers)
        self._check_credentials()

    def _s3_answers(self) -> bool:
        # Components start in order (master, volume, filer, s3, admin), so any HTTP answer on
        # the S3 port, even 403 to this anonymous request, means the storage behind it is up.
        return http_status(self.endpoint) is not None

    def _check_credentials(self) -> None:
        try:
            self.filesystem().ls("", refresh=True)
        except OSError as exc:
            raise ServerStartError(
                f"weed mini rejected an authenticated S3 request: {exc!r}; "
                f"log tail ({self.log_path}):\n{log_tail(self.log_path)}"
            ) from exc

    def filesystem(self) -> s3fs.S3FileSystem:
        """A fresh (uncached) s3fs filesystem authenticated against this server."""
        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key,
            client_kwargs={"endpoint_url": self.endpoint, "region_name": self.REGION},
            skip_instance_cache=True,
        )

    def create_bucket(self, name: str) -> None:
        """Create bucket ``name`` (S3 naming rules: 3-63 chars); no-op if it already exists."""
        with contextlib.suppress(FileExistsError):
            self.filesystem().mkdir(name)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        super().stop(timeout)
        # Only once: after the release another server in this process may reuse the ports.
        if self._ports_released:
            return
        # weed leaves per-port unix sockets in /tmp (all of them when killed); its own startup
        # removes stale ones, so this only avoids littering /tmp.
        for component, port in self.ports.items():
            for name in (f"{component}-{port}", f"{component}-grpc-{port + _GRPC_OFFSET}"):
                Path(f"/tmp/seaweedfs-{name}.sock").unlink(missing_ok=True)
        _release_port_pairs(list(self.ports.values()))
        self._ports_released = True


def _s3_identities(access_key: str, secret_key: str) -> dict[str, object]:
    return {
        "identities": [
            {
                "name": "lake-admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def _weed_mini_command(
    binary: Path, data_dir: Path, identities: Path, ports: dict[str, int]
) -> list[str]:
    cmd = [
        str(binary),
        "mini",
        f"-dir={data_dir}",
        f"-ip={HOST}",
        # -ip is only the advertised address; without -ip.bind everything listens on 0.0.0.0.
        f"-ip.bind={HOST}",
        f"-s3.config={identities}",
        "-master.telemetry=false",
        # Each bucket is a collection with its own volume, and the volume budget is free disk
        # divided by the volume size (auto-sized up to 1 GiB): small volumes keep room for
        # many buckets on small disks.
        "-master.volumeSizeLimitMB=64",
        "-volume.preStopSeconds=0",  # no grace period for clients: shutdown in ~1 s
        "-webdav=false",
        "-admin.ui=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    for component, port in ports.items():
        cmd += [f"-{component}.port={port}", f"-{component}.port.grpc={port + _GRPC_OFFSET}"]
    return cmd


# --- Free single ports ---------------------------------------------------------------------


def claim_ports(count: int) -> list[int]:
    """Reserve ``count`` free ports on 127.0.0.1 for servers whose ports must be known before
    they start (cluster routes, a Postgres port), from the same range and claim set as S3's."""
    chosen: list[int] = []
    with _port_lock:
        for _ in range(1000):
            port = _port_rng.randrange(*_HTTP_PORT_RANGE)
            if port in _claimed_ports or port in chosen or not _port_is_free(port):
                continue
            chosen.append(port)
            if len(chosen) == count:
                _claimed_ports.update(chosen)
                return chosen
    raise ServerStartError(f"could not find {count} free ports on {HOST}")


def release_ports(ports: list[int]) -> None:
    with _port_lock:
        _claimed_ports.difference_update(ports)


# --- PostgreSQL ----------------------------------------------------------------------------

POSTGRES_BIN_DIRS = "/usr/lib/postgresql/*/bin"
"""Where Debian's `postgresql` package puts initdb and postgres (one folder per version)."""
_POSTGRES_SERVICE_USER = "postgres"


def find_postgres_bin() -> Path:
    """The folder holding ``initdb`` and ``postgres``: the newest Debian install, else PATH.

    Raises FileNotFoundError naming the package to install when PostgreSQL is missing.
    """
    installed = sorted(
        Path("/").glob(POSTGRES_BIN_DIRS.lstrip("/")),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
    )
    for folder in reversed(installed):
        if (folder / "initdb").is_file():
            return folder
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise FileNotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found in "
        f"{POSTGRES_BIN_DIRS} nor on PATH; install them (Debian: apt-get install postgresql)"
    )


@dataclass(frozen=True)
class _RunAs:
    """The account the server runs as: ``postgres`` when we are root (initdb refuses root)."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_current_user(cls) -> _RunAs:
        if os.geteuid() != 0:
            return cls()
        import pwd

        try:
            account = pwd.getpwnam(_POSTGRES_SERVICE_USER)
        except KeyError:
            raise FileNotFoundError(
                f"running as root needs the {_POSTGRES_SERVICE_USER!r} account to run "
                "PostgreSQL (initdb refuses root); install the postgresql package"
            ) from None
        return cls(account.pw_uid, account.pw_gid)

    def own(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def popen_kwargs(self) -> dict[str, object]:
        if self.uid is None:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


@dataclass
class PostgresServer(ManagedServer):
    """A PostgreSQL server on 127.0.0.1 with password (SCRAM) authentication.

    ``postgres`` (the postmaster) is this object's own child in its own process group, run as
    the ``postgres`` account when we are root, so it is stopped by its pid like the other
    servers (no ``pg_ctl`` daemon to chase). The data folder lives in a private temporary
    folder that account can reach (pytest's folders are root-only) and is removed by ``stop``;
    the server log stays in ``workdir``.
    """

    port: int
    user: str
    password: str = field(repr=False)
    database: str
    workdir: Path
    log_path: Path
    data_dir: Path
    _private_dir: Path = field(repr=False)
    _process: subprocess.Popen[bytes] = field(repr=False)
    _stopped: bool = field(default=False, init=False, repr=False)

    @classmethod
    def start(
        cls,
        workdir: Path,
        user: str = "dagster",
        database: str = "dagster",
        password: str | None = None,
    ) -> PostgresServer:
        """initdb a fresh cluster, start it on a free port and create ``database``."""
        bin_dir = find_postgres_bin()
        run_as = _RunAs.for_current_user()
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "postgres.log"
        private = Path(tempfile.mkdtemp(prefix="lake-postgres-"))
        try:
            password = password or secrets.token_urlsafe(18)
            data_dir = _init_cluster(bin_dir, run_as, private, user, password, log_path)
        except BaseException:
            shutil.rmtree(private, ignore_errors=True)
            raise
        for attempt in itertools.count(1):
            (port,) = claim_ports(1)
            command = _postgres_command(bin_dir, data_dir, private / "socket", port)
            server = cls(
                port=port,
                user=user,
                password=password,
                database=database,
                workdir=workdir,
                log_path=log_path,
                data_dir=data_dir,
                _private_dir=private,
                _process=spawn(command, log_path, **run_as.popen_kwargs()),
            )
            try:
                wait_until_ready(server._process, "postgres", log_path, server._accepts)
                server._create_database(bin_dir)
            except ServerStartError:
                # A port taken between the check and the bind: retry on another one.
                retry = attempt < _PORT_ATTEMPTS and "could not bind" in log_tail(log_path)
                server._release(remove_data=not retry)
                if retry:
                    continue
                raise
            except BaseException:
                server.stop()
                raise
            return server

    @property
    def url(self) -> str:
        """A SQLAlchemy/psycopg2 URL of the database (holds the password)."""
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@{HOST}:{self.port}/{self.database}"
        )

    def _accepts(self) -> bool:
        # `pg_isready` would need the binary path; the startup log line is as reliable.
        text = log_tail(self.log_path, lines=20)
        return "database system is ready to accept connections" in text and _accepts_tcp(self.port)

    def _create_database(self, bin_dir: Path) -> None:
        command = [
            str(bin_dir / "createdb"), "-h", HOST, "-p", str(self.port), "-U", self.user,
            self.database,
        ]  # fmt: skip
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServerStartError(f"createdb {self.database} failed: {result.stderr.strip()}")

    def restart(self) -> None:
        """Fast shutdown, then start again on the same port and data: every client's
        connection is dropped, as in a server restart or failover."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGINT)
        self._process.wait(STOP_TIMEOUT_S)
        socket_dir = self._private_dir / "socket"
        command = _postgres_command(find_postgres_bin(), self.data_dir, socket_dir, self.port)
        run_as = _RunAs.for_current_user()
        self._process = spawn(command, self.log_path, **run_as.popen_kwargs())
        wait_until_ready(self._process, "postgres", self.log_path, self._accepts)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Fast shutdown (SIGINT: connections are closed, not waited for; SIGTERM would wait
        for every client to leave), SIGKILL after ``timeout``; then remove the data folder."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGINT)
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                signal_group(self._process, signal.SIGKILL)
                self._process.wait()
        self._release(remove_data=True)

    def _release(self, remove_data: bool) -> None:
        """Stop the process, free the port and (once, at the end) delete the data folder."""
        terminate_group(self._process, STOP_TIMEOUT_S)
        release_ports([self.port])
        if remove_data and not self._stopped:
            self._stopped = True
            shutil.rmtree(self._private_dir, ignore_errors=True)


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def _init_cluster(
    bin_dir: Path, run_as: _RunAs, private: Path, user: str, password: str, log_path: Path
) -> Path:
    """initdb a cluster in ``private/data`` with ``user`` as its password-protected superuser."""
    run_as.own(private)
    private.chmod(0o700)
    socket_dir = private / "socket"
    socket_dir.mkdir()
    run_as.own(socket_dir)
    password_file = private / "password"
    password_file.write_text(password)
    password_file.chmod(0o600)
    run_as.own(password_file)
    data_dir = private / "data"
    command = [
        str(bin_dir / "initdb"), "-D", str(data_dir), "-U", user,
        f"--pwfile={password_file}", "-A", "scram-sha-256", "-E", "UTF8", "--no-sync",
    ]  # fmt: skip
    try:
        with log_path.open("ab") as log:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=False,
                **run_as.popen_kwargs(),  # type: ignore[arg-type]
            )
    finally:
        password_file.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ServerStartError(
            f"initdb exited with code {result.returncode}; log tail ({log_path}):\n"
            f"{log_tail(log_path)}"
        )
    return data_dir


def _postgres_command(bin_dir: Path, data_dir: Path, socket_dir: Path, port: int) -> list[str]:
    return [
        str(bin_dir / "postgres"),
        "-D", str(data_dir),
        "-p", str(port),
        "-c", f"listen_addresses={HOST}",
        "-c", f"unix_socket_directories={socket_dir}",
        "-c", "fsync=off",  # a throwaway test database: durability buys nothing here
        "-c", "max_connections=200",  # Dagster's daemon, webserver and run workers each pool
    ]  # fmt: skip


# --- NATS JetStream cluster ----------------------------------------------------------------


class LaterProcess:
    """`pid` and `running` of something whose `process` is started (and restarted) later."""

    name: str
    process: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class NatsNode(LaterProcess):
    """One server of a `NatsCluster`: its name (``server_name``), ports and store dir."""

    name: str
    port: int
    cluster_port: int
    monitor_port: int
    config_path: Path
    store_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    def launch(self, binary: Path) -> subprocess.Popen[bytes]:
        """Start the node's process (its own process group) from its config file."""
        self.process = spawn([str(binary), "-c", str(self.config_path)], self.log_path)
        return self.process

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """The JSON of a monitoring endpoint (``jsz?streams=true``) of this node."""
        url = f"http://{HOST}:{self.monitor_port}/{endpoint}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def healthy(self) -> bool:
        """JetStream of this node is up and current with the cluster (its streams and
        consumers caught up): what ``/healthz`` reports."""
        return http_status(f"http://{HOST}:{self.monitor_port}/healthz") == 200


@dataclass
class NatsCluster(StopsOnExit):
    """A JetStream cluster of ``nats-server`` processes on 127.0.0.1, routed to each other.

    Nodes are named ``{prefix}-1`` … (``nats-1`` like the compose services); each runs in its
    own process group, so `kill` of one node is a real crash of that node only. `restart`
    reuses the node's ports, config and store dir, so it rejoins and catches up.

        with NatsCluster.start(tmp_path / "nats") as cluster:
            cluster.urls  # every client URL, for NATS_URL
            cluster.kill(cluster.stream_leader("MARKET"))
    """

    workdir: Path
    nodes: list[NatsNode]
    _binary: Path = field(repr=False)

    @classmethod
    def start(
        cls, workdir: Path, size: int = 3, prefix: str = "nats", name: str = "lake"
    ) -> NatsCluster:
        """Start ``size`` routed nodes on free ports; return once every node is healthy and
        the cluster has elected a JetStream meta leader."""
        binary = find_binary("nats-server")
        workdir.mkdir(parents=True, exist_ok=True)
        for attempt in itertools.count(1):
            ports = claim_ports(3 * size)
            nodes = [
                _nats_node(workdir, f"{prefix}-{index + 1}", *ports[3 * index : 3 * index + 3])
                for index in range(size)
            ]
            _write_cluster_configs(nodes, name)
            cluster = cls(workdir, nodes, binary)
            try:
                for node in nodes:
                    node.launch(binary)
                cluster.wait_healthy()
            except ServerStartError:
                cluster.stop()
                logs = "".join(log_tail(node.log_path) for node in cluster.nodes)
                if attempt < _PORT_ATTEMPTS and "address already in use" in logs:
                    continue
                raise
            except BaseException:
                cluster.stop()
                raise
            return cluster

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def node(self, name: str) -> NatsNode:
        """The node whose ``server_name`` is ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node named {name!r} in {[node.name for node in self.nodes]}")

    def stream_leader(self, stream: str, account: str = "$G") -> NatsNode:
        """The node leading ``stream``'s raft group, as a running node reports it."""
        for node in self.nodes:
            if not node.running:
                continue
            with contextlib.suppress(OSError, ValueError):
                jsz = node.monitor(f"jsz?streams=true&acc={account}")
                for detail in jsz.get("account_details") or []:
                    for info in detail.get("stream_detail") or []:
                        leader = (info.get("cluster") or {}).get("leader")
                        if info.get("name") == stream and leader:
                            return self.node(leader)
        raise LookupError(f"no running node reports a leader of stream {stream!r}")

    def kill(self, node: NatsNode) -> None:
        """SIGKILL one node (a crash: no clean JetStream shutdown)."""
        if node.process is not None:
            signal_group(node.process, signal.SIGKILL)
            node.process.wait()

    def restart(self, node: NatsNode) -> None:
        """Stop ``node`` if running, start it on the same ports and store dir, and wait until
        it is healthy again (rejoined and caught up)."""
        if node.process is not None:
            terminate_group(node.process, STOP_TIMEOUT_S)
        process = node.launch(self._binary)
        wait_until_ready(process, node.name, node.log_path, node.healthy)

    def wait_healthy(self, timeout: float = START_TIMEOUT_S) -> None:
        """Wait until every running node is healthy and agrees on a meta leader."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.process is None:
                raise ServerStartError(f"{node.name} was never started")
            remaining = max(deadline - time.monotonic(), 1.0)
            wait_until_ready(node.process, node.name, node.log_path, node.healthy, remaining)
        while not self._meta_leader_elected():
            if time.monotonic() > deadline:
                raise ServerStartError(f"no JetStream meta leader after {timeout:.0f}s")
            time.sleep(0.1)

    def _meta_leader_elected(self) -> bool:
        with contextlib.suppress(OSError, ValueError):
            leaders = {
                (node.monitor("jsz").get("meta_cluster") or {}).get("leader")
                for node in self.nodes
                if node.running
            }
            return len(leaders) == 1 and None not in leaders and "" not in leaders
        return False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every node by its process group (SIGTERM, SIGKILL after ``timeout``)."""
        for node in self.nodes:
            if node.process is not None:
                terminate_group(node.process, timeout)
        release_ports(
            [port for n in self.nodes for port in (n.port, n.cluster_port, n.monitor_port)]
        )


def _nats_node(workdir: Path, name: str, client: int, route: int, monitor: int) -> NatsNode:
    folder = workdir / name
    store_dir = folder / "jetstream"
    store_dir.mkdir(parents=True, exist_ok=True)
    return NatsNode(
        name=name,
        port=client,
        cluster_port=route,
        monitor_port=monitor,
        config_path=folder / f"{name}.conf",
        store_dir=store_dir,
        log_path=folder / "nats-server.log",
    )


def _write_cluster_configs(nodes: list[NatsNode], cluster_name: str) -> None:
    """One config per node (the layout of docker/nats/nats-N.conf, on loopback ports)."""
    routes = ", ".join(f"nats-route://{HOST}:{node.cluster_port}" for node in nodes)
    for node in nodes:
        node.config_path.write_text(
            f"server_name: {node.name}\n"
            f"listen: {HOST}:{node.port}\n"
            f"http: {HOST}:{node.monitor_port}\n"
            f'jetstream {{ store_dir: "{node.store_dir}" }}\n'
            f"cluster {{\n  name: {cluster_name}\n  listen: {HOST}:{node.cluster_port}\n"
            f"  routes: [{routes}]\n}}\n"
        )
