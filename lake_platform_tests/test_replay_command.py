"""`lake-platform replay` and `replay_job` into a real nats-server, from a small real lake.

The lake (Bronze written as the ingest writes it, Silver rebuilt by the platform) holds
stock trades and quotes and level signals (Bronze only, one published twice) around 15:00
UTC: 4 s of dense events across the hour boundary, trades and quotes at equal times, then a
sparse tail of trades to 15:00:30. The expected stream is derived from the published
messages alone: one per event, ordered by event time, then the fixed table order, then
event id. What the target stored is read back by stream sequence: its `Nats-Msg-Id`s,
subjects and payloads. No assertion on wall time.
"""

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import fsspec
import nats
import pytest
from nats.js import api as js_api

from lake_platform.cli import main
from lake_platform.definitions import defs
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.embedded_nats import NatsServer
from lake_platform.replay import REPLAY_TABLES, replay_hours
from lake_platform.replay.encoding import encoded_chunks
from lake_platform.replay.pacing import Pacer
from lake_platform.replay.publish import publish_replay
from lake_platform.replay.stats import ReplayStats
from lake_platform.replay.stream import merged_hour
from lake_platform.replay.target import replay_stream_name
from lake_platform.schemas import BY_NAME
from lake_platform.settings import LakeSettings
from lake_platform.simulate.publisher import MSG_ID_HEADER
from lake_platform.storage import LakeStore
from lake_platform_tests.bronze_files import HOUR, HOUR_NS, bronze_rows, write_bronze
from lake_platform_tests.conftest import settings_env
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.tables_of import tables_of

SECOND = 10**9
BOUNDARY_NS = HOUR_NS + 3_600 * SECOND  # 15:00:00
DENSE = [BOUNDARY_NS - 2 * SECOND + k * SECOND // 10 for k in range(40)]
TAIL = [BOUNDARY_NS + (2 + i) * SECOND for i in range(28)]
START, END = "2025-12-16T14:59:58Z", "2025-12-16T15:00:30Z"
TRADES, QUOTES, SIGNALS = (BY_NAME[n] for n in ("stocks.trades", "stocks.quotes", "levels.signals"))


def trade(ts: int, symbol: str, seq: int) -> dict:
    return {**SAMPLES["stocks.trades"], "ts_event_ns": ts, "symbol": symbol, "seq": seq}


def quote(ts: int, symbol: str, seq: int) -> dict:
    return {**SAMPLES["stocks.quotes"], "ts_event_ns": ts, "symbol": symbol, "seq": seq}


def level_signal(ts: int, spot: float) -> dict:
    return {**SAMPLES["levels.signals"], "ts_event_ns": ts, "spot": spot}


EVENTS = {
    TRADES: [trade(ts, "SPY" if k % 2 else "QQQ", k) for k, ts in enumerate(DENSE)]
    + [trade(ts, "SPY", 100 + i) for i, ts in enumerate(TAIL)],
    QUOTES: [quote(DENSE[k], "SPY" if k % 4 else "QQQ", k) for k in range(0, 40, 2)],
    SIGNALS: [level_signal(DENSE[k], 680.0 + k) for k in (0, 10, 25, 39)],
}
REPUBLISHED = {SIGNALS: [level_signal(DENSE[10], 690.0)]}
"""A signal published twice: Bronze holds it twice, the replay once."""


@dataclass(frozen=True)
class Event:
    table: str
    event_id: str
    ts: int
    value: str
    source: str | None


def expected_stream() -> list[Event]:
    """Every event once, in stream order, from the messages themselves."""
    events = {}
    for schema, messages in EVENTS.items():
        rows = bronze_rows(schema, messages)
        for row in rows.iter_rows(named=True):
            events[row["event_id"]] = Event(
                schema.table,
                row["event_id"],
                row["ts_event_ns"],
                row[schema.partition_column],
                row["source"],
            )
    return sorted(events.values(), key=lambda e: (e.ts, REPLAY_TABLES.index(e.table), e.event_id))


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("replay") / "lake")
    store = LakeStore(root, fsspec.filesystem("file"))
    for schema, messages in EVENTS.items():
        again = REPUBLISHED.get(schema, [])
        rows = bronze_rows(schema, messages + again)
        write_bronze(store, schema, rows, files=2)
    for schema in (TRADES, QUOTES):
        for hour in (HOUR, HOUR.replace(hour=15)):
            rebuild_hour(tables_of(store), SILVER_TABLES[schema.table], hour)
    return root


@pytest.fixture
def target(nats_server: NatsServer, lake_root: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The environment of `lake-platform` for the lake and the test's nats-server."""
    settings = LakeSettings(data_root=lake_root, nats_servers=(nats_server.url,))
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    return nats_server.url


@dataclass(frozen=True)
class Stored:
    subject: str
    msg_id: str
    data: dict


def stored(url: str, stream: str) -> list[Stored]:
    """Every message of `stream`, by sequence."""

    async def read() -> list[Stored]:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            state = (await js.stream_info(stream)).state
            messages = []
            for seq in range(state.first_seq, state.last_seq + 1 if state.messages else 0):
                message = await js.get_msg(stream, seq)
                msg_id = (message.headers or {}).get(MSG_ID_HEADER, "")
                messages.append(Stored(message.subject, msg_id, json.loads(message.data or b"")))
            return messages
        finally:
            await nc.close()

    return asyncio.run(read())


def replay(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str, str]:
    code = main(["replay", "--start", START, "--end", END, *options])
    out, err = capsys.readouterr()
    return code, out, err


def assert_stream(messages: list[Stored], events: list[Event], prefix: str, source: str | None):
    """`messages` are exactly `events` in order: ids, subjects, event times, source."""
    assert [m.msg_id for m in messages] == [e.event_id for e in events]
    head = f"{prefix}." if prefix else ""
    subjects = [f"{head}{BY_TABLE_SUBJECT[e.table]}.{e.value}" for e in events]
    assert [m.subject for m in messages] == subjects
    assert [m.data["ts_event_ns"] for m in messages] == [e.ts for e in events]
    sources = [m.data.get("source") for m in messages]
    assert sources == ([source] * len(events) if source else [e.source for e in events])


BY_TABLE_SUBJECT = {schema.table: schema.subject for schema in EVENTS}


def test_the_expected_stream_is_what_the_lake_holds():
    events = expected_stream()
    times = [e.ts for e in events]
    assert times == sorted(times) and len(events) == 40 + 28 + 20 + 4
    tied = [e.table for e in events if e.ts == DENSE[0]]
    assert tied == ["stocks/trades", "stocks/quotes", "levels/signals"]


@pytest.mark.slow
def test_max_speed_publishes_every_event_once_in_order(target, capsys):
    code, out, err = replay(capsys)
    assert code == 0, err
    events = expected_stream()
    assert_stream(stored(target, "REPLAY"), events, "replay", "replay")
    assert out.startswith(f"replayed {len(events)} events")
    assert "replay: hour 2025-12-16T14:00Z done" in err and "\r" not in err


@pytest.mark.slow
def test_paced_at_60_times_gives_the_same_stream(target, capsys):
    code, _, err = replay(capsys, "--speed", "60", "--subject-prefix", "paced")
    assert code == 0, err
    assert_stream(stored(target, replay_stream_name("paced")), expected_stream(), "paced", "replay")


@pytest.mark.slow
def test_as_recorded_on_the_live_subjects_into_market_and_signals(target, capsys):
    code, _, err = replay(capsys, "--subject-prefix", "", "--as-recorded")
    assert code == 0, err
    events = expected_stream()
    market = [e for e in events if e.table != "levels/signals"]
    signals = [e for e in events if e.table == "levels/signals"]
    assert_stream(stored(target, "MARKET"), market, "", None)
    assert_stream(stored(target, "SIGNALS"), signals, "", None)


@pytest.mark.slow
def test_tables_and_symbols_filter(target, capsys):
    code, _, err = replay(capsys, "--tables", "stocks/trades,levels/signals", "--symbols", "SPY")
    assert code == 0, err
    events = [
        e
        for e in expected_stream()
        if e.table in ("stocks/trades", "levels/signals") and e.value == "SPY"
    ]
    assert {e.table for e in events} == {"stocks/trades", "levels/signals"}
    assert_stream(stored(target, "REPLAY"), events, "replay", "replay")


@pytest.mark.slow
def test_resume_after_continues_right_after_the_event(target, capsys):
    events = expected_stream()
    after = events[41]
    code, _, err = replay(capsys, "--resume-after", after.event_id, "--from", "silver")
    assert code == 0, err
    assert_stream(stored(target, "REPLAY"), events[42:], "replay", "replay")
    code, _, err = replay(capsys, "--resume-after", events[-1].event_id)
    assert code == 1 and err.startswith("lake-platform: error: no event to replay")


@pytest.mark.slow
def test_bronze_as_ingested_keeps_its_duplicates(target, capsys):
    code, _, err = replay(capsys, "--from", "bronze", "--tables", "levels/signals")
    assert code == 0, err
    rows = bronze_rows(SIGNALS, EVENTS[SIGNALS] + REPUBLISHED[SIGNALS])
    rows = rows.sort("ts_event_ns", "_stream_seq")
    messages = stored(target, "REPLAY")
    ids = [f"{row['event_id']}-{row['_stream_seq']}" for row in rows.iter_rows(named=True)]
    assert [m.msg_id for m in messages] == ids and len(ids) == 5
    assert len({m.msg_id.split("-")[0] for m in messages}) == 4  # one event twice


def one_line_error(code: int, err: str) -> str:
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("lake-platform: error: "), err
    return err


@pytest.mark.slow
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--start", END, "--end", START], "the range is empty"),
        (["--tables", "stocks/nope"], "unknown table 'stocks/nope'"),
        (["--start", "yesterday"], "not an ISO-8601 time"),
        (["--start", "2025-12-16T10:00:00Z", "--end", "2025-12-16T11:00:00Z"], "no event"),
        (["--speed", "fast"], "the speed must be a positive number or max"),
        (["--speed", "0"], "the speed must be a positive number or max"),
        (["--resume-after", "not-an-event"], "event not-an-event is not in the replayed range"),
        (["--from", "bronze", "--as-of", "v1"], "Bronze has no versions"),
        (["--subject-prefix", "a..b"], "is not a sequence of NATS tokens"),
    ],
)
def test_each_bad_request_is_one_line_and_exit_1(target, capsys, options, message):
    code = main(["replay", "--start", START, "--end", END, *options])
    err = one_line_error(code, capsys.readouterr().err)
    assert message in err


@pytest.mark.slow
def test_a_target_without_a_stream_for_a_subject_is_one_line(target, capsys):
    async def partial_stream() -> None:
        nc = await nats.connect(target)
        config = js_api.StreamConfig(name="PARTIAL", subjects=["part.market.>"])
        await nc.jetstream().add_stream(config)
        await nc.close()

    asyncio.run(partial_stream())
    code, _, err = replay(capsys, "--subject-prefix", "part")
    err = one_line_error(code, err)
    assert "no JetStream stream takes subject part.levels.signals.SPY" in err
    assert stored(target, "PARTIAL") == []


@pytest.mark.slow
def test_unreachable_nats_is_one_line(target, capsys, free_port):
    code, _, err = replay(capsys, "--nats-url", f"nats://127.0.0.1:{free_port}")
    assert f"cannot connect to NATS at nats://127.0.0.1:{free_port}" in one_line_error(code, err)


@pytest.fixture
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_sigint_mid_replay_prints_the_last_event_and_resume_continues(target, capsys):
    command = [Path(sys.executable).with_name("lake-platform"), "replay"]
    child = subprocess.Popen(
        [*command, "--start", START, "--end", END, "--speed", "1"],
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert child.stderr is not None
    lines = iter_lines(child)
    first_hour = next(line for line in lines if "hour 2025-12-16T14:00Z done" in line)
    child.send_signal(signal.SIGINT)  # the tail (15:00:02 to 15:00:29) takes ~28 s
    rest = list(lines)
    assert child.wait(timeout=60) == 130, rest
    assert first_hour and rest[-1].startswith("lake-platform: interrupted: ")
    events = expected_stream()
    replayed = stored(target, "REPLAY")
    last = replayed[-1].msg_id
    assert f"the last {last} at " in rest[-1] and rest[-1].endswith(f"--resume-after {last}")
    assert 0 < len(replayed) < len(events)
    assert_stream(replayed, events[: len(replayed)], "replay", "replay")
    code, _, err = replay(capsys, "--resume-after", last)
    assert code == 0, err
    assert_stream(stored(target, "REPLAY"), events, "replay", "replay")


def iter_lines(child: subprocess.Popen[str]) -> Iterator[str]:
    assert child.stderr is not None
    for line in child.stderr:
        yield line.rstrip("\n")


@pytest.mark.slow
def test_replay_job_runs_in_dagster(target):
    config = {"start": START, "end": END, "tables": ["stocks/quotes"], "subject_prefix": "ui"}
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.get_job_def("replay_job").execute_in_process(
            run_config={"ops": {"replay_events": {"config": config}}}, instance=instance
        )
        assert result.success
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    quotes = [e for e in expected_stream() if e.table == "stocks/quotes"]
    assert_stream(stored(target, "UI"), quotes, "ui", "replay")
    assert any(message.startswith("hour 2025-12-16T14:00Z replayed") for message in logs)
    assert any(message.startswith("hour 2025-12-16T15:00Z replayed") for message in logs)
    [output] = [
        event for event in result.all_node_events if event.event_type_value == "STEP_OUTPUT"
    ]
    metadata = output.step_output_data.metadata
    assert metadata["events"].value == len(quotes)
    assert metadata["last_event_id"].value == quotes[-1].event_id


class KillOnce:
    """Progress that SIGKILLs the server at its first report (the replay is under way) and
    starts it again `DOWN_S` later, as `test_publish_retry` does to the simulator."""

    DOWN_S = 1.5

    def __init__(self, server: NatsServer) -> None:
        self.server, self.events_at_kill = server, None

    def advanced(self, stats: ReplayStats) -> None:
        if self.events_at_kill is None:
            self.events_at_kill = stats.events
            self.server.kill()
            threading.Timer(self.DOWN_S, self.server.restart).start()

    def hour_done(self, hour: dt.datetime, stats: ReplayStats) -> None:
        """Nothing to do."""


@pytest.mark.slow
def test_a_server_restart_mid_replay_stores_every_event_once(nats_server):
    """PubAcks lost with the server are waited for, then the publishes sent again with their
    `Nats-Msg-Id` (`publish_once`): every event is stored once. (Stream order is not kept
    across the outage: publishes buffered by the client while it reconnects reach the stream
    before the lost ones sent again.)"""
    messages = [trade(HOUR_NS + i * 10**6, "SPY", i) for i in range(3_000)]  # 3 s of events
    rows = bronze_rows(TRADES, messages).drop("_stream_seq", "_subject")
    hour = merged_hour(HOUR, {TRADES.table: rows.sort("ts_event_ns", "event_id")})
    settings = LakeSettings(nats_servers=(nats_server.url,))
    progress, stats = KillOnce(nats_server), ReplayStats()
    replayed = publish_replay(
        settings, [hour], speed=1, prefix="replay", as_recorded=False, progress=progress,
        stats=stats,
    )  # fmt: skip
    asyncio.run(replayed)
    assert progress.events_at_kill is not None and 0 < progress.events_at_kill < rows.height
    stored_ids = Counter(message.msg_id for message in stored(nats_server.url, "REPLAY"))
    assert stored_ids == Counter(rows.get_column("event_id").to_list())
    assert stats.events == rows.height and stats.reanchors > 0  # the outage put it behind
    assert stats.last_event_id == rows.get_column("event_id")[-1]


def test_the_pacer_follows_event_time_and_never_bursts_past_its_bound():
    stats, pacer = ReplayStats(), Pacer(speed=10.0, max_lag_s=1.0)
    assert pacer.delay(0, 100.0, stats) == 0.0
    assert pacer.delay(SECOND, 100.0, stats) == pytest.approx(0.1)
    assert pacer.delay(2 * SECOND, 100.25, stats) == 0.0  # due at 100.2: sent at once
    assert stats.lag_s == pytest.approx(0.05) and stats.reanchors == 0
    assert pacer.delay(3 * SECOND, 102.0, stats) == 0.0  # due at 100.3: 1.7 s behind
    assert stats.reanchors == 1 and stats.max_lag_s == pytest.approx(1.7)
    assert pacer.delay(4 * SECOND, 102.0, stats) == pytest.approx(0.1)  # the new schedule
    assert pacer.delay(5 * SECOND, 102.5, stats) == 0.0  # 0.3 s behind: within the bound
    assert stats.reanchors == 1 and stats.lag_s == pytest.approx(0.3)


def test_chunks_hold_the_stream_in_order_whatever_their_size(lake_root):
    settings = LakeSettings(data_root=lake_root)
    hours = list(replay_hours(START, END, settings=settings))
    library = [
        event_id
        for hour in hours
        for _, run in hour.runs()
        for event_id in run.get_column("event_id")
    ]
    assert library == [e.event_id for e in expected_stream()]
    for size in (1, 7, 10**6):
        chunks = list(encoded_chunks(hours, "replay", False, size=size))
        assert [event[3] for chunk in chunks for event in chunk.events()] == library
        assert [chunk.final for chunk in chunks].count(True) == len(hours)
        hours_seen = [chunk.hour for chunk in chunks]
        assert hours_seen == sorted(hours_seen)
