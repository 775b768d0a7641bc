"""Commits on a real local lake whose writes fail for real, part way through a commit.

A file the store rejects (a name too long for the filesystem) is quarantined and the rest of
the commit goes through; a transient failure (a file where a folder should be) commits what
was written and retries only the rest, so no file is ever written twice or left unnamed by
a ledger entry.
"""

import json
import time
from pathlib import Path

import msgspec
import polars as pl
import pytest

from lake_platform.defs.bronze.reporting import instance_reporter
from lake_platform.ingest.buffers import Buffer, Buffers
from lake_platform.ingest.commit import Commit, commit
from lake_platform.ingest.file_writes import Written
from lake_platform.ingest.ledger import LedgerEntry
from lake_platform.ingest.pull import PulledMessages
from lake_platform.ingest.quarantine_writes import REJECTED_QUARANTINE
from lake_platform.ingest.reports import report_entry
from lake_platform.ingest.route import RoutedMessages, route
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore, StorageError
from lake_platform.timestamps import HOUR_NS
from lake_platform_tests.samples import SAMPLES

EARLIEST_NS = 1_704_067_200 * 10**9


def routed(name: str, values: list[str], first_seq: int) -> RoutedMessages:
    """Messages of schema `name`, one per partition value, routed as the ingest does."""
    stream = "SIGNALS" if name == "levels.signals" else "MARKET"
    sample = SAMPLES[name]
    now = time.time_ns()
    payloads = [
        json.dumps({**sample, "ts_event_ns": now - i, "symbol": value}).encode()
        for i, value in enumerate(values)
    ]
    seqs = range(first_seq, first_seq + len(values))
    return route(
        PulledMessages(
            stream=stream,
            subjects=[f"market.{name}.{value}" for value in values],
            payloads=payloads,
            replies=[f"$JS.ACK.{stream}.lake-bronze.1.{seq}.{seq}.{now}.0" for seq in seqs],
            headers=[None] * len(values),
        ),
        earliest_ns=EARLIEST_NS,
        now_ns=now,
    )


def buffers_of(settings: LakeSettings, *parts: RoutedMessages) -> list[Buffer]:
    buffers = Buffers(settings)
    for part in parts:
        buffers.add(part)
    return buffers.take_all()


def with_symbol(part: RoutedMessages, symbol: str) -> RoutedMessages:
    """The same rows with a partition value the decoder would refuse, as another store's
    limits might: the filesystem rejects its folder name."""
    ((schema, rows),) = part.rows
    return RoutedMessages(
        rows=[(schema, rows.with_columns(symbol=pl.lit(symbol)))],
        quarantine=part.quarantine,
        unknown_field_messages={},
    )


def run_commit(store: LakeStore, buffers: list[Buffer], written: Written, **options) -> Commit:
    return commit(
        store, buffers, written=written, writer="test", unknown_field_messages={}, **options
    )


def ledger(root: Path) -> list[LedgerEntry]:
    return [
        msgspec.json.decode(path.read_bytes(), type=LedgerEntry)
        for path in sorted((root / "_ledger").rglob("*.json"))
    ]


def bronze_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in (root / "bronze").rglob("*.parquet")}


def assert_every_file_named_once(root: Path, seqs: set[int]) -> None:
    """No orphan: every Bronze file is in exactly one ledger entry; every row once."""
    named = [file.path for entry in ledger(root) for file in entry.files]
    assert sorted(named) == sorted(bronze_files(root))
    landed = [pl.read_parquet(root / path, columns=["_stream_seq"]) for path in named]
    assert sorted(pl.concat(landed).get_column("_stream_seq").to_list()) == sorted(seqs)


@pytest.fixture
def settings(tmp_path: Path) -> LakeSettings:
    return LakeSettings(data_root=str(tmp_path / "lake"))


def test_a_rejected_file_is_quarantined_and_the_rest_of_the_commit_goes_through(settings):
    root = Path(settings.data_root)
    good = routed("stocks.trades", ["SPY", "QQQ"], first_seq=1)
    poison = with_symbol(routed("stocks.trades", ["X", "Y"], first_seq=3), "x" * 300)
    later = routed("stocks.quotes", ["SPY"], first_seq=5)
    buffers = buffers_of(settings, good, poison, later)
    done = run_commit(LakeStore.from_settings(settings), buffers, Written())

    assert done.error is None and done.unwritten == []
    assert sorted(int(reply.split(".")[5]) for reply in done.replies) == [1, 2, 3, 4, 5]
    assert_every_file_named_once(root, {1, 2, 5})
    (entry,) = ledger(root)
    assert sorted((bad.subject, bad.rows) for bad in entry.quarantine) == [
        ("market.stocks.trades.X", 1),
        ("market.stocks.trades.Y", 1),
    ]
    quarantined = pl.concat(
        [pl.read_parquet(path) for path in (root / "_quarantine").rglob("*.parquet")]
    )
    assert sorted(quarantined.get_column("stream_seq").to_list()) == [3, 4]
    assert quarantined.get_column("error").str.starts_with("storage rejected").all()
    assert "File name too long" in quarantined.get_column("error")[0]
    payload = json.loads(quarantined.get_column("payload")[0])
    assert payload["symbol"] == "x" * 300 and payload["price"] == SAMPLES["stocks.trades"]["price"]


def test_a_transient_failure_commits_what_was_written_and_retries_only_the_rest(settings):
    root = Path(settings.data_root)
    store = LakeStore.from_settings(settings)
    blocker = root / "bronze" / "stocks" / "quotes"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder should be: writes below it fail")
    trades = routed("stocks.trades", ["SPY", "QQQ"], first_seq=1)
    quotes = routed("stocks.quotes", ["SPY"], first_seq=3)
    written = Written()
    first = run_commit(store, buffers_of(settings, trades, quotes), written)

    assert first.error is not None and first.error.kind == "transient"
    left = {(buffer.key.schema.table, buffer.key.value) for buffer in first.unwritten}
    assert ("stocks/quotes", "SPY") in left
    acked = {int(reply.split(".")[5]) for reply in first.replies}
    assert acked <= {1, 2} and len(acked) + len(left) == 3  # trades written unless untried
    assert_every_file_named_once(root, acked)

    blocker.unlink()
    second = run_commit(store, first.unwritten, written)
    assert second.error is None
    assert acked | {int(reply.split(".")[5]) for reply in second.replies} == {1, 2, 3}
    assert_every_file_named_once(root, {1, 2, 3})


def test_a_file_left_for_the_retry_holds_its_own_rows_only(settings):
    """The rows a commit takes are one frame; a file left for the retry copies its rows out,
    so a value that keeps failing does not keep every earlier commit's rows in memory."""
    root = Path(settings.data_root)
    blocker = root / "bronze" / "stocks" / "trades" / "symbol=ZZZ"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder should be")
    values = [f"S{i:04d}" for i in range(500)] + ["ZZZ"]
    done = run_commit(
        LakeStore.from_settings(settings),
        buffers_of(settings, routed("stocks.trades", values, first_seq=1)),
        Written(),
    )
    zzz = next(buffer for buffer in done.unwritten if buffer.key.value == "ZZZ")
    (planned,) = zzz.planned
    seqs = planned.frame.get_column("_stream_seq").to_arrow()
    assert seqs.to_pylist() == [501]
    assert seqs.offset == 0 and seqs.buffers()[1].size == 8


def test_a_failed_ledger_write_keeps_its_files_for_the_retry(settings):
    root = Path(settings.data_root)
    store = LakeStore.from_settings(settings)
    root.mkdir(parents=True)
    (root / "_ledger").write_text("a file where the ledger folder should be")
    written = Written()
    first = run_commit(
        store, buffers_of(settings, routed("stocks.trades", ["SPY"], first_seq=1)), written
    )
    assert first.entry is None and first.replies == [] and first.error is not None
    assert written and len(bronze_files(root)) == 1

    (root / "_ledger").unlink()
    second = run_commit(store, [], written)
    assert second.entry is not None and len(second.replies) == 1
    assert not written
    assert_every_file_named_once(root, {1})


def test_the_ledger_is_written_before_reporting_and_marked_once_reported(settings, tmp_path):
    import dagster as dg

    root = Path(settings.data_root)
    store = LakeStore.from_settings(settings)
    hours = routed("stocks.trades", ["SPY", "QQQ"], first_seq=1)
    ((schema, rows),) = hours.rows
    two_hours = RoutedMessages(
        rows=[(schema, rows.with_columns(pl.col("ts_event_ns") - pl.int_range(2) * HOUR_NS))],
        quarantine=hours.quarantine,
        unknown_field_messages={},
    )
    seen_on_disk: list[bool] = []

    def reporter(entry: LedgerEntry) -> bool:
        seen_on_disk.append([e.entry_id for e in ledger(root)] == [entry.entry_id])
        return instance_reporter(instance)(entry)

    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        done = run_commit(store, buffers_of(settings, two_hours), Written())
        assert done.entry is not None
        entry = report_entry(store, done.entry, reporter)
        records = instance.fetch_materializations(
            dg.AssetKey(["bronze", "stocks", "trades"]), limit=10
        ).records
    assert seen_on_disk == [True]
    assert entry.reported and not done.entry.reported
    assert [entry.reported for entry in ledger(root)] == [True]
    assert len({record.partition_key for record in records}) == 2


def test_a_reporting_failure_leaves_the_entry_unreported_for_the_sensor(settings, tmp_path, caplog):
    """A Dagster instance whose storage cannot be written (here: a folder in place of its
    database file) fails the report; the commit and its acks go through regardless."""
    import dagster as dg

    root = Path(settings.data_root)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        reporter = instance_reporter(instance)
        for database in (tmp_path / "dagster").rglob("*.db"):
            database.unlink()
            database.mkdir()
        store = LakeStore.from_settings(settings)
        done = run_commit(
            store, buffers_of(settings, routed("stocks.trades", ["SPY"], first_seq=1)), Written()
        )
        assert done.entry is not None
        entry = report_entry(store, done.entry, reporter)
    assert not entry.reported
    assert len(done.replies) == 1
    assert [entry.reported for entry in ledger(root)] == [False]
    assert "cannot report entry" in caplog.text


class AmbiguousStore(LakeStore):
    """A real local store whose next Parquet write stores the file, then fails as a timed-out
    S3 PUT or a failed folder sync does: the caller cannot tell whether the file exists."""

    fail_next_write = True

    def write_parquet_files(
        self, files: list[tuple[pl.DataFrame, str]]
    ) -> list[int | StorageError]:
        results = super().write_parquet_files(files)
        if self.fail_next_write:
            self.fail_next_write = False
            results[0] = StorageError(f"write {files[0][1]}: timed out", "transient")
        return results


def test_a_retry_after_an_ambiguous_failure_overwrites_the_same_file(settings):
    root = Path(settings.data_root)
    store = AmbiguousStore.from_settings(settings)
    written = Written()
    first = run_commit(
        store, buffers_of(settings, routed("stocks.trades", ["SPY", "QQQ"], first_seq=1)), written
    )
    assert first.error is not None and first.entry is not None
    assert len(first.entry.files) == 1 and len(first.replies) == 1
    assert len(bronze_files(root)) == 2  # the ambiguous file exists, named by no entry yet

    second = run_commit(store, first.unwritten, written)
    assert second.error is None and len(second.replies) == 1
    assert len(bronze_files(root)) == 2
    assert_every_file_named_once(root, {1, 2})


def quarantined_seqs(root: Path) -> list[int]:
    """`stream_seq` of every quarantine record on disk, duplicates kept."""
    files = sorted((root / "_quarantine").rglob("*.parquet"))
    return sorted(pl.concat([pl.read_parquet(f) for f in files]).get_column("stream_seq"))


def test_a_rejected_file_split_failing_part_way_is_retried_without_duplicates(settings):
    """The rejected file's records of subject Y (the earlier event) are written, then those
    of X fail (a file where X's quarantine folder should be); the retry writes Y's file
    again, not a copy."""
    root = Path(settings.data_root)
    store = LakeStore.from_settings(settings)
    blocker = root / "_quarantine" / "market.stocks.trades.X"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where a folder should be")
    poison = with_symbol(routed("stocks.trades", ["X", "Y"], first_seq=1), "x" * 300)
    written = Written()
    first = run_commit(store, buffers_of(settings, poison), written)
    assert first.error is not None and first.error.kind == "transient"
    assert quarantined_seqs(root) == [2]

    blocker.unlink()
    second = run_commit(store, first.unwritten, written)
    assert second.error is None and len(second.replies) == 2
    assert quarantined_seqs(root) == [1, 2]
    named = sorted(bad.path for entry in ledger(root) for bad in entry.quarantine)
    on_disk = sorted(str(f.relative_to(root)) for f in (root / "_quarantine").rglob("*.parquet"))
    assert named == on_disk


def test_a_rejected_quarantine_file_goes_to_the_last_resort_folder_and_the_rest_lands(
    tmp_path,
):
    """A lake root so deep that a long subject's quarantine path passes the filesystem's
    path limit (ENAMETOOLONG, a real rejection) while `_quarantine/_rejected/` fits."""
    deep = tmp_path / "d"
    while len(str(deep).encode()) < 4096 - 200:
        deep = deep / ("d" * min(200, 4096 - 200 - len(str(deep).encode())))
    deep.mkdir(parents=True)
    settings = LakeSettings(data_root=str(deep / "lake"))
    root = Path(settings.data_root)
    subject = "market.unknown." + "u" * 180
    stray = route(
        PulledMessages(
            stream="MARKET",
            subjects=[subject],
            payloads=[b"{}"],
            replies=["$JS.ACK.MARKET.lake-bronze.1.1.1.1.0"],
            headers=[None],
        ),
        earliest_ns=EARLIEST_NS,
        now_ns=time.time_ns(),
    )
    good = routed("stocks.trades", ["SPY"], first_seq=2)
    quarantine, bronze = buffers_of(settings, good, stray)[::-1]
    assert quarantine.key.is_quarantine
    done = run_commit(LakeStore.from_settings(settings), [quarantine, bronze], Written())

    assert done.error is None and done.unwritten == []
    assert sorted(int(reply.split(".")[5]) for reply in done.replies) == [1, 2]
    assert_every_file_named_once(root, {2})
    (entry,) = ledger(root)
    (bad,) = entry.quarantine
    assert bad.path.startswith(f"{REJECTED_QUARANTINE}/date=") and bad.subject == subject
    assert pl.read_parquet(root / bad.path).get_column("subject").to_list() == [subject]
