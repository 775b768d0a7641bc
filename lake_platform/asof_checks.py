"""The invariants of as-of enriched Gold rows (`lake_platform.transforms.asof`), verified
without the join that made them.

`no_look_ahead`: nothing joined comes after its trade. `match_is_latest`: each trade holds
exactly the input row an as-of match must pick, found by a sorted search over the inputs'
(key, time) pairs: the last row of its key at or before the trade in Silver order, or none
when there is none or it is older than the age bound. Each returns a `CheckOutcome` whose
message names the file and the first offending row.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from lake_platform.checks import CheckOutcome

TS, EVENT_ID = "ts_event_ns", "event_id"


@dataclass(frozen=True)
class AsofMatch:
    """How an enriched row holds one as-of match.

    `key`: the enriched column the match is made on, `input_key`: the input's column it must
    equal; `age`: the enriched column holding the trade's time minus the match's (null
    without a match); `matched_ts`: the enriched column holding the match's time, if any;
    `columns`: (enriched column, input column) pairs that must equal the matched input
    row's values.
    """

    key: str
    input_key: str
    age: str
    matched_ts: str | None
    columns: tuple[tuple[str, str], ...]


def _first_row(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def no_look_ahead(frame: pl.DataFrame, matches: Sequence[AsofMatch], file: str) -> CheckOutcome:
    """Every joined time is at or before its row's `ts_event_ns`: each match's age is not
    negative, and its stored time (`matched_ts`) not after the trade."""
    for match in matches:
        late = pl.col(match.age) < 0
        if match.matched_ts is not None:
            late = late | (pl.col(match.matched_ts) > pl.col(TS))
        bad = frame.select(late.fill_null(False).alias("bad")).to_series()
        if bad.any():
            row = _first_row(bad)
            stored = [match.matched_ts] if match.matched_ts is not None else []
            shown = [TS, EVENT_ID, match.age, *stored]
            values = {name: frame[name][row] for name in shown}
            return CheckOutcome(False, f"{file}: row {row} joins a later {match.key} row: {values}")
    names = ", ".join(match.age for match in matches)
    return CheckOutcome.ok(f"{file}: {frame.height} rows, no joined time after its trade ({names})")


def match_is_latest(
    enriched: pl.DataFrame,
    inputs: Sequence[pl.DataFrame],
    match: AsofMatch,
    max_age_ns: int,
    file: str,
) -> CheckOutcome:
    """Each row of `enriched` holds the input row an as-of match must pick, or nothing
    exactly when none qualifies.

    `inputs` are the frames the match was made from (the hour's and the previous hour's),
    with `match.input_key`, `ts_event_ns`, `event_id` and `match.columns`' input columns,
    rows in any order. Each trade's expected row is found by a sorted search
    (`_expected_rows`): the last input row of its key at or before it in Silver order, when
    at most `max_age_ns` old. The trade's age must then be its time minus that row's and
    each of `match.columns` that row's value, and without an expected row all of them null:
    no input row of the key lies in (matched time, trade time], and no match is missed or
    made up.
    """
    rows = _input_rows(inputs, match)
    sources = list(dict.fromkeys([TS, EVENT_ID, *(source for _, source in match.columns)]))
    expected_rows = _expected_rows(rows, enriched, match, max_age_ns)
    expected = rows.select(
        pl.col(source).gather(expected_rows).alias(f"_expected_{source}") for source in sources
    )
    held = [match.age, *(name for name, _ in match.columns)]
    frame = pl.concat(
        [enriched.select(list(dict.fromkeys([TS, EVENT_ID, match.key, *held]))), expected],
        how="horizontal",
    )
    differs = pl.any_horizontal(
        pl.col(match.age).ne_missing(pl.col(TS) - pl.col(f"_expected_{TS}")),
        *(pl.col(name).ne_missing(pl.col(f"_expected_{source}")) for name, source in match.columns),
    )
    bad = frame.select(differs.alias("bad")).to_series()
    if not bad.any():
        matched = frame.get_column(match.age).is_not_null().sum()
        return CheckOutcome.ok(
            f"{file}: each of {frame.height} rows holds the latest {match.key} match within "
            f"{max_age_ns} ns ({matched} matched)"
        )
    index = _first_row(bad)
    return CheckOutcome(False, _mismatch(index, frame.row(index, named=True), match, file))


def _input_rows(inputs: Sequence[pl.DataFrame], match: AsofMatch) -> pl.DataFrame:
    """The columns `match` reads of every input row with a key and a time, the frames that
    start earlier first: a partition value's Silver rows are then already in (key, time)
    order and `_silver_order` sorts nothing. No column is copied unless a row is dropped."""
    wanted = list(dict.fromkeys([match.input_key, TS, EVENT_ID, *(c for _, c in match.columns)]))
    frames = sorted(
        (frame.select(wanted) for frame in inputs if frame.height),
        key=lambda frame: frame.get_column(TS).min() or 0,  # type: ignore[return-value]
    )
    rows = pl.concat(frames) if frames else inputs[0].select(wanted).clear()
    if rows.get_column(match.input_key).has_nulls() or rows.get_column(TS).has_nulls():
        return rows.filter(pl.col(match.input_key).is_not_null() & pl.col(TS).is_not_null())
    return rows


def _expected_rows(
    rows: pl.DataFrame, enriched: pl.DataFrame, match: AsofMatch, max_age_ns: int
) -> pl.Series:
    """For each row of `enriched`, the row of `rows` it must match (null for none).

    Keys are coded (`_key_codes`) and each (key, time) made one integer, code · span +
    (time − the earliest time), with span the times' range: ordered as (key, time), so one
    sorted search finds the last input row at or before each trade. Int64 holds it for any
    real hour (2 h of nanoseconds for a million keys); Int128 takes the rest. The sorted
    input rows that share a value are put in `event_id` order (`_silver_order`), so the row
    found is the last in Silver order.
    """
    input_codes, trade_codes, count = _key_codes(
        rows.get_column(match.input_key), enriched.get_column(match.key)
    )
    input_ts, trade_ts = rows.get_column(TS), enriched.get_column(TS)
    times = pl.concat([input_ts, trade_ts], rechunk=False).drop_nulls()
    origin, last = (times.min(), times.max()) if times.len() else (0, 0)
    span = int(last) - int(origin) + 1  # type: ignore[arg-type]
    dtype = pl.Int64() if count * span < 2**63 else pl.Int128()
    scale, start = pl.lit(span, dtype), pl.lit(origin, dtype)

    def composite(codes: pl.Series, ts: pl.Series) -> pl.Series:
        return pl.select(codes.cast(dtype) * scale + (ts.cast(dtype) - start)).to_series()

    inputs = composite(input_codes, input_ts)
    order, in_order = _silver_order(inputs, rows.get_column(EVENT_ID))
    found = in_order.search_sorted(composite(trade_codes, trade_ts), side="right")
    before = found.cast(pl.Int64) - 1
    at_or_before = pl.select(pl.when(before >= 0).then(before)).to_series()
    candidate = at_or_before if order is None else order.gather(at_or_before)
    qualifies = (
        (trade_codes.cast(pl.Int64) == input_codes.gather(candidate).cast(pl.Int64))
        & (trade_ts - input_ts.gather(candidate) <= max_age_ns)
    ).fill_null(False)
    return pl.select(pl.when(qualifies).then(candidate)).to_series()


def _key_codes(input_keys: pl.Series, trade_keys: pl.Series) -> tuple[pl.Series, pl.Series, int]:
    """The keys of the inputs and of the trades as integer codes, equal for equal keys
    (null for null), and how many codes there are: an `Enum` of every key seen, or all 0
    when there is one key (a partition value's hour)."""
    keys = pl.concat([input_keys, trade_keys], rechunk=False).drop_nulls()
    if keys.is_empty() or bool((keys == keys.first()).all()):
        return (
            pl.select(pl.when(input_keys.is_not_null()).then(0)).to_series(),
            pl.select(pl.when(trade_keys.is_not_null()).then(0)).to_series(),
            1,
        )
    codes = pl.Enum(keys.unique().sort())
    return (
        input_keys.cast(codes).to_physical(),
        trade_keys.cast(codes).to_physical(),
        len(codes.categories),
    )


def _silver_order(composite: pl.Series, event_ids: pl.Series) -> tuple[pl.Series | None, pl.Series]:
    """Row numbers in order of `composite`, then `event_id` (None: the rows already are),
    and `composite` in that order.

    Sorted by the one integer (unless it already is); only the rows that share it with a
    neighbour are then sorted among themselves by `event_id` (few: two inputs of one key at
    one nanosecond), not the whole frame by a string.
    """
    order = None if composite.is_sorted() else composite.arg_sort()
    in_order = composite if order is None else composite.gather(order)
    repeats = in_order.diff() == 0
    if not repeats.any():
        return order, in_order
    tied = (repeats | repeats.shift(-1)).fill_null(False)
    at = tied.arg_true()
    rows = at if order is None else order.gather(at)
    runs = pl.DataFrame(
        {"composite": in_order.gather(at), "event_id": event_ids.gather(rows), "row": rows}
    ).sort("composite", "event_id", "row")
    whole = pl.int_range(composite.len(), dtype=pl.UInt32, eager=True) if order is None else order
    return whole.scatter(at, runs.get_column("row")), in_order


def _mismatch(index: int, row: dict[str, object], match: AsofMatch, file: str) -> str:
    """What the offending row `index` holds and what it should hold."""
    trade = {name: row[name] for name in (EVENT_ID, match.key, TS)}
    held = {name: row[name] for name in (match.age, *(name for name, _ in match.columns))}
    expected_ts, expected_id = row[f"_expected_{TS}"], row[f"_expected_{EVENT_ID}"]
    if expected_ts is None:
        return (
            f"{file}: row {index} {trade} holds {held}, but no {match.input_key} row of its "
            "key lies at or before it within the age bound"
        )
    latest = f"{expected_id} at {expected_ts}"
    if row[match.age] is None:
        return f"{file}: row {index} {trade} holds no match, but input row {latest} qualifies"
    matched_ts = row[TS] - row[match.age]  # type: ignore[operator]
    if matched_ts < expected_ts:  # type: ignore[operator]
        return (
            f"{file}: row {index} {trade} holds {held}, but input row {latest} lies in "
            f"(matched {matched_ts}, trade {row[TS]}]"
        )
    return f"{file}: row {index} {trade} holds {held}, but the latest input row is {latest}"
