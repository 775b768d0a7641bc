"""NATS authentication and TLS on a real nats-server the test configures: user/password,
token, an nkey/JWT credentials file (operator mode) and TLS with the test's own CA.

The `lake-platform ingest` command runs as a subprocess: with the right credentials it ingests;
with wrong ones, an untrusted or expired server certificate, or no server, it exits 1 with one
clear line that shows no secret.
"""

import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from lake_platform.embedded_nats import HOST, NatsServer
from lake_platform.ingest.connection import connect
from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.settings import LakeSettings
from lake_platform_tests.nats_auth import (
    Authority,
    OperatorMode,
    tls_config,
    token_config,
    users_config,
)
from lake_platform_tests.samples import SAMPLES

pytestmark = pytest.mark.slow
DAGSTER_NOTE = "DAGSTER_HOME is not set: "
ERROR_PREFIX = "lake-platform: error: "
CLEARED = ("DAGSTER_HOME", "NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS")


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`lake-platform <args>` with `env` over this environment (its NATS and Dagster unset)."""
    base = {name: value for name, value in os.environ.items() if name not in CLEARED}
    return subprocess.run(
        [sys.executable, "-m", "lake_platform.cli", *args],
        env={**base, "NATS_TLS_CA": "", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed command; any other line is the DAGSTER_HOME note."""
    assert result.returncode == 1, result
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert len(errors) == 1, result.stderr
    assert all(line in errors or line.startswith(DAGSTER_NOTE) for line in lines), result.stderr
    return errors[0]


async def publish_trades(settings: LakeSettings, count: int) -> None:
    nc = await connect(settings, name="test publisher")
    js = nc.jetstream()
    await ensure_streams(js)
    for seq in range(count):
        message = {**SAMPLES["stocks.trades"], "seq": seq, "ts_event_ns": time.time_ns()}
        await js.publish(f"market.stocks.trades.{message['symbol']}", json.dumps(message).encode())
    await nc.close()


@dataclass(frozen=True)
class Guarded:
    """A server's configuration, the environment that passes it, and a wrong one."""

    config: str
    good: dict[str, str]
    wrong: dict[str, str]
    secrets: tuple[str, ...]
    """Values that must never be shown (the right and the wrong credentials)."""
    refusal: str


def users(_: Path) -> Guarded:
    password, wrong = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    return Guarded(
        users_config(("lake", password)),
        {"NATS_USER": "lake", "NATS_PASSWORD": password},
        {"NATS_USER": "lake", "NATS_PASSWORD": wrong},
        (password, wrong),
        "refused the credentials",
    )


def token(_: Path) -> Guarded:
    right, wrong = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    return Guarded(
        token_config(right),
        {"NATS_TOKEN": right},
        {"NATS_TOKEN": wrong},
        (right, wrong),
        "refused the credentials",
    )


def creds(folder: Path) -> Guarded:
    """Operator mode; the wrong credentials are a user of another operator's account."""
    trusted, stranger = OperatorMode.create(), OperatorMode.create()
    good, wrong = folder / "ingest.creds", folder / "stranger.creds"
    for path, mode in ((good, trusted), (wrong, stranger)):
        path.write_text(mode.creds())
    return Guarded(
        trusted.server_config(),
        {"NATS_CREDS": str(good)},
        {"NATS_CREDS": str(wrong)},
        (trusted.user_seed.decode(), stranger.user_seed.decode()),
        "refused the credentials",
    )


def tls(folder: Path) -> Guarded:
    """The wrong CA signed no certificate of this server."""
    authority, other = Authority.create("lake test CA"), Authority.create("another CA")
    cert, key = authority.server_certificate(folder)
    return Guarded(
        tls_config(cert, key),
        {"NATS_TLS_CA": str(authority.write(folder / "ca.pem"))},
        {"NATS_TLS_CA": str(other.write(folder / "other-ca.pem"))},
        (key.read_text(),),
        "server certificate not trusted (unable to get local issuer certificate",
    )


def expired_tls(folder: Path) -> Guarded:
    """The server's certificate ended yesterday; its CA is trusted."""
    authority = Authority.create("lake test CA")
    cert, key = authority.server_certificate(folder, expired=True)
    ca = {"NATS_TLS_CA": str(authority.write(folder / "ca.pem"))}
    return Guarded(
        tls_config(cert, key),
        ca,
        ca,
        (key.read_text(),),
        "server certificate not trusted (certificate has expired",
    )


MODES: dict[str, Callable[[Path], Guarded]] = {
    "user/password": users,
    "token": token,
    "nkey/JWT creds": creds,
    "TLS": tls,
}


def start_guarded(tmp_path: Path, make: Callable[[Path], Guarded]) -> tuple[NatsServer, Guarded]:
    folder = tmp_path / "credentials"
    folder.mkdir()
    guarded = make(folder)
    return NatsServer.start(tmp_path / "nats", guarded.config), guarded


@pytest.mark.parametrize("mode", MODES)
def test_ingest_connects_with_the_right_credentials(tmp_path, mode):
    server, guarded = start_guarded(tmp_path, MODES[mode])
    with server:
        settings = LakeSettings.from_env({"NATS_URL": server.url, **guarded.good})
        asyncio.run(publish_trades(settings, 5))
        env = {"NATS_URL": server.url, "DATA_ROOT": str(tmp_path / "lake"), **guarded.good}
        result = run_cli("ingest", "--until-idle", env=env)
    assert result.returncode == 0, result.stderr
    assert "ingested 5 events" in result.stdout
    shown = result.stdout + result.stderr
    assert not [secret for secret in guarded.secrets if secret in shown]


@pytest.mark.parametrize("mode", [*MODES, "expired TLS certificate"])
def test_refused_credentials_or_certificate_fail_in_one_line_without_secrets(tmp_path, mode):
    server, guarded = start_guarded(
        tmp_path, {**MODES, "expired TLS certificate": expired_tls}[mode]
    )
    with server:
        env = {"NATS_URL": server.url, "DATA_ROOT": str(tmp_path / "lake"), **guarded.wrong}
        result = run_cli("ingest", "--until-idle", env=env)
    line = error_line(result)
    assert guarded.refusal in line and server.url in line
    shown = result.stdout + result.stderr
    assert not [secret for secret in guarded.secrets if secret in shown]


def test_unreachable_server_fails_in_one_line_masking_the_url_password(tmp_path):
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    password = secrets.token_urlsafe(12)
    env = {"NATS_URL": f"nats://lake:{password}@{HOST}:{port}", "DATA_ROOT": str(tmp_path)}
    result = run_cli("ingest", "--until-idle", env=env)
    line = error_line(result)
    assert f"cannot connect to NATS at nats://***@{HOST}:{port}: " in line
    assert password not in result.stdout + result.stderr
