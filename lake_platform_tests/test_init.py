"""`lake-platform init`: creates the buckets, streams, consumers and Dagster storage once,
and reports them as existing when run again."""

import asyncio
import secrets

import dagster as dg
import nats
import pytest

from lake_platform.cli import main
from lake_platform.ingest.jetstream import DURABLE

STREAMS = ("MARKET", "SIGNALS")


@pytest.fixture
def deployment_env(monkeypatch, nats_server, s3_server, tmp_path):
    """The environment of a deployment on the test servers; buckets not yet created."""
    buckets = {"lake": f"lake-{secrets.token_hex(4)}", "logs": f"logs-{secrets.token_hex(4)}"}
    home = tmp_path / "dagster"
    home.mkdir()
    env = {
        "DATA_ROOT": f"s3://{buckets['lake']}/market",
        "USE_S3": "true",
        "S3_ENDPOINT": s3_server.endpoint,
        "S3_ACCESS_KEY": s3_server.access_key,
        "S3_SECRET_KEY": s3_server.secret_key,
        "S3_REGION": "us-east-1",
        "NATS_URL": nats_server.url,
        "NATS_STREAM_MAX_AGE": "1h",
        "NATS_STREAM_MAX_BYTES": "64M",
        "DAGSTER_HOME": str(home),
        "DAGSTER_COMPUTE_LOG_BUCKET": buckets["logs"],
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return buckets


def run_init(capsys) -> list[str]:
    assert main(["init"]) == 0
    return capsys.readouterr().out.splitlines()


async def stream_configs(url: str) -> dict[str, tuple[int, float, int, bool]]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    configs = {}
    for stream in STREAMS:
        config = (await js.stream_info(stream)).config
        durable = (await js.consumer_info(stream, DURABLE)).config.durable_name == DURABLE
        configs[stream] = (config.num_replicas, config.max_age, config.max_bytes, durable)
    await nc.close()
    return configs


def test_init_creates_everything_once_then_finds_it(deployment_env, capsys, nats_server, s3_server):
    first = run_init(capsys)
    created = [line for line in first if line.startswith("created")]
    assert len(created) == 6, first  # two buckets, two streams, two consumers
    for thing in (*deployment_env.values(), *STREAMS, f"MARKET/{DURABLE}", f"SIGNALS/{DURABLE}"):
        assert any(thing in line for line in created), (thing, first)
    assert any(line.endswith("(schema up to date)") for line in first), first

    second = run_init(capsys)
    assert len(second) == len(first)
    assert all(line.startswith("exists") for line in second), "\n".join(second)

    one_hour, sixty_four_mib = 3600.0, 64 * 2**20
    assert asyncio.run(stream_configs(nats_server.url)) == {
        stream: (1, one_hour, sixty_four_mib, True) for stream in STREAMS
    }
    listing = {entry.rstrip("/") for entry in s3_server.filesystem().ls("", refresh=True)}
    assert set(deployment_env.values()) <= listing
    with dg.DagsterInstance.get() as instance:
        assert instance.get_runs() == []  # the storage is there, at the latest schema
        assert "current" in instance.schema_str()


def test_init_fails_in_one_line_on_wrong_credentials(deployment_env, monkeypatch, capsys):
    monkeypatch.setenv("S3_SECRET_KEY", "not-the-secret")
    assert main(["init"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert f"cannot create bucket {deployment_env['lake']}" in captured.err
    assert "not-the-secret" not in captured.err


def test_init_on_a_local_lake_without_dagster_home(monkeypatch, capsys, nats_server, tmp_path):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("NATS_URL", nats_server.url)
    first = run_init(capsys)
    assert first[0] == f"created lake folder {tmp_path / 'lake'}"
    assert first[-1] == "skipped dagster storage: DAGSTER_HOME is not set"
    assert (tmp_path / "lake").is_dir()
    assert run_init(capsys)[:-1] == [line.replace("created", "exists") for line in first[:-1]]
