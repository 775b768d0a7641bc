"""Gold assets: flattened level signals (from Bronze) and one-minute bars (from Silver)."""

from lake_platform.defs.derived import build_derived_asset
from lake_platform.defs.keys import GOLD_BARS_1M, GOLD_SIGNALS, bronze_key, silver_key
from lake_platform.defs.silver.assets import CHECK_DESCRIPTIONS
from lake_platform.derived.tables import GOLD_BARS
from lake_platform.derived.tables import GOLD_SIGNALS as GOLD_SIGNALS_TABLE
from lake_platform.schemas import BY_NAME

GOLD_CHECK_DESCRIPTIONS = {
    **CHECK_DESCRIPTIONS,
    "event_id_level_index_unique": "No (event_id, level_index) appears twice in a file.",
    "reconciles_with_bronze": "Rows = levels of the distinct signals in the Bronze hour.",
    "symbol_ts_event_ns_unique": "One bar per symbol and minute.",
    "ohlc_consistent": "low <= open, close <= high.",
    "volume_matches_silver": "Bar volumes sum to the Silver sizes of the hour.",
    "trade_count_matches_silver": "Bar trade counts sum to the Silver rows of the hour.",
}

GOLD_ASSETS = [
    build_derived_asset(
        GOLD_SIGNALS,
        [bronze_key(BY_NAME["levels.signals"])],
        GOLD_SIGNALS_TABLE,
        group_name="gold",
        description=(
            "Level signals, one row per level (`level_index`), deduplicated by `event_id`, "
            "nested objects flattened as `{object}_{field}`."
        ),
        check_descriptions=GOLD_CHECK_DESCRIPTIONS,
    ),
    build_derived_asset(
        GOLD_BARS_1M,
        [silver_key(BY_NAME["stocks.trades"])],
        GOLD_BARS,
        group_name="gold",
        description="One-minute OHLCV bars per symbol from Silver stock trades.",
        check_descriptions=GOLD_CHECK_DESCRIPTIONS,
    ),
]
