"""Replayed messages: lake rows encoded back into the messages a producer sent, and decoded by
the ingest into the very same rows (every column, `event_id` included)."""

import datetime as dt
import json
import random
from urllib.parse import unquote

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from lake_platform.replay.messages import payloads, subject_token, subjects
from lake_platform.schemas import BY_NAME, SCHEMAS, TableSchema, decode_batch, schema_for_subject
from lake_platform.schemas.event_id import event_id
from lake_platform.schemas.fields import Field
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.bronze_files import EARLIEST_NS, HOUR_NS, bronze_rows
from lake_platform_tests.samples import SAMPLES

RECEIVED_NS = HOUR_NS + 3_600 * 10**9
NOW_NS = HOUR_NS + 2 * 3_600 * 10**9
ODD_VALUES = (
    "SPY",
    "A/B",
    "0700",
    "a.b c",
    "%41",
    "*",
    ">",
    "x>y*z",
    "é😀",
    "tab\there",
    "\x01\x7f",
    "nbsp\u00a0\u3000",
    '"quoted\\',
    "Z" * 128,
)
ODD_TEXT = (
    "",
    "plain",
    'x,"seq":null',
    '{"state":null}',
    '","direction":null,"',
    "back\\slash\\",
    "line\nbreak\r\u2028",
    "\x00nul",
    "émoji 😀",
    "null",
)
EDGE_FLOATS = (0.0, -0.0, 0.1, 1 / 3, 681.27, -1e-300, 5e-324, 1.7976931348623157e308, 2.0**60)


def lake_rows(schema: TableSchema, encoded: list[bytes]) -> pl.DataFrame:
    """The Bronze rows the ingest makes of `encoded` (provenance as `bronze_rows` adds it)."""
    decoded = decode_batch(
        schema,
        encoded,
        received_ns=[RECEIVED_NS] * len(encoded),
        earliest_ns=EARLIEST_NS,
        now_ns=NOW_NS,
    )
    assert not decoded.rejections, decoded.rejections
    return decoded.rows.with_columns(
        _stream_seq=pl.int_range(1, decoded.rows.height + 1, dtype=pl.Int64),
        _subject=pl.lit(schema.subject),
    )


def assert_identical(left: pl.DataFrame, right: pl.DataFrame) -> None:
    """Same columns, types and values, bit for bit (`-0.0` is not `0.0`)."""
    assert_frame_equal(left, right, check_exact=True)

    def text(frame: pl.DataFrame) -> list[str]:
        return frame.select(pl.struct(pl.all()).struct.json_encode()).to_series().to_list()

    assert text(left) == text(right)


def value(rng: random.Random, dtype: pl.DataType, field: Field | None = None) -> object:
    """A random JSON value of `dtype` the decoder accepts, edge cases often."""
    if field is not None and field.choices is not None:
        return rng.choice(field.choices)
    if dtype == pl.String:
        return rng.choice(ODD_TEXT)
    if dtype == pl.Float64:
        if rng.random() < 0.5:
            return rng.choice(EDGE_FLOATS)
        return rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-20, 20)
    if dtype == pl.Boolean:
        return rng.random() < 0.5
    if dtype == pl.Date:
        return (dt.date(1, 1, 1) + dt.timedelta(days=rng.randrange(3_652_059))).isoformat()
    if dtype.is_integer():
        bits = {pl.Int8: 8, pl.Int16: 16, pl.Int32: 32, pl.Int64: 64}[type(dtype)]
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        return rng.choice((low, high, 0, -1, rng.randint(low, high)))
    if isinstance(dtype, pl.List):
        limit = 3 if field is None or field.max_items is None else field.max_items
        required = () if field is None else field.item_required
        return [
            item(rng, dtype.inner, required)
            if isinstance(dtype.inner, pl.Struct)
            else value(rng, dtype.inner)
            for _ in range(rng.randint(0, limit))
        ]
    if isinstance(dtype, pl.Struct):
        return item(rng, dtype, ())
    raise TypeError(dtype)


def item(rng: random.Random, dtype: pl.Struct, required: tuple[str, ...]) -> dict[str, object]:
    """A nested object: required members given, the others given, null or absent."""
    members: dict[str, object] = {}
    for member in dtype.fields:
        if member.name in required or rng.random() < 0.5:
            members[member.name] = value(rng, member.dtype)
        elif rng.random() < 0.5:
            members[member.name] = None
    return members


def messages(schema: TableSchema, count: int, seed: int) -> list[dict[str, object]]:
    """The sample, `count` random messages (every optional field given, null or absent; odd
    partition values) and duplicates of some: exact, and received later or earlier."""
    rng = random.Random(seed)
    made: list[dict[str, object]] = [SAMPLES[schema.name]]
    for _ in range(count):
        message: dict[str, object] = {}
        for field in schema.fields:
            if field.name == "ts_event_ns":
                message[field.name] = HOUR_NS + rng.randrange(3_600 * 10**9)
            elif field.name == schema.partition_column:
                message[field.name] = rng.choice(ODD_VALUES)
            elif field.required or rng.random() < 0.5:
                message[field.name] = value(rng, field.dtype, field)
            elif rng.random() < 0.5:
                message[field.name] = None
        if "ts_recv_ns" in message:
            message["ts_recv_ns"] = HOUR_NS + rng.randrange(2 * 3_600 * 10**9)
        made.append(message)
    again = [
        {**message, "ts_recv_ns": HOUR_NS + rng.randrange(2 * 3_600 * 10**9)}
        for message in rng.sample(made, count // 4)
    ]
    return made + rng.sample(made, count // 4) + again


def lake(schema: TableSchema) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(Bronze rows, Silver rows) of `messages`: what the stream yields with either source
    (for `levels/signals`, Silver-rule deduplicated Bronze)."""
    bronze = bronze_rows(schema, messages(schema, 300, seed=len(schema.name)))
    return bronze, deduplicate(bronze)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: schema.name)
def test_silver_rows_come_back_identical_from_their_payloads(schema: TableSchema) -> None:
    _, silver = lake(schema)
    assert silver.height > 300 * 0.7
    again = deduplicate(lake_rows(schema, payloads(schema, silver, as_recorded=True)))
    assert_identical(again, silver)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: schema.name)
def test_bronze_rows_come_back_identical_from_their_payloads(schema: TableSchema) -> None:
    bronze, _ = lake(schema)
    again = lake_rows(schema, payloads(schema, bronze, as_recorded=True))
    assert_identical(again.drop("_stream_seq", "_subject"), bronze.drop("_stream_seq", "_subject"))


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: schema.name)
def test_replayed_source_changes_the_source_and_so_the_event_id(schema: TableSchema) -> None:
    _, silver = lake(schema)
    again = lake_rows(schema, payloads(schema, silver, as_recorded=False)).drop(
        "_stream_seq", "_subject"
    )
    assert again.get_column("source").unique().to_list() == ["replay"]
    replayed = silver.with_columns(source=pl.lit("replay"))
    assert_identical(again, replayed.with_columns(event_id(schema.stored_schema)))
    recorded_elsewhere = silver.get_column("source").ne_missing("replay")
    changed = again.get_column("event_id") != silver.get_column("event_id")
    assert recorded_elsewhere.any()
    assert changed.equals(recorded_elsewhere.alias("event_id"))


def nulls(value: object) -> int:
    """How many nulls a decoded JSON value holds, at any depth."""
    if value is None:
        return 1
    if isinstance(value, list):
        return sum(map(nulls, value))
    if isinstance(value, dict):
        return sum(map(nulls, value.values()))
    return 0


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: schema.name)
def test_a_null_is_absent_but_where_absent_means_a_default(schema: TableSchema) -> None:
    _, silver = lake(schema)
    defaulted = [field.name for field in schema.fields if field.default is not None]
    for as_recorded in (True, False):
        for row, payload in zip(
            silver.iter_rows(named=True),
            payloads(schema, silver, as_recorded=as_recorded),
            strict=True,
        ):
            message = json.loads(payload)
            kept = [name for name in defaulted if name in message and message[name] is None]
            assert all(row[name] is None for name in kept)
            assert nulls({k: v for k, v in message.items() if k not in kept}) == 0, payload
            assert list(message) == [
                field.name
                for field in schema.fields
                if field.name in kept or sent(field, row, as_recorded)
            ]


def sent(field: Field, row: dict[str, object], as_recorded: bool) -> bool:
    """Whether the payload of `row` has a non-null `field`."""
    if field.flatten_items is not None or (field.name == "source" and not as_recorded):
        return True
    return row[field.name] is not None


def test_defaulted_fields_recorded_null_are_sent_as_null() -> None:
    """Absent, `is_snapshot` and `source` read back as false and direct_feed: a null stays."""
    schema = BY_NAME["futures.mbp10"]
    message = {**SAMPLES["futures.mbp10"], "is_snapshot": None, "source": None}
    rows = bronze_rows(schema, [message])
    (payload,) = payloads(schema, rows, as_recorded=True)
    assert b'"is_snapshot":null' in payload
    assert payload.endswith(b',"source":null}')
    assert_identical(lake_rows(schema, [payload]), rows)


@pytest.mark.parametrize("name", list(SAMPLES))
def test_the_payload_of_a_sample_is_the_sample(name: str) -> None:
    schema = BY_NAME[name]
    sample = SAMPLES[name]
    (payload,) = payloads(schema, bronze_rows(schema, [sample]), as_recorded=True)
    defaults = {"ts_recv_ns": RECEIVED_NS, "source": "direct_feed", "is_snapshot": False}
    expected = {
        field.name: sample.get(field.name, defaults.get(field.name))
        for field in schema.fields
        if field.name in sample or field.name in defaults
    }
    assert json.loads(payload) == expected
    assert list(json.loads(payload)) == list(expected)


@pytest.mark.parametrize("depth", range(11))
def test_mbp10_levels_are_renested_as_given(depth: int) -> None:
    schema = BY_NAME["futures.mbp10"]
    levels = [
        {"bid_px": 100.0 - i, "bid_sz": i, "ask_px": 100.25 + i, "ask_sz": 10 * i}
        for i in range(depth)
    ]
    rows = bronze_rows(schema, [{**SAMPLES["futures.mbp10"], "levels": levels}])
    (payload,) = payloads(schema, rows, as_recorded=True)
    assert json.loads(payload)["levels"] == levels


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(min_size=0, max_size=20),
    symbol=st.text(min_size=1, max_size=12),
    price=st.floats(allow_nan=False, allow_infinity=False),
)
def test_any_text_and_float_round_trips(text: str, symbol: str, price: float) -> None:
    schema = BY_NAME["futures.trades"]
    message = {**SAMPLES["futures.trades"], "symbol": symbol, "exchange": text, "price": price}
    rows = bronze_rows(schema, [message])
    again = lake_rows(schema, payloads(schema, rows, as_recorded=True))
    assert_identical(again.drop("_subject"), rows.drop("_subject"))


def test_empty_frames_make_no_messages() -> None:
    schema = BY_NAME["futures.mbp10"]
    empty = pl.DataFrame(schema=schema.stored_schema)
    assert payloads(schema, empty, as_recorded=True) == []
    assert subjects(schema, empty, "replay") == []


@pytest.mark.parametrize("value", ODD_VALUES)
def test_a_partition_value_is_one_subject_token(value: str) -> None:
    token = subject_token(value)
    assert unquote(token) == value
    assert token and not any(char in token for char in ".*> \t\n\r\x00\x01\x7f\u00a0\u3000")


def test_subject_tokens_escape_only_what_a_token_cannot_hold() -> None:
    assert subject_token("SPY") == "SPY"
    assert subject_token("A/B") == "A/B"
    assert subject_token("0700") == "0700"
    assert subject_token("a.b c") == "a%2Eb%20c"
    assert subject_token("100%") == "100%25"
    assert subject_token("*>") == "%2A%3E"
    assert subject_token("é😀") == "é😀"
    assert subject_token("\x01\u3000") == "%01%E3%80%80"


@pytest.mark.parametrize("name", list(SAMPLES))
def test_unprefixed_subjects_route_to_the_table(name: str) -> None:
    schema = BY_NAME[name]
    rows = bronze_rows(
        schema, [{**SAMPLES[name], schema.partition_column: value} for value in ODD_VALUES]
    )
    plain = subjects(schema, rows, "")
    assert plain[0] == f"{schema.subject}.SPY"
    assert plain[3] == f"{schema.subject}.a%2Eb%20c"
    assert {schema_for_subject(subject) for subject in plain} == {schema}
    assert [unquote(subject.removeprefix(f"{schema.subject}.")) for subject in plain] == list(
        ODD_VALUES
    )


def test_prefixed_subjects() -> None:
    trades, signals = BY_NAME["stocks.trades"], BY_NAME["levels.signals"]
    assert subjects(trades, bronze_rows(trades, [SAMPLES["stocks.trades"]]), "replay") == [
        "replay.market.stocks.trades.SPY"
    ]
    assert subjects(signals, bronze_rows(signals, [SAMPLES["levels.signals"]]), "a.b") == [
        "a.b.levels.signals.SPY"
    ]
    assert schema_for_subject("replay.market.stocks.trades.SPY") is None


@pytest.mark.parametrize("prefix", ["a.", ".a", "a..b", "*", "a.>", "a b", "a\tb"])
def test_a_prefix_must_be_subject_tokens(prefix: str) -> None:
    schema = BY_NAME["stocks.trades"]
    with pytest.raises(ValueError, match="not a sequence of NATS tokens"):
        subjects(schema, bronze_rows(schema, [SAMPLES["stocks.trades"]]), prefix)
