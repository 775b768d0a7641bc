"""What killed writes leave behind is swept: local temporaries and S3 multipart uploads older
than a bound go, a write in flight stays."""

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from lake_platform.commands.init import init_lake
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.storage.store import TEMPORARY_MAX_AGE_S
from lake_platform_tests.conftest import s3_settings

RELATIVE = "silver/t/symbol=SPY/date=2025-12-16/hour=14/part-00000.parquet"
KILLED_WRITER = """
import sys, time
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore

def write(handle):
    handle.write(b"PAR1 the first bytes of a file")
    handle.flush()
    print("writing", flush=True)
    time.sleep(600)

LakeStore.from_settings(LakeSettings(data_root=sys.argv[1]))._write(sys.argv[2], write)
"""
"""A writer that is SIGKILLed (by the test) in the middle of its write."""
DEADLINE_S = 60


def killed_write(root: Path, relative: str) -> Path:
    """Run a writer of `relative`, SIGKILL it mid-write; the temporary file it leaves."""
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root), relative],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(DEADLINE_S)
    folder = (root / relative).parent
    (left,) = [path for path in folder.iterdir() if path.name.startswith(".")]
    return left


def backdate(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


@pytest.mark.slow
def test_a_killed_writers_old_temporary_is_swept_and_a_write_in_flight_is_kept(tmp_path):
    root = tmp_path / "lake"
    lake = LakeStore.from_settings(LakeSettings(data_root=str(root)))
    lake.write_parquet(pl.DataFrame({"a": [1]}), RELATIVE)
    left = killed_write(root, RELATIVE)
    in_flight = killed_write(root, "_ledger/date=2025-12-16/hour=14/1-a.json")
    not_ours = root / "silver/t/.keep"
    not_ours.write_bytes(b"")
    backdate(not_ours, 2 * TEMPORARY_MAX_AGE_S)

    assert lake.sweep_temporaries() == []  # both may still be writes in flight
    backdate(left, TEMPORARY_MAX_AGE_S + 60)
    removed = lake.sweep_temporaries()

    assert removed == [str(left.relative_to(root))]
    assert not left.exists() and in_flight.exists() and not_ours.exists()
    assert lake.read_parquet([RELATIVE])["a"].to_list() == [1]


@pytest.mark.slow
def test_init_sweeps_old_temporaries_and_says_so(tmp_path):
    root = tmp_path / "lake"
    left = killed_write(root, RELATIVE)
    backdate(left, TEMPORARY_MAX_AGE_S + 60)
    said: list[str] = []
    init_lake(LakeSettings(data_root=str(root)), said.append)
    assert not left.exists()
    assert said[-1] == "removed 1 temporary file older than 1 h left by interrupted writes"


@pytest.mark.slow
def test_stale_s3_multipart_uploads_are_aborted_and_fresh_ones_kept(s3_server):
    bucket = f"lake-{secrets.token_hex(4)}"
    s3_server.create_bucket(bucket)
    lake = LakeStore.from_settings(s3_settings(s3_server, bucket))
    key = lake.full_path(RELATIVE).split("/", 1)[1]
    upload = lake.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    lake.fs.call_s3(
        "upload_part",
        Bucket=bucket,
        Key=key,
        UploadId=upload["UploadId"],
        PartNumber=1,
        Body=b"x" * 1024,
    )
    assert lake.sweep_temporaries() == []  # just started: a write in flight
    assert lake.sweep_temporaries(older_than_s=0) == [RELATIVE]
    assert not lake.fs.call_s3("list_multipart_uploads", Bucket=bucket).get("Uploads")
