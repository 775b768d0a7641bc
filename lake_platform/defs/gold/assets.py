"""Gold assets: flattened level signals (from Bronze) and one-minute bars (from Silver)."""

from dataclasses import dataclass

import dagster as dg

from lake_platform.defs.derived import build_derived_asset
from lake_platform.defs.keys import derived_key
from lake_platform.derived.hourly import DerivedTable
from lake_platform.derived.tables import GOLD_BARS, GOLD_SIGNALS


@dataclass(frozen=True)
class GoldTable:
    """A Gold table and how the UI describes its asset."""

    table: DerivedTable
    description: str

    @property
    def key(self) -> dg.AssetKey:
        return derived_key(self.table.target)

    @property
    def upstream(self) -> dg.AssetKey:
        return derived_key(self.table.source)


GOLD_TABLES = (
    GoldTable(
        GOLD_SIGNALS,
        "Level signals, one row per level (`level_index`), deduplicated by `event_id`, "
        "nested objects flattened as `{object}_{field}`.",
    ),
    GoldTable(GOLD_BARS, "One-minute OHLCV bars per symbol from Silver stock trades."),
)
"""Every Gold table: the assets below, and what `lake-platform tables` lists."""

GOLD_ASSETS = [
    build_derived_asset(
        gold.key, [gold.upstream], gold.table, group_name="gold", description=gold.description
    )
    for gold in GOLD_TABLES
]
