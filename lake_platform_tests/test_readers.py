"""pandas, PyArrow, Polars and DuckDB read every tier and table of the lake exactly, through the
README's own lines ("Reading the lake with …"), on local disk and on S3.

The lake holds partition values that readers like to mangle (`../evil`, `0700`, `true`, …),
Bronze files of both layouts (with the partition column inside, as before issue 13, and
without it) and the Silver and Gold rebuilt from them. Each reader's rows must be exactly the
rows published, with each partition value as a string, and `date`/`hour` those of
`ts_event_ns`.
"""

import ast
import datetime as dt
import json
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from lake_platform.derived.hourly import check_hour, rebuild_hour
from lake_platform.derived.tables import GOLD_BARS, GOLD_SIGNALS, SILVER_TABLES
from lake_platform.local_servers import S3Server
from lake_platform.schemas import SCHEMAS, TableSchema
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.transforms.gold import bars_1m, flatten_signals
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.bronze_files import bronze_rows, write_bronze
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.readme_blocks import fenced_blocks
from lake_platform_tests.samples import SAMPLES

README = Path(__file__).resolve().parents[1] / "README.md"
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
READER_CALLS: dict[str, tuple[str, ...]] = {
    "pandas": ("pd.read_parquet(",),
    "pyarrow": ("ds.dataset(",),
    "polars": ("pl.scan_parquet(",),
    "duckdb": ("duckdb.sql(", "duck.sql("),
}


def is_reader_line(statement: ast.stmt) -> bool:
    """A README line that reads a table with one of `READER_CALLS`."""
    calls = tuple(call for calls in READER_CALLS.values() for call in calls)
    return isinstance(statement, ast.Expr) and ast.unparse(statement).startswith(calls)


def assigns_table_dir(statement: ast.stmt) -> bool:
    return any(
        isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == "table_dir"
        for node in ast.walk(statement)
    )


def readme_block(code_marker: str) -> tuple[list[ast.stmt], list[ast.Expr]]:
    """The README's reader block holding `code_marker`: its set-up statements (without the
    assignment of `table_dir`, which the test makes) and its reader lines."""
    (block,) = [
        block
        for block in fenced_blocks(README.read_text())
        if block.language == "python"
        and "hive_schema=polars_hive" in block.code
        and code_marker in block.code
    ]
    body = ast.parse(block.code).body
    setup = [s for s in body if not is_reader_line(s) and not assigns_table_dir(s)]
    return setup, [s for s in body if is_reader_line(s)]  # type: ignore[misc]


LOCAL_SETUP, LOCAL_READERS = readme_block("arrow_hive = ")
S3_SETUP, S3_READERS = readme_block("S3_ENDPOINT")


def reader_line(lines: list[ast.Expr], reader: str) -> ast.Expr:
    """The README's line of `reader` (the one calling one of `READER_CALLS[reader]`)."""
    (line,) = [line for line in lines if ast.unparse(line).startswith(READER_CALLS[reader])]
    return line


# --- the lake -------------------------------------------------------------------------------


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


def write_lake(store: LakeStore) -> dict[str, tuple[str, pl.DataFrame]]:
    """Bronze of every table (every other value's files in the old layout first, then new
    files in the same folders), Silver and Gold rebuilt from it (checks passing); for each
    table folder, its partition column and the rows readers must return."""
    expected: dict[str, tuple[str, pl.DataFrame]] = {}
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
    for table in [*SILVER_TABLES.values(), GOLD_SIGNALS, GOLD_BARS]:
        for hour in HOURS:
            outcomes = check_hour(store, table, rebuild_hour(store, table, hour))
            assert all(outcome.passed for outcome in outcomes.values()), outcomes
    assert len(expected) == 15  # 7 Bronze, 6 Silver, 2 Gold tables
    return {
        folder: (column, frame.select(column, *KEY).sort(column, *KEY))
        for folder, (column, frame) in expected.items()
    }


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeStore, dict]:
    store = LakeStore(str(tmp_path_factory.mktemp("readers") / "lake"), fsspec.filesystem("file"))
    return store, write_lake(store)


@pytest.fixture(scope="module")
def s3_lake(s3_server: S3Server) -> tuple[LakeSettings, dict]:
    server = s3_server
    server.create_bucket("readers")
    settings = s3_settings(server, "readers")
    return settings, write_lake(LakeStore.from_settings(settings))


@pytest.fixture
def s3_environment(s3_lake: tuple[LakeSettings, dict], monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 lake's variables, as the README's S3 block reads them."""
    settings, _ = s3_lake
    monkeypatch.setenv("S3_ENDPOINT", settings.s3_endpoint or "")
    monkeypatch.setenv("S3_REGION", settings.s3_region or "")
    monkeypatch.setenv("S3_ACCESS_KEY", settings.s3_access_key or "")
    monkeypatch.setenv("S3_SECRET_KEY", settings.s3_secret_key or "")


# --- running the README's lines ---------------------------------------------------------------


def run_reader(
    setup: list[ast.stmt], line: ast.Expr, table_dir: str, column: str
) -> tuple[pl.DataFrame, bool]:
    """Run the README's set-up, then its reader `line`, on `table_dir`; the rows as a Polars
    frame of the partition column, `date`, `hour` and `KEY`, and whether the reader typed the
    partition column as a string itself."""
    namespace: dict[str, object] = {"table_dir": table_dir, "column": column}
    for statement in setup:
        exec(compile(ast.Module([statement], []), "README", "exec"), namespace)
    result = eval(compile(ast.Expression(line.value), "README", "eval"), namespace)
    columns = [column, "date", "hour", *KEY]
    if isinstance(result, pd.DataFrame):
        frame = pl.from_arrow(pa.Table.from_pandas(result[columns], preserve_index=False))
        is_string = pd.api.types.is_string_dtype(result[column])
    elif isinstance(result, pa.Table):
        frame = pl.from_arrow(result.select(columns))
        kind = result.schema.field(column).type
        is_string = pa.types.is_string(kind) or pa.types.is_large_string(kind)
    elif isinstance(result, pl.LazyFrame):
        frame = result.select(columns).collect()
        is_string = frame.schema[column] == pl.String
    else:
        assert isinstance(result, duckdb.DuckDBPyRelation), type(result)
        frame = result.select(*columns).pl()
        is_string = frame.schema[column] == pl.String
    assert isinstance(frame, pl.DataFrame)
    return frame, is_string


def assert_reads_exactly(frame: pl.DataFrame, is_string: bool, column: str, expected) -> None:
    """Every row published, each with its value as a string and its event time's date/hour."""
    assert is_string, f"{column} is not read as a string"
    event_time = pl.from_epoch("ts_event_ns", time_unit="ns")
    mismatched = frame.filter(
        (pl.col("date").cast(pl.Date) != event_time.dt.date())
        | (pl.col("hour").cast(pl.Int32) != event_time.dt.hour().cast(pl.Int32))
    )
    assert mismatched.is_empty(), mismatched
    rows = frame.select(column, *KEY).sort(column, *KEY)
    assert rows.height == expected.height
    assert sorted(set(rows[column])) == sorted(TRICKY)
    assert rows.equals(expected), json.dumps(
        {"read": rows.head(3).rows(), "published": expected.head(3).rows()}, default=str
    )


@pytest.mark.parametrize("reader", sorted(READER_CALLS))
def test_reader_on_local_disk(reader: str, local_lake: tuple[LakeStore, dict]):
    store, expected = local_lake
    line = reader_line(LOCAL_READERS, reader)
    for folder, (column, rows) in expected.items():
        frame, is_string = run_reader(LOCAL_SETUP, line, store.full_path(folder), column)
        assert_reads_exactly(frame, is_string, column, rows)


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(READER_CALLS))
def test_reader_on_s3(reader: str, s3_lake: tuple[LakeSettings, dict], s3_environment):
    settings, expected = s3_lake
    line = reader_line(S3_READERS, reader)
    for folder, (column, rows) in expected.items():
        table_dir = f"{settings.data_root}/{folder}"
        frame, is_string = run_reader(LOCAL_SETUP + S3_SETUP, line, table_dir, column)
        assert_reads_exactly(frame, is_string, column, rows)
