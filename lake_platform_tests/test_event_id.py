"""Golden vectors of `event_id`: identities must never change across refactors or upgrades.

If one of these fails, the canonical encoding changed and every event in the lake would get
a new identity, so Silver would stop deduplicating against history. Do not update the
vectors; fix the encoding.
"""

import hashlib
import json

import polars as pl
import pytest

from lake_platform.schemas import BY_NAME, SCHEMAS, decode_batch
from lake_platform.schemas.event_id import canonical_encoding, event_id
from lake_platform_tests.samples import SAMPLES, TS

GOLDEN_EVENT_IDS = {
    "stocks.trades": "ed965243821fcf9e64b104be137cd813",
    "stocks.quotes": "272ca053f2ecb3b9a57d99a069caa02a",
    "options.trades": "38167f5a98f3d2a7c5affec142eebea1",
    "options.greeks": "b2ac547692f93c679af3ed4f129a34b2",
    "futures.trades": "75aafda70918c5c7db6373ee36dc70c1",
    "futures.mbp10": "23e8cbdb139d054838d5c9d0990af391",
    "levels.signals": "e36970a3917925d862856d823f7f1184",
}
GOLDEN_ENCODINGS = {
    "stocks.trades": "1765895400123456789|3:SPY|681.27|100|12|[14,41]|4401223|11:direct_feed",
    "levels.signals": (
        "1765895400123456789|3:SPY|681.27|681.26|681.28|"
        "[{7:PM_HIGH,14:PREMARKET_HIGH,683.0,2:UP,1.73,0.62,0.58,5:BREAK,6:MEDIUM,"
        "{4:WEAK,-1200.0,0.4,3000.0,2500.0,1700.0},{0.31,52000.0,27000.0,0.8,T},"
        "{7:AMPLIFY,-410000000.0,690.0,670.0},{2:UP,686.0,3.0,5:CLEAR}},"
        "{10:STRIKE_680,6:STRIKE,680.0,~,~,~,~,~,~,~,~,~,~}]|11:direct_feed"
    ),
}


def decoded(name: str, message: dict[str, object]) -> pl.DataFrame:
    batch = decode_batch(
        BY_NAME[name],
        [json.dumps(message).encode()],
        received_ns=[0],
        earliest_ns=0,
        now_ns=TS,
    )
    assert batch.rejections == []
    return batch.rows


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda schema: schema.name)
def test_golden_event_id(schema):
    rows = decoded(schema.name, SAMPLES[schema.name])
    assert rows.get_column("event_id").item() == GOLDEN_EVENT_IDS[schema.name]


@pytest.mark.parametrize("name", sorted(GOLDEN_ENCODINGS))
def test_golden_canonical_encoding_and_its_md5(name):
    rows = decoded(name, SAMPLES[name])
    encoding = rows.select(canonical_encoding(BY_NAME[name].stored_schema)).item()
    assert encoding == GOLDEN_ENCODINGS[name]
    assert hashlib.md5(encoding.encode()).hexdigest() == GOLDEN_EVENT_IDS[name]


def test_receive_time_does_not_change_identity_but_every_other_field_does():
    sample = SAMPLES["stocks.trades"]
    base = decoded("stocks.trades", sample)["event_id"].item()
    assert decoded("stocks.trades", {**sample, "ts_recv_ns": 1})["event_id"].item() == base
    for field, value in [("price", 681.28), ("size", 101), ("conditions", None), ("seq", 1)]:
        assert decoded("stocks.trades", {**sample, field: value})["event_id"].item() != base


def test_strings_are_length_prefixed_so_separators_in_values_cannot_collide():
    schema = pl.Schema({"a": pl.String(), "b": pl.String()})
    frame = pl.DataFrame({"a": ["x|1:y", "x"], "b": ["z", "1:y|1:z"]}, schema=schema)
    ids = frame.select(event_id(schema)).get_column("event_id").to_list()
    assert ids[0] != ids[1]


def test_null_and_empty_and_negative_zero():
    schema = pl.Schema({"s": pl.String(), "f": pl.Float64(), "l": pl.List(pl.Int32())})
    frame = pl.DataFrame(
        {"s": [None, "~", ""], "f": [-0.0, 0.0, None], "l": [[], None, [1]]}, schema=schema
    )
    tokens = frame.select(canonical_encoding(schema)).to_series().to_list()
    assert tokens == ["~|0.0|[]", "1:~|0.0|~", "0:|~|[1]"]
