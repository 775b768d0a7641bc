"""Thousands of partition values inside one hour: open buffers are capped
(`BRONZE_MAX_OPEN_BUFFERS`), the oldest flush past the cap, and every event lands.
Throughput and peak memory with 20,000 values are measured by `benchmarks/partitions.py`."""

import asyncio
import dataclasses
import json
import time

import nats
import pytest

from lake_platform.ingest.buffers import Buffers
from lake_platform.ingest.jetstream import ensure_streams
from lake_platform.ingest.service import IngestService, writer_name
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.session import read_table
from lake_platform_tests.test_commit import routed

VALUES = 500
CAP = 50


def test_past_the_cap_the_oldest_buffers_are_due():
    buffers = Buffers(LakeSettings(bronze_max_open_buffers=CAP, bronze_max_age_s=600.0))
    values = [f"S{i:04d}" for i in range(VALUES)]
    buffers.add(routed("stocks.trades", values, first_seq=1))
    assert buffers.full
    taken = buffers.take_due(now=time.monotonic())
    assert [buffer.key.value for buffer in taken] == values[: VALUES - CAP]
    assert [buffer.key.value for buffer in buffers.open()] == values[VALUES - CAP :]
    assert not buffers.full
    assert buffers.take_due(now=time.monotonic()) == []


def test_a_taken_buffer_holds_exactly_its_rows_in_event_time_order():
    """Rows of two batches wait in shared pending frames; taking the buffer that is due hands
    it its rows of both batches, sorted by event time, and leaves the others' rows pending."""
    buffers = Buffers(LakeSettings(bronze_max_events=3, bronze_max_age_s=600.0))
    buffers.add(routed("stocks.trades", ["A", "B", "A"], first_seq=1))
    buffers.add(routed("stocks.trades", ["B", "A", "C"], first_seq=4))
    assert buffers.rows == 6 and len(buffers.replies()) == 6

    (due,) = buffers.take_due(now=time.monotonic())
    assert due.key.value == "A" and due.taken is not None
    assert due.taken.get_column("ts_event_ns").is_sorted()
    assert due.taken.get_column("_stream_seq").to_list() == [3, 1, 5]
    assert sorted(int(reply.split(".")[5]) for reply in due.replies()) == [1, 3, 5]
    assert buffers.rows == 3 and len(buffers.replies()) == 3

    rest = {buffer.key.value: buffer.taken for buffer in buffers.take_all()}
    assert {value: rows.get_column("_stream_seq").to_list() for value, rows in rest.items()} == {
        "B": [2, 4],
        "C": [6],
    }
    assert buffers.rows == 0 and buffers.replies() == []


async def publish_underlyings(url: str, count: int) -> None:
    """One option trade per underlying, all in the current hour."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js)
    for i in range(count):
        underlying = f"U{i:05d}"
        message = {**SAMPLES["options.trades"], "underlying": underlying, "seq": i}
        message["ts_event_ns"] = time.time_ns()
        await js.publish(f"market.options.trades.{underlying}", json.dumps(message).encode())
    await nc.close()


@pytest.mark.slow
def test_the_cap_flushes_buffers_no_age_or_size_would_and_every_event_lands(ingest_settings):
    """With flushes by age or size out of reach, only the cap makes buffers due."""
    settings = dataclasses.replace(
        ingest_settings, bronze_max_open_buffers=CAP, bronze_max_age_s=600.0
    )
    asyncio.run(publish_underlyings(settings.nats_servers[0], VALUES))

    async def scenario() -> tuple[IngestService, int]:
        stop = asyncio.Event()
        service = IngestService(
            settings, LakeStore.from_settings(settings), writer=writer_name("t")
        )
        running = asyncio.create_task(service.run(stop=stop))
        deadline = time.monotonic() + 90
        while service.stats.rows < VALUES - CAP and time.monotonic() < deadline:
            assert not running.done()
            await asyncio.sleep(0.1)
        landed_while_running = service.stats.rows
        stop.set()
        await running
        return service, landed_while_running

    service, landed_while_running = asyncio.run(scenario())
    assert landed_while_running >= VALUES - CAP
    rows = read_table(settings.data_root, "bronze/options/trades")
    assert sorted(rows.get_column("seq").to_list()) == list(range(VALUES))
    assert service.stats.files == VALUES
