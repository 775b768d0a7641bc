-- One row per symbol and UTC day from the day's one-minute bars (`gold/stocks/bars_1m`): the
-- day's open, high, low and close, volume, VWAP, trades and minutes with trades.
--
-- ts_event_ns: Start of the UTC day, ns since the Unix epoch.
-- event_id: Identity of the row: hash of (ts_event_ns, symbol), as a bar's of its minute.
-- open: Price of the day's first trade (the open of its first bar).
-- high: Highest trade price of the day.
-- low: Lowest trade price of the day.
-- close: Price of the day's last trade (the close of its last bar).
-- volume: Sum of the day's trade sizes.
-- vwap: Volume-weighted average price of the day (null when its volume is 0).
-- trade_count: Number of trades in the day.
-- minutes_with_trades: Number of minutes of the day with at least one trade (its bars).
with days as (
    select
        ts_event_ns // 86400000000000 * 86400000000000 as day_start,
        symbol,
        arg_min(open, ts_event_ns) as open,
        max(high) as high,
        min(low) as low,
        arg_max(close, ts_event_ns) as close,
        cast(sum(volume) as bigint) as volume,
        sum(vwap * volume) filter (where volume > 0) as notional,
        cast(sum(trade_count) as bigint) as trade_count,
        count(*) filter (where trade_count > 0) as minutes_with_trades
    from bars
    group by day_start, symbol
)
select
    day_start as ts_event_ns,
    open,
    high,
    low,
    close,
    volume,
    case when volume > 0 then notional / volume end as vwap,
    trade_count,
    minutes_with_trades,
    lake_event_id(day_start, symbol) as event_id,
    symbol
from days
order by ts_event_ns, event_id
