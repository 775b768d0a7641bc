"""A panic (Polars' `PanicException`, a `BaseException`) or another unexpected error in a
commit outside the file writes, e.g. in the ledger write: a storage failure retried with
backoff, not the end of the worker; the retry writes the same ledger entry again (same
name), so an entry stored before the failure is overwritten, not doubled."""

import asyncio
from pathlib import Path

import polars as pl
import pytest

from lake_platform.ingest.file_writes import Written
from lake_platform.ingest.service import IngestService
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform_tests.test_commit import (
    assert_every_file_named_once,
    buffers_of,
    ledger,
    routed,
    run_commit,
)
from lake_platform_tests.test_ingest_hardening import consumer_infos, trade
from lake_platform_tests.test_ingest_hardening2 import WAIT_S, publish_core


class PanicsAfterTheLedgerWrite(LakeStore):
    """A real local store that raises a `PanicException` once, right after it has stored a
    ledger entry (the caller cannot tell whether the entry is stored)."""

    panics_left: int

    def write_bytes(self, body: bytes, relative: str) -> int:
        size = super().write_bytes(body, relative)
        if relative.startswith("_ledger/") and self.panics_left:
            self.panics_left -= 1
            raise pl.exceptions.PanicException("fault injected: panicked after the ledger write")
        return size


def panicking_store(settings: LakeSettings, panics: int = 1) -> PanicsAfterTheLedgerWrite:
    store = PanicsAfterTheLedgerWrite(settings.data_root, LakeStore.from_settings(settings).fs)
    store.panics_left = panics
    return store


@pytest.fixture
def settings(tmp_path: Path) -> LakeSettings:
    return LakeSettings(data_root=str(tmp_path / "lake"))


def test_a_panic_in_the_ledger_write_is_a_storage_failure_and_the_retry_rewrites_its_entry(
    settings,
):
    """The retry brings new buffers: the earlier entry is written again under its name, the
    new files get an entry of their own; every file named once, every ack returned once."""
    root = Path(settings.data_root)
    store, written = panicking_store(settings), Written()
    first = run_commit(
        store, buffers_of(settings, routed("stocks.trades", ["SPY", "QQQ"], first_seq=1)), written
    )
    assert first.entry is None and first.replies == []
    assert first.error is not None and "PanicException" in str(first.error)
    assert written and len(ledger(root)) == 1  # stored, but the commit cannot know

    second = run_commit(
        store, buffers_of(settings, routed("stocks.trades", ["IWM"], first_seq=3)), written
    )
    assert second.error is None and not written
    assert len(second.entries) == 2 and len(ledger(root)) == 2
    assert sorted(second.replies) == sorted(set(second.replies)) and len(second.replies) == 3
    assert_every_file_named_once(root, {1, 2, 3})


def test_a_retry_whose_earlier_entry_fails_again_keeps_everything_for_the_next(settings):
    root = Path(settings.data_root)
    store, written = panicking_store(settings, panics=2), Written()
    run_commit(store, buffers_of(settings, routed("stocks.trades", ["SPY"], first_seq=1)), written)
    second = run_commit(
        store, buffers_of(settings, routed("stocks.trades", ["QQQ"], first_seq=2)), written
    )
    assert second.entries == () and second.error is not None
    assert [b.key.value for b in second.unwritten] == ["QQQ"]

    third = run_commit(store, second.unwritten, written)
    assert third.error is None and len(third.entries) == 2 and len(third.replies) == 2
    assert_every_file_named_once(root, {1, 2})


@pytest.mark.slow
def test_an_ingest_whose_ledger_write_panics_retries_and_ends_normally(tmp_path, nats_server):
    """On a real nats-server: the first ledger write panics (after storing the entry); the
    run backs off, writes the same entry again, acks everything and ends normally (the panic
    used to escape `IngestService.run`)."""
    settings = LakeSettings(
        data_root=str(tmp_path / "lake"), nats_servers=(nats_server.url,), bronze_max_age_s=0.2
    )
    asyncio.run(
        publish_core(
            nats_server.url, [("market.stocks.trades.SPY", trade("SPY", i)) for i in range(10)]
        )
    )
    service = IngestService(settings, panicking_store(settings), writer="test")
    stats = asyncio.run(service.run(until_idle=True, max_seconds=WAIT_S))

    assert stats.rows == 10 and stats.storage_errors == 1
    assert "PanicException" in (stats.last_error or "")
    assert_every_file_named_once(Path(settings.data_root), set(range(1, 11)))
    infos = asyncio.run(consumer_infos(nats_server.url))
    assert all(info.num_pending + info.num_ack_pending == 0 for info in infos.values())
