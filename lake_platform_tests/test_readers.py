"""pandas, PyArrow, Polars and DuckDB read every table of the lake exactly through the lines
docs/readers.md gives: Silver and Gold through the Iceberg catalog, Bronze with Hive globs, on
local disk and on S3. And the documented warning is true: once an hour is rebuilt, a glob
over its Silver folder reads more rows than the catalog.

The lake holds partition values that readers like to mangle (`../evil`, `0700`, `true`, …),
Bronze files of both layouts (with the partition column inside, as before the
partition-column change, and without it) and the Silver and Gold rebuilt from them and
committed to the lake's catalog. Each reader's rows must be exactly the rows published, with
each partition value as a string, and `date`/`hour` those of `ts_event_ns`.

The documented blocks are run as a user would paste them, except for the names the test gives
(`table_dir` or `table_name`, and `column`): a reader line runs after exactly the statements
it depends on (`needed_statements`), so the S3 block's Bronze lines do not open its catalog.
"""

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import fsspec
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.hours import HOUR_FORMAT
from lake_platform.tables.identifiers import table_identifier
from lake_platform.transforms.silver import deduplicate
from lake_platform_tests.bronze_files import HOUR, TRADES, bronze_rows, trades, write_bronze
from lake_platform_tests.conftest import s3_settings
from lake_platform_tests.readme_blocks import Block, fenced_blocks
from lake_platform_tests.servers import S3Server
from lake_platform_tests.tables_of import tables_of
from lake_platform_tests.tricky_lake import KEY, TRICKY, Expected, write_lake

READERS_DOC = Path(__file__).resolve().parents[1] / "docs" / "readers.md"
LAKE_FOLDER = "data/lake"
"""Where the documented lines find the lake and its catalog, relative to the current folder."""
READER_CALLS: dict[str, tuple[str, ...]] = {
    "pandas": ("pd.read_parquet(", "scan.to_pandas("),
    "pyarrow": ("ds.dataset(", "scan.to_arrow("),
    "polars": ("pl.scan_parquet(", "pl.scan_iceberg("),
    "duckdb": ("duckdb.sql(", "duck.sql("),
}
GIVEN = {"hive": "table_dir", "catalog": "table_name"}
"""The name each kind of line is given: a Bronze folder, or a Silver/Gold identifier."""


def reader_of(statement: ast.stmt) -> str | None:
    """The reader a documented statement reads a table with, if it is a reader line."""
    if not isinstance(statement, ast.Expr):
        return None
    text = ast.unparse(statement)
    return next((name for name, calls in READER_CALLS.items() if text.startswith(calls)), None)


def local_names(statement: ast.stmt) -> set[str]:
    """Names bound inside a comprehension of the statement (`task` in `[… for task in …]`)."""
    return {
        node.id
        for comprehension in ast.walk(statement)
        if isinstance(comprehension, ast.comprehension)
        for node in ast.walk(comprehension.target)
        if isinstance(node, ast.Name)
    }


def assigned(statement: ast.stmt) -> set[str]:
    """Names a statement binds (assignments, imports)."""
    names = {
        node.id
        for node in ast.walk(statement)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    } - local_names(statement)
    if isinstance(statement, ast.Import | ast.ImportFrom):
        names |= {(alias.asname or alias.name).split(".")[0] for alias in statement.names}
    return names


def mutated(statement: ast.stmt) -> set[str]:
    """The object a bare method call changes (`duck.register_filesystem(s3)` changes `duck`)."""
    if not isinstance(statement, ast.Expr) or not isinstance(statement.value, ast.Call):
        return set()
    target = statement.value.func
    while isinstance(target, ast.Attribute):
        target = target.value
    return {target.id} if isinstance(target, ast.Name) else set()


def used(statement: ast.stmt) -> set[str]:
    """Names a statement reads, words of its strings included (DuckDB's SQL names Python
    variables: `select * from arrow_rows`)."""
    names = {
        node.id
        for node in ast.walk(statement)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    }
    for node in ast.walk(statement):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names |= set(re.findall(r"[A-Za-z_]\w*", node.value))
    return names - local_names(statement)


def needed_statements(statements: list[ast.stmt], line: ast.Expr) -> tuple[list[ast.stmt], set]:
    """The statements `line` depends on, in order, and the names none of them binds."""
    needed, chosen = used(line), []
    for statement in reversed(statements):
        binds = assigned(statement)
        if needed & (binds | mutated(statement)):
            chosen.append(statement)
            needed = (needed - binds) | used(statement)
    return chosen[::-1], needed


@dataclass(frozen=True)
class ReaderLine:
    """A documented reader line, the statements it needs, and what it reads."""

    reader: str
    kind: str
    """`hive` (given `table_dir`) or `catalog` (given `table_name`)."""
    line: ast.Expr
    setup: tuple[ast.stmt, ...]


def documented_blocks() -> dict[str, Block]:
    """The reader blocks of docs/readers.md: local Bronze, local Silver/Gold, and S3."""
    blocks = [
        block
        for block in fenced_blocks(READERS_DOC.read_text(), "docs/readers.md")
        if block.language == "python"
    ]

    def only(marker: str, *, s3: bool) -> Block:
        (block,) = [b for b in blocks if marker in b.code and ("S3_ENDPOINT" in b.code) == s3]
        return block

    return {
        "hive": only("hive_schema=polars_hive", s3=False),
        "catalog": only("scan.to_pandas()", s3=False),
        "s3": only("S3_ENDPOINT", s3=True),
    }


def reader_lines(blocks: list[Block]) -> list[ReaderLine]:
    """The reader lines of the last of `blocks`, each with the statements it needs from the
    blocks up to it (the assignments of the given names left out)."""
    statements = [statement for block in blocks for statement in ast.parse(block.code).body]
    own = len(ast.parse(blocks[-1].code).body)
    given = {*GIVEN.values(), "column"}
    lines = []
    for index in range(len(statements) - own, len(statements)):
        statement, reader = statements[index], reader_of(statements[index])
        if reader is None:
            continue
        assert isinstance(statement, ast.Expr)
        earlier = [
            s for s in statements[:index] if reader_of(s) is None and not assigned(s) & given
        ]
        chosen, unbound = needed_statements(earlier, statement)
        kinds = [kind for kind, name in GIVEN.items() if name in unbound]
        assert len(kinds) == 1, f"{ast.unparse(statement)} needs one of {GIVEN}: {unbound}"
        lines.append(ReaderLine(reader, kinds[0], statement, tuple(chosen)))
    return lines


BLOCKS = documented_blocks()
LOCAL_LINES = reader_lines([BLOCKS["hive"]]) + reader_lines([BLOCKS["hive"], BLOCKS["catalog"]])
S3_LINES = reader_lines([BLOCKS["hive"], BLOCKS["catalog"], BLOCKS["s3"]])


def line_id(line: ReaderLine) -> str:
    return f"{line.kind}-{line.reader}-L{line.line.lineno}"


def test_every_reader_is_documented_for_both_kinds_of_table_local_and_on_s3():
    for lines in (LOCAL_LINES, S3_LINES):
        documented = {(line.kind, line.reader) for line in lines}
        assert documented == {(kind, reader) for kind in GIVEN for reader in READER_CALLS}
    for line in S3_LINES:
        opened = [ast.unparse(s) for s in line.setup if "sqlite:///" in ast.unparse(s)]
        assert not opened, f"an S3 line runs the local catalog's lines: {opened}"


# --- the lakes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LakeStore, Expected]:
    """The tricky lake at `{folder}/data/lake`, its catalog the default SQLite file."""
    folder = tmp_path_factory.mktemp("readers")
    store = LakeStore(str(folder / LAKE_FOLDER), fsspec.filesystem("file"))
    return folder, store, write_lake(store)


@pytest.fixture(scope="module")
def s3_lake(s3_server: S3Server) -> tuple[LakeSettings, Expected]:
    server = s3_server
    server.create_bucket("readers")
    settings = s3_settings(server, "readers")
    return settings, write_lake(LakeStore.from_settings(settings), settings)


@pytest.fixture
def s3_environment(s3_lake: tuple[LakeSettings, Expected], monkeypatch: pytest.MonkeyPatch) -> None:
    """The S3 lake's variables, as the documented S3 block reads them."""
    settings, _ = s3_lake
    monkeypatch.setenv("S3_ENDPOINT", settings.s3_endpoint or "")
    monkeypatch.setenv("S3_REGION", settings.s3_region or "")
    monkeypatch.setenv("S3_ACCESS_KEY", settings.s3_access_key or "")
    monkeypatch.setenv("S3_SECRET_KEY", settings.s3_secret_key or "")
    monkeypatch.setenv("LAKE_CATALOG_URI", settings.catalog_uri or "")


# --- running the documented lines -----------------------------------------------------------


def run_reader(line: ReaderLine, given: str, column: str) -> tuple[pl.DataFrame, bool]:
    """Run `line` after its set-up on one table (`given`: its folder or identifier); the rows
    as a Polars frame of the partition column, `date`, `hour` and `KEY`, and whether the reader
    typed the partition column as a string itself."""
    namespace: dict[str, object] = {GIVEN[line.kind]: given, "column": column}
    for statement in line.setup:
        exec(compile(ast.Module([statement], []), "docs/readers.md", "exec"), namespace)
    result = eval(compile(ast.Expression(line.line.value), "docs/readers.md", "eval"), namespace)
    return as_frame(result, column)


def as_frame(result: object, column: str) -> tuple[pl.DataFrame, bool]:
    """A reader's result as a Polars frame of the partition column, `date`, `hour` and `KEY`,
    and whether the reader typed the partition column as a string."""
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


def tables_read_by(line: ReaderLine, expected: Expected) -> dict[str, tuple[str, pl.DataFrame]]:
    """The tables of `expected` a line of its kind reads: Bronze folders, or Silver and Gold."""
    bronze = line.kind == "hive"
    return {
        folder: table
        for folder, table in expected.items()
        if folder.startswith("bronze/") == bronze
    }


@pytest.mark.parametrize("line", LOCAL_LINES, ids=line_id)
def test_reader_on_local_disk(
    line: ReaderLine,
    local_lake: tuple[Path, LakeStore, Expected],
    monkeypatch: pytest.MonkeyPatch,
):
    folder, store, expected = local_lake
    monkeypatch.chdir(folder)
    tables = tables_read_by(line, expected)
    assert len(tables) == (7 if line.kind == "hive" else 10)  # 6 Silver, 4 hourly Gold
    for path, (column, rows) in tables.items():
        given = store.full_path(path) if line.kind == "hive" else table_identifier(path)
        assert_reads_exactly(*run_reader(line, given, column), column, rows)


@pytest.mark.slow
@pytest.mark.parametrize("line", S3_LINES, ids=line_id)
def test_reader_on_s3(line: ReaderLine, s3_lake: tuple[LakeSettings, Expected], s3_environment):
    settings, expected = s3_lake
    for path, (column, rows) in tables_read_by(line, expected).items():
        given = f"{settings.data_root}/{path}" if line.kind == "hive" else table_identifier(path)
        assert_reads_exactly(*run_reader(line, given, column), column, rows)


def test_plain_pandas_and_pyarrow_read_folders_without_the_partition_column(
    local_lake: tuple[Path, LakeStore, Expected],
):
    """The lines that once failed, as users type them, on folders whose files lack the
    partition column (the rebuilt tiers here, each hour committed once): every row is read;
    values are typed by inference (categoricals)."""
    _, store, expected = local_lake
    for folder, (column, rows) in expected.items():
        if folder.startswith("bronze/"):
            continue  # half its folders hold files of the old layout
        table_dir = store.full_path(folder)
        frame = pd.read_parquet(table_dir)
        assert sorted(frame[column].astype(str)) == sorted(rows[column])
        assert ds.dataset(table_dir, partitioning="hive").count_rows() == rows.height


# --- the documented warning, and time travel ------------------------------------------------


def test_a_glob_over_a_rebuilt_silver_hour_reads_old_versions_and_time_travel_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """An hour of Silver trades is rebuilt after late Bronze arrived. The documented Polars
    Bronze line, pointed at the Silver folder, reads both versions; the documented catalog
    line reads the current one exactly; the time-travel block reads the first one."""
    store = LakeStore(str(tmp_path / LAKE_FOLDER), fsspec.filesystem("file"))
    silver = SILVER_TABLES[TRADES.table]
    first, late = trades(40), trades(10, seed=8)
    write_bronze(store, TRADES, bronze_rows(TRADES, first))
    rebuild_hour(tables_of(store), silver, HOUR)
    write_bronze(store, TRADES, bronze_rows(TRADES, late, first_seq=1_000))
    rebuild_hour(tables_of(store), silver, HOUR)
    monkeypatch.chdir(tmp_path)
    glob = line_of(LOCAL_LINES, "hive", "polars")
    catalog = line_of(LOCAL_LINES, "catalog", "polars")
    globbed, _ = run_reader(glob, store.full_path(silver.target), "symbol")
    current, _ = run_reader(catalog, table_identifier(silver.target), "symbol")
    first_rows = deduplicate(bronze_rows(TRADES, first)).height
    now_rows = deduplicate(bronze_rows(TRADES, first + late)).height
    assert (first_rows, now_rows) == (40, 50)
    assert current.height == now_rows
    assert current["event_id"].n_unique() == now_rows
    assert globbed.height == first_rows + now_rows
    assert globbed["event_id"].n_unique() == now_rows

    values = block_values(time_travel_block())
    (snapshots,) = [value for value in values if isinstance(value, list)]
    hour = HOUR.strftime(HOUR_FORMAT)
    assert [snapshot[2] for snapshot in snapshots] == [hour, hour]
    frames = [
        value for value in values if isinstance(value, pd.DataFrame | pa.Table | pl.LazyFrame)
    ]
    assert len(frames) == 3
    for frame in frames:
        rows, _ = as_frame(frame, "symbol")
        assert rows.height == first_rows


def line_of(lines: list[ReaderLine], kind: str, reader: str) -> ReaderLine:
    (line,) = [line for line in lines if (line.kind, line.reader) == (kind, reader)]
    return line


def time_travel_block() -> Block:
    (block,) = [
        block
        for block in fenced_blocks(READERS_DOC.read_text(), "docs/readers.md")
        if block.language == "python" and "snapshot_by_name(" in block.code
    ]
    return block


def block_values(block: Block) -> list[object]:
    """Run `block` statement by statement; the value of each expression statement."""
    namespace: dict[str, object] = {}
    values = []
    for statement in ast.parse(block.code).body:
        if isinstance(statement, ast.Expr):
            code = compile(ast.Expression(statement.value), block.name, "eval")
            values.append(eval(code, namespace))
        else:
            exec(compile(ast.Module([statement], []), block.name, "exec"), namespace)
    return values
