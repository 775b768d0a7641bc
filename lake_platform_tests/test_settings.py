"""Settings from the environment: defaults, validation, and secrets never shown."""

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from lake_platform.cli import main
from lake_platform.defs.resources import LakeResource
from lake_platform.settings import LakeSettings, SettingsError, redact_url
from lake_platform_tests.conftest import settings_env


def test_defaults_match_the_contract():
    settings = LakeSettings.from_env({})
    assert settings.data_root == "./data/lake"
    assert settings.use_s3 is False
    assert settings.nats_servers == ("nats://127.0.0.1:4222",)
    assert (settings.bronze_max_events, settings.bronze_max_age_s) == (1000, 5.0)
    assert (settings.gold_max_events, settings.gold_max_age_s) == (500, 10.0)
    assert settings.bronze_max_open_buffers == 50_000
    assert settings.partitions_start == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert settings.partitions_start_key == "2024-01-01-00:00"


def test_values_are_parsed():
    settings = LakeSettings.from_env(
        {
            "DATA_ROOT": "s3://lake/prefix",
            "USE_S3": "true",
            "NATS_URL": "nats://a:4222, nats://b:4222",
            "BRONZE_MAX_EVENTS": "250",
            "GOLD_MAX_AGE_S": "2.5",
            "BRONZE_MAX_OPEN_BUFFERS": "2500",
            "LAKE_PARTITIONS_START": "2025-12-16-14:00",
        }
    )
    assert settings.use_s3 and settings.data_root == "s3://lake/prefix"
    assert settings.nats_servers == ("nats://a:4222", "nats://b:4222")
    assert settings.bronze_max_events == 250 and settings.gold_max_age_s == 2.5
    assert settings.bronze_max_open_buffers == 2500
    assert settings.partitions_start_key == "2025-12-16-14:00"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"USE_S3": "true"}, "USE_S3=true needs DATA_ROOT=s3://"),
        ({"DATA_ROOT": "s3://bucket"}, "set USE_S3=true"),
        ({"USE_S3": "maybe"}, "USE_S3 must be true or false"),
        ({"BRONZE_MAX_EVENTS": "0"}, "BRONZE_MAX_EVENTS must be a whole number from 1 to"),
        ({"BRONZE_MAX_AGE_S": "soon"}, "BRONZE_MAX_AGE_S must be a number of seconds above 0"),
        ({"LAKE_PARTITIONS_START": "2024-01-01"}, "LAKE_PARTITIONS_START must look like"),
        ({"LAKE_PARTITIONS_START": "2024-01-01-00:30"}, "whole hour"),
        ({"NATS_URL": " , "}, "NATS_URL has no server"),
    ],
)
def test_invalid_values_fail_with_a_clear_message(env, message):
    with pytest.raises(SettingsError, match=message.replace("?", r"\?")):
        LakeSettings.from_env(env)


SECRETS = {
    "S3_ACCESS_KEY": "AKIAEXAMPLEKEY",
    "S3_SECRET_KEY": "s3-secret-value",
    "NATS_PASSWORD": "nats-password-value",
    "NATS_TOKEN": "nats-token-value",
    "NATS_URL": "nats://alice:url-password-value@127.0.0.1:4222",
    "S3_ENDPOINT": "http://key:endpoint-secret-value@127.0.0.1:9000",
}


def test_secrets_never_appear_in_repr_str_or_public_view():
    settings = LakeSettings.from_env({**SECRETS, "NATS_USER": "alice"})
    assert settings.s3_secret_key == "s3-secret-value"
    shown = " ".join([repr(settings), str(settings), repr(settings.public())])
    for name in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "NATS_PASSWORD", "NATS_TOKEN"):
        assert SECRETS[name] not in shown
    assert "url-password-value" not in shown
    assert "endpoint-secret-value" not in shown
    assert "***" in shown and "alice" in shown


def test_catalog_uri_is_read_and_shown_with_its_password_masked():
    assert LakeSettings.from_env({}).catalog_uri is None
    assert LakeSettings.from_env({"LAKE_CATALOG_URI": "  "}).catalog_uri is None
    uri = "postgresql+psycopg2://lake:catalog-pa55@127.0.0.1:5432/iceberg"
    settings = LakeSettings.from_env({"LAKE_CATALOG_URI": f" {uri} "})
    assert settings.catalog_uri == uri
    assert settings.public()["catalog_uri"] == "postgresql+psycopg2://***@127.0.0.1:5432/iceberg"
    shown = " ".join([repr(settings), str(settings), repr(settings.public())])
    assert "catalog-pa55" not in shown and "127.0.0.1:5432/iceberg" in shown


def test_the_catalog_uri_passes_to_subprocesses_through_settings_env(tmp_path):
    settings = LakeSettings(data_root=str(tmp_path), catalog_uri=f"sqlite:///{tmp_path}/c.db")
    assert LakeSettings.from_env(settings_env(settings)) == settings


def test_cli_shows_no_secrets_and_fails_in_one_line(monkeypatch, capsys):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    assert main(["tables"]) == 0
    output = capsys.readouterr().out
    assert "stocks/trades" in output
    assert "url-password-value" not in output
    monkeypatch.setenv("USE_S3", "true")
    assert main(["tables"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("lake-platform: error: USE_S3=true")


def test_resource_overrides_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_ROOT", "/somewhere/else")
    monkeypatch.setenv("BRONZE_MAX_EVENTS", "42")
    settings = LakeResource(data_root=str(tmp_path)).settings()
    assert settings.data_root == str(tmp_path)
    assert settings.bronze_max_events == 42
    assert LakeResource().settings().data_root == "/somewhere/else"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://user:p@ssw0rd@host:4222", "nats://***@host:4222"),
        ("nats://user:pa:ss:wd@host:4222", "nats://***@host:4222"),
        ("nats://user:p%40ss%3Aw@host:4222/x", "nats://***@host:4222/x"),
        ("nats://s3cr3t-t0ken@host", "nats://***@host"),
        ("nats://user:pa/ss@host:4222", "nats://***@host:4222"),
        ("nats://user:p?a#s@host:4222", "nats://***@host:4222"),
        ("user:pass@host:4222", "***@host:4222"),
        ("tls://host:4222", "tls://host:4222"),
    ],
)
def test_url_masking_hides_every_part_of_the_user_info(url, shown):
    assert redact_url(url) == shown


def test_stream_retention_and_replicas():
    default = LakeSettings.from_env({})
    assert default.nats_stream_max_age_s == 7 * 24 * 3600
    assert default.nats_stream_max_bytes is None and default.nats_stream_replicas == 1
    for raw, seconds in (("7d", 604_800), ("12h", 43_200), ("30m", 1_800), ("90", 90)):
        assert LakeSettings.from_env({"NATS_STREAM_MAX_AGE": raw}).nats_stream_max_age_s == seconds
    for raw, size in (("1024", 1024), ("512M", 512 * 2**20), ("10GB", 10 * 2**30)):
        assert LakeSettings.from_env({"NATS_STREAM_MAX_BYTES": raw}).nats_stream_max_bytes == size
    assert LakeSettings.from_env({"NATS_STREAM_REPLICAS": "3"}).nats_stream_replicas == 3


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NATS_STREAM_MAX_AGE": "a week"}, "NATS_STREAM_MAX_AGE must be a duration from"),
        ({"NATS_STREAM_MAX_AGE": "0"}, "NATS_STREAM_MAX_AGE must be a duration from"),
        ({"NATS_STREAM_MAX_BYTES": "10 furlongs"}, "NATS_STREAM_MAX_BYTES must be a size from"),
        ({"NATS_STREAM_REPLICAS": "0"}, "NATS_STREAM_REPLICAS must be a whole number from 1 to 5"),
    ],
)
def test_invalid_retention_fails_with_a_clear_message(env, message):
    with pytest.raises(SettingsError, match=message):
        LakeSettings.from_env(env)


def test_metrics_port_and_host():
    default = LakeSettings.from_env({})
    assert default.metrics_port is None and default.metrics_host == "0.0.0.0"
    chosen = LakeSettings.from_env({"LAKE_METRICS_PORT": "9100", "LAKE_METRICS_HOST": "127.0.0.1"})
    assert (chosen.metrics_port, chosen.metrics_host) == (9100, "127.0.0.1")


@pytest.mark.parametrize("raw", ["0", "65536", "-1", "9100x", "http"])
def test_invalid_metrics_port_fails_with_a_clear_message(raw):
    with pytest.raises(SettingsError, match="LAKE_METRICS_PORT must be a TCP port"):
        LakeSettings.from_env({"LAKE_METRICS_PORT": raw})


def test_bronze_max_buffer_bytes_takes_a_size():
    assert LakeSettings.from_env({}).bronze_max_buffer_bytes == 256 * 2**20
    for raw, size in (("1048576", 2**20), ("64M", 64 * 2**20), ("1GiB", 2**30)):
        assert (
            LakeSettings.from_env({"BRONZE_MAX_BUFFER_BYTES": raw}).bronze_max_buffer_bytes == size
        )
    with pytest.raises(SettingsError, match="BRONZE_MAX_BUFFER_BYTES must be a size from"):
        LakeSettings.from_env({"BRONZE_MAX_BUFFER_BYTES": "0"})


NUMBERS = ("nan", "NaN", "inf", "-inf", "Infinity", "0", "-1", "-0.5", "1e999")
COUNTS = (
    "BRONZE_MAX_EVENTS",
    "GOLD_MAX_EVENTS",
    "BRONZE_MAX_OPEN_BUFFERS",
    "LAKE_AUTOMATION_LOOKBACK_H",
    "NATS_STREAM_REPLICAS",
)
SECONDS = ("BRONZE_MAX_AGE_S", "GOLD_MAX_AGE_S")
QUANTITIES = ("NATS_STREAM_MAX_AGE", "NATS_STREAM_MAX_BYTES", "BRONZE_MAX_BUFFER_BYTES")


@pytest.mark.parametrize("raw", [*NUMBERS, "2.5", "1e3", "10 000", "１０"])
@pytest.mark.parametrize("variable", COUNTS)
def test_counts_accept_only_whole_numbers_in_range(variable, raw):
    with pytest.raises(SettingsError, match=rf"^{variable} must be a whole number from 1 to \d+"):
        LakeSettings.from_env({variable: raw})


@pytest.mark.parametrize("raw", [*NUMBERS, "1e9", "-0"])
@pytest.mark.parametrize("variable", SECONDS)
def test_flush_ages_accept_only_finite_seconds_in_range(variable, raw):
    """`nan` never flushed by age, `inf` broke consumer creation (ack_wait in ns)."""
    with pytest.raises(SettingsError, match=rf"^{variable} must be a number of seconds above 0"):
        LakeSettings.from_env({variable: raw})


@pytest.mark.parametrize("raw", [*NUMBERS, "0.1", "0k", "9" * 400, "10 furlongs"])
@pytest.mark.parametrize("variable", QUANTITIES)
def test_durations_and_sizes_reject_nonsense(variable, raw):
    """`0.1` bytes is 0 (unlimited to JetStream); 400 nines is an infinite float."""
    with pytest.raises(SettingsError, match=rf"^{variable} must be a (duration|size) from "):
        LakeSettings.from_env({variable: raw})


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("bronze_max_age_s", float("nan"), "BRONZE_MAX_AGE_S"),
        ("gold_max_age_s", float("inf"), "GOLD_MAX_AGE_S"),
        ("gold_max_events", 0, "GOLD_MAX_EVENTS"),
        ("bronze_max_open_buffers", -5, "BRONZE_MAX_OPEN_BUFFERS"),
        ("nats_stream_max_bytes", 0, "NATS_STREAM_MAX_BYTES"),
        ("bronze_max_buffer_bytes", -1, "BRONZE_MAX_BUFFER_BYTES"),
        ("metrics_port", 70_000, "LAKE_METRICS_PORT"),
    ],
)
def test_settings_built_in_code_are_validated_too(field, value, variable):
    with pytest.raises(SettingsError, match=rf"^{variable} must be "):
        LakeSettings(**{field: value})


def test_the_edges_of_each_range_are_accepted():
    settings = LakeSettings.from_env(
        {
            "BRONZE_MAX_EVENTS": "1",
            "GOLD_MAX_AGE_S": "0.001",
            "BRONZE_MAX_AGE_S": "86400",
            "NATS_STREAM_REPLICAS": "5",
            "NATS_STREAM_MAX_AGE": "1s",
            "NATS_STREAM_MAX_BYTES": "1",
            "BRONZE_MAX_BUFFER_BYTES": "1k",
        }
    )
    assert (settings.bronze_max_events, settings.gold_max_age_s) == (1, 0.001)
    assert (settings.bronze_max_age_s, settings.nats_stream_replicas) == (86_400, 5)
    assert (settings.nats_stream_max_age_s, settings.nats_stream_max_bytes) == (1, 1)
    assert settings.bronze_max_buffer_bytes == 1024


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("BRONZE_MAX_AGE_S", "nan"), ("GOLD_MAX_AGE_S", "inf"), ("BRONZE_MAX_EVENTS", "-3")],
)
def test_cli_names_the_bad_variable_in_one_line(monkeypatch, capsys, variable, raw):
    monkeypatch.setenv(variable, raw)
    assert main(["tables"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"lake-platform: error: {variable} must be ")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variable", "raw"), [("GOLD_MAX_AGE_S", "inf"), ("LAKE_AUTOMATION_LOOKBACK_H", "0")]
)
def test_ingest_refuses_to_start_with_one_line(tmp_path, variable, raw):
    """A fresh process: settings read while the Dagster definitions are imported fail the same."""
    cli = Path(sys.executable).with_name("lake-platform")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_ROOT": str(tmp_path / "lake")}
    done = subprocess.run(
        [cli, "ingest", "--until-idle"],
        env={**env, variable: raw, "NATS_URL": "nats://127.0.0.1:1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"lake-platform: error: {variable} must be ")
