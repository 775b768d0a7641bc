"""Silver under faults: a rebuild SIGKILLed mid-replacement, two rebuilds of one hour at once,
an unreadable Bronze file.

The rebuilds run as real processes (`lake_platform_tests.derived_child`) on a local lake;
the kill points are chosen by a seeded random generator among the files the rebuild writes.
"""

import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import fsspec
import polars as pl
import pytest

from lake_platform.commands.dagster_runs import RANGE_END_TAG, RANGE_START_TAG, materialize_hours
from lake_platform.definitions import defs
from lake_platform.defs.gold.assets import GOLD_ASSETS
from lake_platform.defs.keys import derived_key
from lake_platform.defs.partitions import partition_key_for
from lake_platform.defs.resources import LakeResource
from lake_platform.defs.silver.assets import SILVER_ASSETS
from lake_platform.derived.checking import check_hour
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import GOLD_BARS, SILVER_TABLES
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.paths import hour_folder
from lake_platform.tables.hours import hour_predicate
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform.tables.maintenance import GRACE_S, maintain_table
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.tables_of import committed_files, tables_of

TABLE = SILVER_TABLES["stocks/trades"]
SILVER = next(a for a in SILVER_ASSETS if a.key.path == ["silver", "stocks", "trades"])
BARS = next(a for a in GOLD_ASSETS if a.key == derived_key(GOLD_BARS.target))
SYMBOLS = tuple(f"S{i:02d}" for i in range(24))
SEED = int(os.environ.get("LAKE_FAULT_SEED", "20251216"))
KILLS = int(os.environ.get("LAKE_FAULT_KILLS", "3"))
"""Kills of the mid-replacement test: at most 25 (one per file started, the last excluded)."""


def local_store(root: Path) -> LakeStore:
    return LakeStore(str(root), fsspec.filesystem("file"))


def child(root: Path, *options: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "lake_platform_tests.derived_child", str(root)]
    return subprocess.Popen(
        [*command, "stocks/trades", HOUR.isoformat(), *options],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def add_bronze(store: LakeStore, count: int, symbols: tuple[str, ...], seed: int) -> None:
    messages = trades(count, symbols=symbols, seed=seed)
    for i, message in enumerate(messages):
        message["seq"] = seed * 100_000 + i
    write_bronze(store, TRADES, bronze_rows(TRADES, messages))


def silver_files(store: LakeStore, hour: dt.datetime = HOUR) -> dict[str, bytes]:
    """Every Silver file of the hour a reader of the catalog sees (its current snapshot)."""
    committed = committed_files(store, TABLE, hour)
    return {path: store.read_bytes(path) for paths in committed.values() for path in paths}


def clean_rebuild(root: Path, work: Path) -> dict[str, bytes]:
    """Silver of the hour rebuilt from a copy of the current Bronze, in one undisturbed run."""
    shutil.copytree(root / "bronze", work / "bronze")
    store = local_store(work)
    rebuild_hour(tables_of(store), TABLE, HOUR)
    return silver_files(store)


def event_ids(files: dict[str, bytes]) -> pl.Series:
    frames = [pl.read_parquet(body, columns=["event_id"]) for body in files.values()]
    return pl.concat(frames).get_column("event_id") if frames else pl.Series(dtype=pl.String)


def catalog_reader_ids(root: Path) -> pl.Series:
    """The hour's `event_id`s as a reader of the catalog sees them (a new process's view)."""
    table = tables_of(local_store(root)).table(TABLE)
    scan = table.scan(row_filter=hour_predicate(HOUR), selected_fields=("event_id", "date", "hour"))
    return pl.from_arrow(scan.to_arrow()).get_column("event_id")


def kill_after_writes(root: Path, writes: int) -> None:
    """Run a rebuild and SIGKILL it as soon as it starts writing its `writes`-th file (its
    earlier files written, the hour not committed)."""
    process = child(root)
    assert process.stdout is not None
    done = 0
    for line in process.stdout:
        done += line.startswith("writing ")
        if done == writes:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"seed {SEED}: the rebuild ended first"


@pytest.mark.slow
def test_a_rebuild_killed_mid_replacement_leaves_whole_files_and_the_next_run_repairs(
    tmp_path,
):
    """Bronze grows between the first Silver and the killed rebuilds: a reader of the catalog
    sees exactly the old Silver after every kill (the files written are not committed), and
    one more run gives exactly the Silver of a clean rebuild; maintenance removes the killed
    runs' files once their grace period is over."""
    rng = random.Random(SEED)
    root = tmp_path / "lake"
    store = local_store(root)
    add_bronze(store, 600, SYMBOLS, seed=1)
    rebuild_hour(tables_of(store), TABLE, HOUR)
    old = silver_files(store)
    add_bronze(store, 300, (*SYMBOLS, "NEW1", "NEW2"), seed=2)

    for writes in sorted(rng.sample(range(2, len(SYMBOLS) + 2), KILLS)):
        kill_after_writes(root, writes)
        where = f"seed {SEED}, killed after {writes} files"
        assert silver_files(store) == old, where
        assert sorted(catalog_reader_ids(root)) == sorted(event_ids(old)), where
    left = set(store.list_files("silver")) - set(old)
    assert left, "the killed runs wrote files"
    new = clean_rebuild(root, tmp_path / "clean")

    rebuilt = rebuild_hour(tables_of(store), TABLE, HOUR)
    assert silver_files(store) == new
    assert all(outcome.passed for outcome in check_hour(tables_of(store), TABLE, rebuilt).values())
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=GRACE_S + 60)
    report = maintain_table(tables_of(store), TABLE, now=later, retention_s=1)
    remaining = set(store.list_files("silver"))
    assert set(new) <= remaining and not (left - set(new)) & remaining, report


@pytest.mark.slow
def test_two_rebuilds_of_the_same_hour_at_once_end_with_the_clean_result(tmp_path):
    root = tmp_path / "lake"
    store = local_store(root)
    add_bronze(store, 600, SYMBOLS, seed=1)
    first, second = child(root), child(root)
    for process in (first, second):
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0 and "done 600 rows" in output
    assert silver_files(store) == clean_rebuild(root, tmp_path / "clean")


@pytest.mark.slow
def test_a_rebuild_overtaken_by_a_newer_one_does_not_undo_it(tmp_path):
    """Run A reads the hour and is held before its first write; Bronze then gains events of
    an existing value and a new value, and run B rebuilds and commits the hour in full. When
    A goes on, its commit of an older version over B's is refused (the hour changed since A
    read it) and A rebuilds: the hour ends as a clean rebuild, one version live, no event
    lost."""
    root = tmp_path / "lake"
    store = local_store(root)
    add_bronze(store, 200, SYMBOLS[:4], seed=1)
    held = child(root, "--pause-before-first-write")
    assert held.stdout is not None and held.stdin is not None
    assert held.stdout.readline().startswith("writing ")
    add_bronze(store, 100, (*SYMBOLS[:4], "ZZZ"), seed=2)
    overtaking = child(root)
    output, _ = overtaking.communicate(timeout=120)
    assert overtaking.returncode == 0 and "done 300 rows" in output

    output, _ = held.communicate("go\n", timeout=120)
    assert held.returncode == 0, output
    silver = silver_files(store)
    assert silver == clean_rebuild(root, tmp_path / "clean")
    assert event_ids(silver).len() == 300


def corrupt(store: LakeStore, path: str, how: str) -> None:
    body = store.read_bytes(path)
    if how == "truncated":
        damaged = body[: len(body) // 2]
    else:  # the data pages overwritten, the footer intact
        damaged = body[:4] + b"\xff" * (len(body) // 2) + body[4 + len(body) // 2 :]
    store.write_bytes(damaged, path)


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_an_unreadable_bronze_file_is_named(lake: LakeStore, how):
    paths = write_bronze(lake, TRADES, bronze_rows(TRADES, trades(40, symbols=("SPY",))), files=3)
    corrupt(lake, paths[1], how)
    with pytest.raises(StorageError) as raised:
        lake.read_parquet(paths)
    assert raised.value.kind == "rejected"
    assert f"{paths[1]}: not a readable Parquet file" in str(raised.value)


def recent_hours() -> tuple[dt.datetime, dt.datetime]:
    """Two consecutive hours inside the automation's lookback."""
    first = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).replace(
        minute=0, second=0, microsecond=0
    )
    return first, first + dt.timedelta(hours=1)


def step_failure_message(run: dg.ExecuteInProcessResult) -> str:
    (failure,) = [event for event in run.all_events if event.is_step_failure]
    return failure.step_failure_data.error.message


def assert_only_the_good_hour_is_recorded(
    instance: dg.DagsterInstance, run: dg.ExecuteInProcessResult, good: str, rows: int
) -> None:
    """The good hour is materialized (with its partition and its own metadata) and checked,
    hour by hour; nothing of the failed hour is recorded."""
    assert instance.get_materialized_partitions(SILVER.key) == {good}
    (materialization,) = run.get_asset_materialization_events()
    recorded = materialization.step_materialization_data.materialization
    assert recorded.partition == good
    assert recorded.metadata["hour_written_rows"].value == rows
    assert recorded.metadata["rows_written"].value == rows
    evaluations = run.get_asset_check_evaluations()
    assert {(e.check_name, e.partition, e.passed) for e in evaluations} == {
        (name, good, True) for name in TABLE.check_names
    }


@pytest.mark.slow
def test_a_corrupt_bronze_file_fails_its_hour_only_and_the_good_hour_is_recorded(tmp_path):
    """One run of Silver and Gold over two hours, one with a truncated Bronze file: the step
    fails naming the file and the hour; the other hour is rebuilt, recorded as materialized
    with its checks, and automation runs Gold on its new Silver (the failed run skipped Gold).

    Before, the step failed before yielding anything: the good hour's new files were on disk
    but Dagster never heard of them."""
    store = local_store(tmp_path / "lake")
    bad_hour, good_hour = recent_hours()
    rows = bronze_rows(TRADES, trades(60, hour=bad_hour) + trades(60, seed=3, hour=good_hour))
    paths = write_bronze(store, TRADES, rows, files=2)
    bad_file = next(path for path in paths if hour_folder(bad_hour) in path and "SPY" in path)
    corrupt(store, bad_file, "truncated")
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    bad, good = partition_key_for(bad_hour), partition_key_for(good_hour)
    with dg.instance_for_test() as instance:
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
        run = materialize_hours([SILVER, BARS], instance, settings, bad, good)
        assert not run.success
        message = step_failure_message(run)
        assert "1 of 2 hours failed" in message and f"{bad}: cannot read" in message
        assert f"{bad_file}: not a readable Parquet file" in message
        assert_only_the_good_hour_is_recorded(instance, run, good, 60)
        assert not instance.get_materialized_partitions(BARS.key)
        automation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        assert automation.get_requested_partitions(BARS.key) == {good}
    assert event_ids(silver_files(store, good_hour)).len() == 60


class FailingReads(LakeStore):
    """A local lake whose reads of files below `folder` fail, as in a storage outage."""

    def __init__(self, root: str, folder: str) -> None:
        super().__init__(root, fsspec.filesystem("file"))
        self.folder = folder

    def read_bytes(self, relative: str) -> bytes:
        if relative.startswith(self.folder):
            raise StorageError(f"cannot read {relative}: storage unavailable")
        return super().read_bytes(relative)


class LakeFailingReads(LakeResource):
    """The lake, with reads below `folder` failing (after the rebuild wrote there)."""

    folder: str

    def tables(self) -> LakeTables:
        store = FailingReads(str(self.data_root), self.folder)
        return open_lake_tables(self.settings(), store)


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_a_corrupt_stored_silver_file_fails_the_checks_of_its_hour_naming_it(tmp_path, how):
    """A stored file of the hour that is not valid Parquet when the checks read it back: the
    checks of that hour fail with a `rejected` error naming the file, like an unreadable input;
    the other hour checks out. Before, pyarrow's or Polars' own error escaped (not a
    `StorageError`), and the asset's step failed for every hour of the run."""
    store = local_store(tmp_path / "lake")
    bad_hour, good_hour = HOUR, HOUR + dt.timedelta(hours=1)
    rows = bronze_rows(TRADES, trades(40, hour=bad_hour) + trades(30, seed=3, hour=good_hour))
    write_bronze(store, TRADES, rows)
    bad, good = (rebuild_hour(tables_of(store), TABLE, hour) for hour in (bad_hour, good_hour))
    bad_file = bad.files[0].path
    corrupt(store, bad_file, how)
    with pytest.raises(StorageError) as raised:
        check_hour(tables_of(store), TABLE, bad)
    assert raised.value.kind == "rejected"
    assert f"{bad_file}: not a readable Parquet file" in str(raised.value)
    assert all(outcome.passed for outcome in check_hour(tables_of(store), TABLE, good).values())


class CorruptReads(LakeStore):
    """A local lake whose files below `folder` read back truncated, as from a damaged disk."""

    def __init__(self, root: str, folder: str) -> None:
        super().__init__(root, fsspec.filesystem("file"))
        self.folder = folder

    def read_bytes(self, relative: str) -> bytes:
        body = super().read_bytes(relative)
        return body[: len(body) // 2] if relative.startswith(self.folder) else body


class LakeCorruptReads(LakeResource):
    """The lake, with files below `folder` reading back truncated (after the rebuild wrote
    them)."""

    folder: str

    def tables(self) -> LakeTables:
        store = CorruptReads(str(self.data_root), self.folder)
        return open_lake_tables(self.settings(), store)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lake_kind", "error"),
    [
        ("failing", ("cannot read {folder}",)),
        ("corrupt", ("{folder}/part-00000-", ".parquet: not a readable Parquet file")),
    ],
    ids=["storage_error", "corrupt_file"],
)
def test_a_failure_reading_an_hour_back_for_its_checks_fails_that_hour_only(
    tmp_path, lake_kind, error
):
    """Reading one hour's rebuilt files back for the checks fails (a storage error; a file
    that is not valid Parquet): that hour fails by name like a failed rebuild, the other is
    rebuilt, checked and recorded. Before, the error (a `StorageError`, pyarrow's
    `ArrowInvalid`) escaped the step and nothing was recorded, the good hour neither."""
    store = local_store(tmp_path / "lake")
    bad_hour, good_hour = recent_hours()
    rows = bronze_rows(TRADES, trades(40, hour=bad_hour) + trades(30, seed=3, hour=good_hour))
    write_bronze(store, TRADES, rows)
    bad, good = partition_key_for(bad_hour), partition_key_for(good_hour)
    folder = f"silver/{TRADES.table}/symbol=SPY/{hour_folder(bad_hour)}"
    lake_class = {"failing": LakeFailingReads, "corrupt": LakeCorruptReads}[lake_kind]
    lake = lake_class(data_root=str(tmp_path / "lake"), folder=folder)
    with dg.instance_for_test() as instance:
        run = dg.materialize(
            [SILVER],
            instance=instance,
            resources={"lake": lake},
            tags={RANGE_START_TAG: bad, RANGE_END_TAG: good},
            raise_on_error=False,
        )
        assert not run.success
        message = step_failure_message(run)
        assert "1 of 2 hours failed" in message
        assert all(fragment.format(folder=folder) in message for fragment in error), message
        assert_only_the_good_hour_is_recorded(instance, run, good, 30)
