"""`settings_env`, which hands a test's settings to the subprocesses it starts, hands over
every setting: a subprocess runs with the settings of its test, not with defaults."""

import datetime as dt
from pathlib import Path

from lake_platform.settings import LakeSettings
from lake_platform_tests.conftest import settings_env

SECRET = "s3cret-not-default"


def test_every_setting_passes_through_the_environment(tmp_path: Path):
    settings = LakeSettings(
        data_root=str(tmp_path / "lake"),
        nats_servers=("nats://127.0.0.1:4333", "nats://127.0.0.1:4334"),
        nats_user="lake",
        nats_password=SECRET,
        nats_creds=str(tmp_path / "user.creds"),
        nats_tls_ca=str(tmp_path / "ca.pem"),
        bronze_max_events=7,
        bronze_max_age_s=0.25,
        gold_max_events=9,
        gold_max_age_s=0.75,
        bronze_max_open_buffers=11,
        bronze_max_buffer_bytes=3 * 2**20 + 5,
        partitions_start=dt.datetime(2025, 3, 4, 5, tzinfo=dt.UTC),
        automation_lookback_hours=6,
        nats_stream_max_age_s=7_200.0,
        nats_stream_max_bytes=2**30,
        nats_stream_replicas=3,
        metrics_port=9_876,
        metrics_host="127.0.0.1",
    )
    assert LakeSettings.from_env(settings_env(settings)) == settings


def test_s3_settings_and_a_token_pass_through_the_environment():
    settings = LakeSettings(
        data_root="s3://bucket/lake",
        use_s3=True,
        s3_endpoint="http://127.0.0.1:8333",
        s3_access_key="key",
        s3_secret_key=SECRET,
        s3_region="eu-west-1",
        nats_token=SECRET,
    )
    assert LakeSettings.from_env(settings_env(settings)) == settings
