"""The replay stream: one stream in event-time order across tables and values, ties broken by
the fixed table order then Silver order, hour by hour; Silver pinned, signals deduplicated,
Bronze raw; resuming after an event; filters; errors."""

import datetime as dt
import itertools

import polars as pl
import pytest

from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.replay import REPLAY_TABLES, ReplayError, events, replay_hours
from lake_platform.schemas import BY_NAME
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.tags import tag_current
from lake_platform_tests.bronze_files import HOUR, HOUR_NS, bronze_rows, write_bronze
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.tables_of import tables_of

SECOND = 10**9
NEXT = HOUR + dt.timedelta(hours=1)
NAMES = ("stocks.trades", "stocks.quotes", "options.trades", "futures.mbp10", "levels.signals")


def message(name: str, ts: int, value: str, seq: int) -> dict:
    """An event of `name`; `seq` makes it distinct (signals have no `seq`: their `spot`)."""
    schema = BY_NAME[name]
    distinct = {"spot": float(seq)} if name == "levels.signals" else {"seq": seq}
    return {**SAMPLES[name], "ts_event_ns": ts, schema.partition_column: value, **distinct}


def crafted() -> dict[str, list[dict]]:
    """Events of five tables over two hours; many share a nanosecond across tables and
    values; every table publishes one event twice."""
    times = [HOUR_NS + offset * SECOND for offset in (0, 0, 1, 1, 1, 3_599, 3_600, 3_601)]
    by_table = {}
    for number, name in enumerate(NAMES):
        values = ("SPY", "QQQ") if name != "futures.mbp10" else ("ESZ5", "NQZ5")
        rows = [
            message(name, ts, values[index % 2], 100 * number + index)
            for index, ts in enumerate(times)
        ]
        by_table[name] = [*rows, rows[2]]  # a redelivery
    return by_table


@pytest.fixture
def lake(tmp_path) -> LakeSettings:
    settings = LakeSettings(data_root=str(tmp_path / "lake"))
    store = LakeStore.from_settings(settings)
    for name, messages in crafted().items():
        schema = BY_NAME[name]
        write_bronze(store, schema, bronze_rows(schema, messages), files=2)
        if schema.silver:
            for hour in (HOUR, NEXT):
                rebuild_hour(tables_of(store), SILVER_TABLES[schema.table], hour)
    return settings


def stream_keys(runs) -> list[tuple[int, int, str]]:
    """(ts_event_ns, table rank, event_id) of every event in stream order."""
    keys = []
    for table, frame in runs:
        rank = REPLAY_TABLES.index(table)
        keys += [
            (ts, rank, event_id) for ts, event_id in frame.select("ts_event_ns", "event_id").rows()
        ]
    return keys


def test_the_stream_is_in_time_then_table_then_event_id_order(lake):
    keys = stream_keys(events(HOUR, NEXT + dt.timedelta(hours=1), settings=lake))
    assert keys == sorted(keys)
    assert len(keys) == len(set(keys)) == 8 * len(NAMES)  # deduplicated, signals too
    ties = [key for key in keys if key[0] == HOUR_NS + SECOND]
    assert {rank for _, rank, _ in ties} == {REPLAY_TABLES.index(BY_NAME[n].table) for n in NAMES}


def test_runs_hold_consecutive_events_of_one_table_and_hours_are_merged_in_turn(lake):
    hours = list(replay_hours(HOUR, NEXT + dt.timedelta(hours=1), settings=lake))
    assert [hour.hour for hour in hours] == [HOUR, NEXT]
    assert [hour.events for hour in hours] == [6 * len(NAMES), 2 * len(NAMES)]
    runs = list(hours[0].runs())
    assert all(table != following for (table, _), (following, _) in itertools.pairwise(runs))
    assert sum(frame.height for _, frame in runs) == hours[0].events
    assert {table for table, _ in runs} == {BY_NAME[name].table for name in NAMES}


def test_bronze_is_replayed_raw_in_stream_sequence_within_equal_times(lake):
    runs = list(events(HOUR, NEXT, tables=["stocks/trades"], source="bronze", settings=lake))
    frame = pl.concat([frame for _, frame in runs])
    assert frame.height == 7  # the hour's six and the redelivery
    assert frame.select("ts_event_ns", "_stream_seq").rows() == sorted(
        frame.select("ts_event_ns", "_stream_seq").rows()
    )
    assert frame["event_id"].n_unique() == 6


def test_a_range_inside_an_hour_filters_and_symbols_filter_values(lake):
    start = HOUR + dt.timedelta(seconds=1)
    keys = stream_keys(events(start, start + dt.timedelta(seconds=1), settings=lake))
    assert {ts for ts, _, _ in keys} == {HOUR_NS + SECOND}
    spy = pl.concat(
        frame.select("event_id")
        for _, frame in events(
            HOUR, NEXT, tables=["stocks/quotes", "options.trades"], symbols=["SPY"], settings=lake
        )
    )
    assert spy.height == 6  # three SPY events an hour in each table


def test_resume_after_continues_exactly_after_the_event(lake):
    whole = stream_keys(events(HOUR, NEXT + dt.timedelta(hours=1), settings=lake))
    for index in (0, 7, 29, len(whole) - 1):
        rest = stream_keys(
            events(HOUR, NEXT + dt.timedelta(hours=1), settings=lake, resume_after=whole[index][2])
        )
        assert rest == whole[index + 1 :]
    with pytest.raises(ReplayError, match="not in the replayed range"):
        list(events(HOUR, NEXT, settings=lake, resume_after="f" * 32))


def test_silver_is_read_at_one_pinned_snapshot_or_as_of_a_tag(lake):
    store = LakeStore.from_settings(lake)
    tag_current(tables_of(store).existing("silver/stocks/trades"), "before")
    hours = replay_hours(HOUR, NEXT, tables=["stocks/trades"], settings=lake)
    late = bronze_rows(
        BY_NAME["stocks.trades"], [message("stocks.trades", HOUR_NS + 5, "SPY", 999)], 900
    )
    write_bronze(store, BY_NAME["stocks.trades"], late)
    rebuild_hour(tables_of(store), SILVER_TABLES["stocks/trades"], HOUR)
    assert sum(hour.events for hour in hours) == 6  # pinned when the replay started
    now = list(events(HOUR, NEXT, tables=["stocks/trades"], settings=lake))
    assert sum(frame.height for _, frame in now) == 7
    before = list(events(HOUR, NEXT, tables=["stocks/trades"], as_of="before", settings=lake))
    assert sum(frame.height for _, frame in before) == 6


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"tables": ["stocks/nope"]}, "unknown table 'stocks/nope'"),
        ({"source": "gold"}, "unknown source"),
        ({"source": "bronze", "as_of": "before"}, "Bronze has no versions"),
        ({"end": HOUR}, "the range is empty"),
        ({"start": "yesterday"}, "not an ISO-8601 time"),
    ],
)
def test_bad_arguments_are_one_clear_error(lake, arguments, error):
    chosen = {"start": HOUR, "end": NEXT, "settings": lake, **arguments}
    with pytest.raises(ReplayError, match=error):
        list(events(**chosen))
