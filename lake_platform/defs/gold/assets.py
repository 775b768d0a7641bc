"""Gold assets: one per declared Gold table (`derived/tables.py`), rebuilt per hour from the
assets of its inputs, with its checks."""

from lake_platform.defs.derived import build_derived_asset
from lake_platform.derived.tables import GOLD_TABLES

GOLD_ASSETS = [
    build_derived_asset(
        gold,
        group_name="gold",
        description=gold.description,
    )
    for gold in GOLD_TABLES
]
