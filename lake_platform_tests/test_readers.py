"""pandas, PyArrow, Polars and DuckDB read every tier and table of the lake exactly, through the
documented lines (docs/readers.md, "Reading the lake with …"), on local disk and on S3.

The lake holds partition values that readers like to mangle (`../evil`, `0700`, `true`, …),
Bronze files of both layouts (with the partition column inside, as before the
partition-column change, and without it) and the Silver and Gold rebuilt from them. Each
reader's rows must be exactly the rows published, with each partition value as a string, and
`date`/`hour` those of `ts_event_ns`.
"""

import ast
import json
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.readme_blocks import fenced_blocks
from lake_platform_tests.servers import S3Server
from lake_platform_tests.tricky_lake import KEY, TRICKY, Expected, write_lake

READERS_DOC = Path(__file__).resolve().parents[1] / "docs" / "readers.md"
READER_CALLS: dict[str, tuple[str, ...]] = {
    "pandas": ("pd.read_parquet(",),
    "pyarrow": ("ds.dataset(",),
    "polars": ("pl.scan_parquet(",),
    "duckdb": ("duckdb.sql(", "duck.sql("),
}


def is_reader_line(statement: ast.stmt) -> bool:
    """A documented line that reads a table with one of `READER_CALLS`."""
    calls = tuple(call for calls in READER_CALLS.values() for call in calls)
    return isinstance(statement, ast.Expr) and ast.unparse(statement).startswith(calls)


def assigns_table_dir(statement: ast.stmt) -> bool:
    return any(
        isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id == "table_dir"
        for node in ast.walk(statement)
    )


def documented_block(code_marker: str) -> tuple[list[ast.stmt], list[ast.Expr]]:
    """The documented reader block holding `code_marker`: its set-up statements (without the
    assignment of `table_dir`, which the test makes) and its reader lines."""
    (block,) = [
        block
        for block in fenced_blocks(READERS_DOC.read_text(), "docs/readers.md")
        if block.language == "python"
        and "hive_schema=polars_hive" in block.code
        and code_marker in block.code
    ]
    body = ast.parse(block.code).body
    setup = [s for s in body if not is_reader_line(s) and not assigns_table_dir(s)]
    return setup, [s for s in body if is_reader_line(s)]  # type: ignore[misc]


LOCAL_SETUP, LOCAL_READERS = documented_block("arrow_hive = ")
S3_SETUP, S3_READERS = documented_block("S3_ENDPOINT")


def reader_line(lines: list[ast.Expr], reader: str) -> ast.Expr:
    """The documented line of `reader` (the one calling one of `READER_CALLS[reader]`)."""
    (line,) = [line for line in lines if ast.unparse(line).startswith(READER_CALLS[reader])]
    return line


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[LakeStore, Expected]:
    store = LakeStore(str(tmp_path_factory.mktemp("readers") / "lake"), fsspec.filesystem("file"))
    return store, write_lake(store)


@pytest.fixture(scope="module")
def s3_lake(s3_server: S3Server) -> tuple[LakeSettings, Expected]:
    server = s3_server
    server.create_bucket("readers")
    settings = s3_settings(server, "readers")
    return settings, write_lake(LakeStore.from_settings(settings))


@pytest.fixture
def s3_environment(s3_lake: tuple[LakeSettings, Expected], monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 lake's variables, as the documented S3 block reads them."""
    settings, _ = s3_lake
    monkeypatch.setenv("S3_ENDPOINT", settings.s3_endpoint or "")
    monkeypatch.setenv("S3_REGION", settings.s3_region or "")
    monkeypatch.setenv("S3_ACCESS_KEY", settings.s3_access_key or "")
    monkeypatch.setenv("S3_SECRET_KEY", settings.s3_secret_key or "")


# --- running the documented lines -----------------------------------------------------------


def run_reader(
    setup: list[ast.stmt], line: ast.Expr, table_dir: str, column: str
) -> tuple[pl.DataFrame, bool]:
    """Run the documented set-up, then its reader `line`, on `table_dir`; the rows as a Polars
    frame of the partition column, `date`, `hour` and `KEY`, and whether the reader typed the
    partition column as a string itself."""
    namespace: dict[str, object] = {"table_dir": table_dir, "column": column}
    for statement in setup:
        exec(compile(ast.Module([statement], []), "docs/readers.md", "exec"), namespace)
    result = eval(compile(ast.Expression(line.value), "docs/readers.md", "eval"), namespace)
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


def assert_reads_exactly(
    frame: pl.DataFrame, is_string: bool, column: str, expected: pl.DataFrame
) -> None:
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
def test_reader_on_local_disk(reader: str, local_lake: tuple[LakeStore, Expected]):
    store, expected = local_lake
    line = reader_line(LOCAL_READERS, reader)
    for folder, (column, rows) in expected.items():
        frame, is_string = run_reader(LOCAL_SETUP, line, store.full_path(folder), column)
        assert_reads_exactly(frame, is_string, column, rows)


@pytest.mark.slow
@pytest.mark.parametrize("reader", sorted(READER_CALLS))
def test_reader_on_s3(reader: str, s3_lake: tuple[LakeSettings, Expected], s3_environment):
    settings, expected = s3_lake
    line = reader_line(S3_READERS, reader)
    for folder, (column, rows) in expected.items():
        table_dir = f"{settings.data_root}/{folder}"
        frame, is_string = run_reader(LOCAL_SETUP + S3_SETUP, line, table_dir, column)
        assert_reads_exactly(frame, is_string, column, rows)


def test_plain_pandas_and_pyarrow_read_tables_without_the_partition_column(
    local_lake: tuple[LakeStore, Expected],
):
    """The lines that once failed, as users type them, on the rebuilt tiers (no file holds the
    partition column): every row is read; values are typed by inference (categoricals)."""
    store, expected = local_lake
    for folder, (column, rows) in expected.items():
        if folder.startswith("bronze/"):
            continue  # half its folders hold files of the old layout
        table_dir = store.full_path(folder)
        frame = pd.read_parquet(table_dir)
        assert sorted(frame[column].astype(str)) == sorted(rows[column])
        assert ds.dataset(table_dir, partitioning="hive").count_rows() == rows.height
