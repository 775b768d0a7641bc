"""A lake whose partition values readers like to mangle, for the reader tests and
`compat/spark_read.py`.

Every table (7 Bronze, 6 Silver, 2 Gold) holds the values `TRICKY` over two hours; every other
value's Bronze folder holds files of the layout before issue 13 (the partition column inside)
next to files without it, and Silver and Gold are rebuilt from that Bronze by the platform's
own code, their checks passing.
"""

import datetime as dt
import secrets
from pathlib import Path

import polars as pl

from lake_platform.derived.asof_tables import GOLD_OPTIONS_ENRICHED, GOLD_TRADES_NBBO
from lake_platform.derived.checking import check_hour
from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.sql_rebuild import rebuild_day
from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
from lake_platform.derived.tables import GOLD_BARS, GOLD_SIGNALS, GOLD_TABLES, SILVER_TABLES
from lake_platform.schemas import SCHEMAS, TableSchema
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables
from lake_platform.transforms.gold import bars_1m, flatten_signals
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.bronze_files import bronze_rows, write_bronze
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.samples import SAMPLES
from lake_platform_tests.servers import S3Server
from lake_platform_tests.tables_of import tables_of

TRICKY = (
    "../evil",
    "A/B",
    "BRK.B",
    "ÄPFEL",
    "A[1]",
    "x#y",
    "0700",
    "007",
    "1e5",
    "true",
    "null",
    "2025-12-16",
)
HOURS = (dt.datetime(2025, 12, 16, 9, tzinfo=dt.UTC), dt.datetime(2025, 12, 16, 10, tzinfo=dt.UTC))
PER_HOUR = 3
"""Messages per partition value and hour; the first is also published twice."""
KEY = ("ts_event_ns", "event_id")
Expected = dict[str, tuple[str, pl.DataFrame]]
"""Per table folder (`silver/stocks/trades`), its partition column and the rows a reader must
return: the column, then `KEY`, sorted."""


def messages(schema: TableSchema, value: str) -> list[dict[str, object]]:
    """`PER_HOUR` events of `value` in each hour of `HOURS`, the first of each repeated."""
    sample = SAMPLES[schema.name]
    events = [
        {
            **sample,
            schema.partition_column: value,
            "ts_event_ns": int(hour.timestamp()) * 10**9 + (i + 1) * 60 * 10**9 + 7,
        }
        for hour in HOURS
        for i in range(PER_HOUR)
    ]
    return events + events[::PER_HOUR]


def published(schema: TableSchema) -> pl.DataFrame:
    """Bronze rows of every tricky value of `schema` (duplicates included)."""
    return pl.concat(
        [
            bronze_rows(schema, messages(schema, value), first_seq=1 + index * 100)
            for index, value in enumerate(TRICKY)
        ]
    )


def write_lake(store: LakeStore, settings: LakeSettings | None = None) -> Expected:
    """Bronze of every table (every other value's files in the old layout first, then new
    files in the same folders), Silver and Gold rebuilt from it and committed to the lake's
    catalog (checks passing); for each table folder, its partition column and the rows
    readers must return. `settings`: those of a store on S3 (its catalog)."""
    expected: Expected = {}
    for schema in SCHEMAS:
        rows = published(schema)
        for index, value in enumerate(TRICKY):
            own = rows.filter(pl.col(schema.partition_column) == value)
            half = own.height // 2
            old = index % 2 == 0
            write_bronze(store, schema, own.head(half), old_layout=old)
            write_bronze(store, schema, own.slice(half))
        column = schema.partition_column
        expected[f"bronze/{schema.table}"] = (column, rows)
        if schema.silver:
            expected[f"silver/{schema.table}"] = (column, deduplicate(rows))
    trades, signals = expected["silver/stocks/trades"][1], expected["bronze/levels/signals"][1]
    expected[GOLD_BARS.target] = ("symbol", bars_1m(trades))
    expected[GOLD_SIGNALS.target] = ("underlying", flatten_signals(signals))
    # an as-of table has a row per Silver trade, with its keys
    expected[GOLD_TRADES_NBBO.target] = ("symbol", trades)
    expected[GOLD_OPTIONS_ENRICHED.target] = ("underlying", expected["silver/options/trades"][1])
    for table in [*SILVER_TABLES.values(), *GOLD_TABLES]:
        for hour in HOURS:
            tables = tables_of(store, settings)
            outcomes = check_hour(tables, table, rebuild_hour(tables, table, hour))
            assert all(outcome.passed for outcome in outcomes.values()), outcomes
    assert len(expected) == 17  # 7 Bronze, 6 Silver, 4 hourly Gold tables
    return {
        folder: (column, frame.select(column, *KEY).sort(column, *KEY))
        for folder, (column, frame) in expected.items()
    }


def tricky_lake_on_disk(root: Path) -> tuple[LakeSettings, Expected]:
    """The tricky lake below `root` (local disk), its daily SQL Gold tables built too."""
    settings = LakeSettings(data_root=str(root / "lake"))
    expected = write_lake(LakeStore.from_settings(settings))
    return settings, with_daily_tables(settings, expected)


def tricky_lake_on_s3(server: S3Server, prefix: str) -> tuple[LakeSettings, Expected]:
    """The tricky lake in a new bucket of `server`, its daily SQL Gold tables built too."""
    bucket = f"{prefix}-{secrets.token_hex(4)}"
    server.create_bucket(bucket)
    settings = s3_settings(server, bucket)
    expected = write_lake(LakeStore.from_settings(settings), settings)
    return settings, with_daily_tables(settings, expected)


def with_daily_tables(settings: LakeSettings, expected: Expected) -> Expected:
    """`expected`, the lake's daily SQL Gold tables built too (their day of `HOURS`)."""
    tables = open_lake_tables(settings)
    for table in SQL_GOLD_TABLES:
        rebuild_day(tables, table, HOURS[0].replace(hour=0))
    return expected


def comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in one order: sorted by every column that is not nested."""
    keys = [name for name, dtype in frame.schema.items() if not dtype.is_nested()]
    return frame.sort(keys)


def catalog_read(tables: LakeTables, target: str, snapshot_id: int | None = None) -> pl.DataFrame:
    """The table's rows as pyiceberg reads them through the catalog."""
    table = tables.existing(target)
    assert table is not None
    frame = pl.from_arrow(table.scan(snapshot_id=snapshot_id).to_arrow())
    assert isinstance(frame, pl.DataFrame)
    return frame
