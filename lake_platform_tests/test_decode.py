"""The batch decoder: every registry schema decodes real messages and rejects bad ones."""

import datetime as dt
import json

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lake_platform.schemas import BY_NAME, SCHEMAS, decode_batch
from lake_platform.schemas.decode import DecodedBatch, bulk_array
from lake_platform_tests.samples import SAMPLES, TS

EARLIEST_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00Z
NOW_NS = TS + 60 * 10**9


def decode(name: str, payloads: list[bytes]) -> DecodedBatch:
    return decode_batch(
        BY_NAME[name],
        payloads,
        received_ns=[TS + 1_000 + i for i in range(len(payloads))],
        earliest_ns=EARLIEST_NS,
        now_ns=NOW_NS,
    )


def encode(message: dict[str, object]) -> bytes:
    return json.dumps(message).encode()


def with_changes(name: str, **changes: object) -> bytes:
    message = {**SAMPLES[name], **changes}
    return encode({key: value for key, value in message.items() if value is not DROP})


DROP = object()


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: schema.name)
def test_realistic_sample_decodes_to_stored_schema(schema):
    batch = decode(schema.name, [encode(SAMPLES[schema.name])])
    assert batch.rejections == []
    assert batch.rows.height == 1
    assert batch.rows.schema == schema.stored_schema
    row = batch.rows.row(0, named=True)
    assert row["ts_event_ns"] == TS
    assert len(row["event_id"]) == 32
    assert row[schema.partition_column] == SAMPLES[schema.name][schema.partition_column]


def test_optional_fields_default_and_receive_time_falls_back_to_stream_time():
    batch = decode("stocks.quotes", [encode(SAMPLES["stocks.quotes"])])
    row = batch.rows.row(0, named=True)
    assert row["ts_recv_ns"] == TS + 1_000
    assert row["source"] == "direct_feed"


def test_options_fields_are_typed():
    row = decode("options.trades", [encode(SAMPLES["options.trades"])]).rows.row(0, named=True)
    assert row["exp_date"] == dt.date(2025, 12, 16)
    assert row["aggressor"] == 1
    assert row["conditions"] == [209]


def test_mbp10_levels_are_flattened_with_nulls_beyond_the_given_levels():
    batch = decode("futures.mbp10", [encode(SAMPLES["futures.mbp10"])])
    row = batch.rows.row(0, named=True)
    assert "levels" not in row
    assert (row["bid_px_1"], row["ask_sz_1"], row["bid_px_2"]) == (6843.0, 36, 6842.75)
    assert row["bid_px_3"] is None and row["ask_sz_10"] is None
    assert batch.rows.schema["bid_sz_10"] == pl.Int32


def test_signal_levels_stay_nested_in_bronze():
    row = decode("levels.signals", [encode(SAMPLES["levels.signals"])]).rows.row(0, named=True)
    first, second = row["levels"]
    assert first["barrier"]["state"] == "WEAK"
    assert first["tape"]["sweep_detected"] is True
    assert second["barrier"] is None and second["direction"] is None


def test_unknown_fields_are_ignored_and_counted():
    payload = with_changes("stocks.trades", venue_note="extra", another=1)
    batch = decode("stocks.trades", [payload, encode(SAMPLES["stocks.trades"])])
    assert batch.rejections == []
    assert batch.rows.height == 2
    assert batch.unknown_field_messages == 1


BAD_INPUTS = [
    ("stocks.trades", b"not json at all", "not a JSON object"),
    ("stocks.trades", b"", "not a JSON object"),
    ("stocks.trades", b"[1, 2]", "Expected `object`"),
    ("stocks.trades", b'"SPY"', "Expected `object`"),
    ("stocks.trades", b'{"symbol": "\xff\xfe", "price": 1}', "UTF-8"),
    ("stocks.trades", with_changes("stocks.trades", price=DROP), "missing required field `price`"),
    ("stocks.trades", with_changes("stocks.trades", symbol=None), "$.symbol"),
    ("stocks.trades", with_changes("stocks.trades", size=True), "got `bool`"),
    ("stocks.trades", with_changes("stocks.trades", size=1.5), "got `float`"),
    ("stocks.trades", with_changes("stocks.trades", price="681.2"), "got `str`"),
    ("stocks.trades", with_changes("stocks.trades", size=2**31), "<= 2147483647"),
    ("stocks.trades", with_changes("stocks.trades", exchange=40_000), "<= 32767"),
    ("stocks.trades", with_changes("stocks.trades", seq=2**63), "$.seq"),
    ("stocks.trades", with_changes("stocks.trades", conditions=[1, "x"]), "$.conditions[1]"),
    ("stocks.trades", with_changes("stocks.trades", source="live"), "$.source"),
    ("stocks.trades", with_changes("stocks.trades", symbol=""), "length >= 1"),
    ("stocks.trades", with_changes("stocks.trades", symbol="X" * 129), "length <= 128"),
    ("stocks.trades", with_changes("stocks.trades", ts_event_ns=EARLIEST_NS - 1), "outside"),
    (
        "stocks.trades",
        with_changes("stocks.trades", ts_event_ns=NOW_NS + 2 * 3600 * 10**9),
        "outside",
    ),
    ("options.trades", with_changes("options.trades", aggressor=300), "$.aggressor"),
    ("options.trades", with_changes("options.trades", aggressor=2), "$.aggressor"),
    ("options.trades", with_changes("options.trades", right="X"), "$.right"),
    ("options.trades", with_changes("options.trades", exp_date="2025-02-30"), "$.exp_date"),
    ("options.trades", with_changes("options.trades", exp_date="16/12/2025"), "$.exp_date"),
    ("options.trades", with_changes("options.trades", underlying=""), "$.underlying"),
    ("options.greeks", with_changes("options.greeks", delta=DROP), "`delta`"),
    ("futures.trades", with_changes("futures.trades", aggressor=-2), "$.aggressor"),
    ("futures.mbp10", with_changes("futures.mbp10", side="Q"), "$.side"),
    ("futures.mbp10", with_changes("futures.mbp10", action="Z"), "$.action"),
    ("futures.mbp10", with_changes("futures.mbp10", is_snapshot=1), "$.is_snapshot"),
    (
        "futures.mbp10",
        with_changes(
            "futures.mbp10", levels=[{"bid_px": 1, "bid_sz": 1, "ask_px": 2, "ask_sz": 1}] * 11
        ),
        "length <= 10",
    ),
    ("futures.mbp10", with_changes("futures.mbp10", levels=[{"bid_px": 1.0}]), "bid_sz"),
    ("levels.signals", with_changes("levels.signals", levels=[{"level_kind": "X"}]), "level_id"),
    (
        "levels.signals",
        with_changes(
            "levels.signals",
            levels=[{"level_id": "a", "level_kind": "b", "level_price": 1, "tape": 3}],
        ),
        "$.levels[0].tape",
    ),
]


@pytest.mark.parametrize(("name", "payload", "reason"), BAD_INPUTS)
def test_bad_input_is_rejected_with_its_reason(name, payload, reason):
    good = encode(SAMPLES[name])
    batch = decode(name, [good, payload, good])
    assert batch.rows.height == 2
    assert batch.positions == [0, 2]
    assert [rejection.index for rejection in batch.rejections] == [1]
    assert reason in batch.rejections[0].reason


def test_every_message_is_a_row_or_a_rejection_in_a_large_mixed_batch():
    payloads = [encode({**SAMPLES["stocks.trades"], "seq": i}) for i in range(2_000)]
    payloads[7] = b"{"
    payloads[1_500] = with_changes("stocks.trades", size=-(2**31) - 1)
    batch = decode("stocks.trades", payloads)
    assert batch.rows.height == 1_998
    assert sorted(batch.positions + [r.index for r in batch.rejections]) == list(range(2_000))
    assert batch.rows.get_column("seq").to_list() == [
        i for i in range(2_000) if i not in (7, 1_500)
    ]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _message_like(name: str) -> st.SearchStrategy[bytes]:
    """Messages of `name` with some fields replaced by arbitrary JSON values or removed."""
    keys = list(SAMPLES[name])
    changes = st.dictionaries(st.sampled_from(keys), JSON_VALUES | st.just(DROP), max_size=4)
    return changes.map(lambda change: with_changes(name, **change))


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([schema.name for schema in SCHEMAS]),
    data=st.data(),
)
def test_decoder_never_raises_and_accounts_for_every_input(name, data):
    payloads = data.draw(
        st.lists(
            st.binary(max_size=64)
            | JSON_VALUES.map(lambda value: json.dumps(value).encode())
            | _message_like(name),
            min_size=1,
            max_size=6,
        )
    )
    batch = decode(name, payloads)
    accounted = sorted(batch.positions + [rejection.index for rejection in batch.rejections])
    assert accounted == list(range(len(payloads)))
    assert batch.rows.height == len(batch.positions)
    assert all(rejection.reason for rejection in batch.rejections)


@pytest.mark.parametrize(
    ("value", "escaped_bytes"),
    [
        ("\U0001f600" * 128, 512),  # 128 characters, 4 bytes each
        ("/" * 128, 384),  # 128 characters, each escaped to %2F
        ("." + "é" * 100, 203),  # the leading dot is escaped too
    ],
)
def test_partition_value_over_the_escaped_byte_budget_is_rejected(value, escaped_bytes):
    batch = decode("stocks.trades", [with_changes("stocks.trades", symbol=value)])
    assert batch.rows.height == 0
    (rejection,) = batch.rejections
    assert f"escapes to {escaped_bytes} bytes" in rejection.reason
    assert "200-byte budget" in rejection.reason


@pytest.mark.parametrize("value", ["A[1]", "a/b", ".." + "x" * 98, "é" * 100, "X" * 128])
def test_partition_values_within_the_escaped_byte_budget_are_kept(value):
    batch = decode("stocks.trades", [with_changes("stocks.trades", symbol=value)])
    assert batch.rejections == []
    assert batch.rows.get_column("symbol").to_list() == [value]


def test_spliced_fragments_are_rejected_like_one_by_one():
    """`{A},{B…[1` and `2]}` are invalid alone; joined into one array they look like two rows."""
    whole = encode({**SAMPLES["stocks.trades"], "conditions": [1, 2]})
    head, tail = whole.split(b"1, 2", 1)
    first = encode(SAMPLES["stocks.trades"]) + b"," + head + b"1"
    second = b"2" + tail
    batch = decode("stocks.trades", [first, second])
    assert batch.rows.height == 0
    assert [rejection.index for rejection in batch.rejections] == [0, 1]


def _fragments() -> st.SearchStrategy[bytes]:
    """Pieces of valid messages cut at arbitrary points, commas and brackets included."""
    whole = st.sampled_from([encode(sample) for sample in SAMPLES.values()])
    return st.tuples(whole, st.integers(0, 400), st.integers(0, 400)).map(
        lambda cut: cut[0][min(cut[1], cut[2]) : max(cut[1], cut[2])]
    )


def _whitespace() -> st.SearchStrategy[bytes]:
    """What may surround a payload: JSON whitespace, and a form feed JSON does not allow."""
    return st.lists(st.sampled_from([b" ", b"\t", b"\n", b"\r", b"\x0c"]), max_size=3).map(b"".join)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from([schema.name for schema in SCHEMAS]), data=st.data())
def test_bulk_and_one_by_one_decoding_agree(name, data):
    good = _message_like(name) | st.just(encode(SAMPLES[name]))
    padded = st.tuples(_whitespace(), good, _whitespace()).map(b"".join)
    pieces = (
        st.binary(max_size=32) | _fragments() | good | padded | st.sampled_from([b",", b"[", b"]"])
    )
    payloads = data.draw(st.lists(pieces, min_size=1, max_size=6))
    bulk = decode(name, payloads)
    singles = [decode(name, [payload]) for payload in payloads]
    rows = pl.concat([single.rows for single in singles])
    assert bulk.positions == [i for i, single in enumerate(singles) if single.rows.height]
    assert [(r.index, r.reason) for r in bulk.rejections] == [
        (i, r.reason) for i, single in enumerate(singles) for r in single.rejections
    ]
    assert bulk.rows.drop("ts_recv_ns").equals(rows.drop("ts_recv_ns"))


def test_payloads_with_whitespace_around_them_keep_the_batch_on_the_bulk_path():
    schema = BY_NAME["stocks.trades"]
    sample = encode(SAMPLES["stocks.trades"])
    assert bulk_array(schema, [sample, sample + b"\n", b" \r\n" + sample + b"\t"]) is not None
    assert bulk_array(schema, [sample + b"," + sample]) is None
    batch = decode("stocks.trades", [sample + b"\n", sample])
    assert batch.rejections == [] and batch.rows.height == 2
