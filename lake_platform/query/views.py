"""Every table of the lake as a DuckDB view named `{tier}.{table}`, each Silver/Gold view
pinned to one snapshot.

`lake_views` decides what each view reads: a Bronze table its Hive folders (one glob; Bronze
is append-only, so a glob reads exactly what was published), a Silver or Gold table the data
files of ONE snapshot, listed by the catalog (a glob over its folder would also read the
older versions of rebuilt hours). `create_views` makes the views in a DuckDB connection over
`read_parquet(..., hive_partitioning = true, hive_types = ...)`: the partition column read
as a string from the (Hive-escaped) folder name, exactly as published (`0700`, `A/B`), `date`
as a date and `hour` as an integer. A query over the views sees each table as of its pinned
snapshot for its whole run, whatever commits meanwhile.

Each view selects its columns by name in the declared order (files' columns, then the
partition column, `date`, `hour`), so old-layout Bronze files (the partition column inside)
and new ones read alike; a table with no files is an empty view of the same columns and
types. On S3, DuckDB reads through the lake's own fsspec filesystem (its `httpfs` extension
cannot be installed offline), registered with the lake's credentials.
"""

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import duckdb
import polars as pl

from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.query.planning import planned_files
from lake_platform.schemas import SCHEMAS
from lake_platform.settings import LakeSettings
from lake_platform.tables.catalog import root_url
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.tables.schema import DATE_COLUMN, HOUR_COLUMN
from lake_platform.tables.time_travel import snapshot_as_of

TIERS = ("bronze", "silver", "gold")
BRONZE_TIER = "bronze"
FOLDER_TYPES = {DATE_COLUMN: "DATE", HOUR_COLUMN: "INTEGER"}
"""DuckDB types of the folder-only columns besides the partition column (a VARCHAR)."""
PARQUET_GLOB = "**/*.parquet"
NO_FILES = "No files found"
"""How DuckDB says that a glob matched no file."""
_SCALAR_SQL_TYPES: dict[type[pl.DataType], str] = {
    pl.Boolean: "BOOLEAN",
    pl.Int8: "TINYINT",
    pl.Int16: "SMALLINT",
    pl.Int32: "INTEGER",
    pl.Int64: "BIGINT",
    pl.UInt8: "UTINYINT",
    pl.UInt16: "USMALLINT",
    pl.UInt32: "UINTEGER",
    pl.UInt64: "UBIGINT",
    pl.Float32: "FLOAT",
    pl.Float64: "DOUBLE",
    pl.String: "VARCHAR",
    pl.Binary: "BLOB",
    pl.Date: "DATE",
}


@dataclass(frozen=True)
class TableView:
    """One table as a view: its name (`silver.stocks_trades`), tier, lake path (`target`),
    the snapshot it is pinned to (None for Bronze, or a table with no snapshot), the files
    DuckDB reads (full paths or URLs; a Bronze table's one glob over its folder, empty when
    the folder has no value folder yet), and its columns with their DuckDB types in view
    order."""

    name: str
    tier: str
    target: str
    partition_column: str
    snapshot_id: int | None
    files: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    rows: int | None = None
    """The pinned snapshot's row count (from the catalog); None for Bronze."""

    @property
    def schema_name(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def table_name(self) -> str:
        return self.name.split(".", 1)[1]

    @property
    def is_globbed(self) -> bool:
        """Whether `files` is a glob over Hive folders (Bronze) rather than a file list."""
        return self.tier == BRONZE_TIER


def view_names() -> list[str]:
    """Every view's name, Bronze then Silver then Gold, without opening the lake."""
    bronze = [table_identifier(f"{BRONZE_TIER}/{schema.table}") for schema in SCHEMAS]
    return bronze + [table_identifier(table.target) for table in CATALOG_TABLES]


def referenced_views(sql: str) -> set[str]:
    """The view names `sql` may read (`silver.stocks_trades`, quoted or not, any case): a
    superset is harmless (one view more), so a plain pattern over the text does."""
    known = set(view_names())
    pattern = r'"?\b(bronze|silver|gold)"?\s*\.\s*"?([A-Za-z0-9_]+)\b"?'
    found = {f"{tier}.{name}".lower() for tier, name in re.findall(pattern, sql, re.IGNORECASE)}
    return found & known


def lake_views(
    tables: LakeTables, as_of: str | None = None, only: Collection[str] | None = None
) -> list[TableView]:
    """Every table of the lake (or those named in `only`) as a `TableView`: Bronze over its
    Hive folders, each Silver/Gold table pinned to its current snapshot or, with `as_of`
    (a tag, snapshot id or time), to `snapshot_as_of` (an `AsOfError` when a table has none
    then; a table not in the catalog yet is empty). Bronze is append-only and read as it is
    now, whatever `as_of`."""
    root = root_url(tables.settings)
    views = [
        _bronze_view(tables, root, schema.table, schema.partition_column, schema.bronze_schema)
        for schema in SCHEMAS
        if only is None or table_identifier(f"{BRONZE_TIER}/{schema.table}") in only
    ]
    for derived in CATALOG_TABLES:
        name = table_identifier(derived.target)
        if only is not None and name not in only:
            continue
        iceberg = tables.existing(derived.target)
        snapshot = None
        if iceberg is not None:
            snapshot = (
                iceberg.current_snapshot() if as_of is None else snapshot_as_of(iceberg, as_of)
            )
        snapshot_id = None if snapshot is None else snapshot.snapshot_id
        planned = [] if iceberg is None else planned_files(iceberg, snapshot_id)
        views.append(
            TableView(
                name=name,
                tier=derived.target.split("/", 1)[0],
                target=derived.target,
                partition_column=derived.partition_column,
                snapshot_id=snapshot_id,
                files=tuple(file.path for file in planned),
                columns=view_columns(derived.schema, derived.partition_column),
                rows=sum(file.rows for file in planned),
            )
        )
    return views


def _bronze_view(
    tables: LakeTables, root: str, table: str, column: str, schema: pl.Schema
) -> TableView:
    target = f"{BRONZE_TIER}/{table}"
    has_values = bool(tables.store.list_folders(target))
    return TableView(
        name=table_identifier(target),
        tier=BRONZE_TIER,
        target=target,
        partition_column=column,
        snapshot_id=None,
        files=(f"{root}/{target}/{PARQUET_GLOB}",) if has_values else (),
        columns=view_columns(schema, column),
    )


def view_columns(schema: pl.Schema, partition_column: str) -> tuple[tuple[str, str], ...]:
    """(name, DuckDB type) of a view: the files' columns in declared order, then the
    partition column (VARCHAR), `date` and `hour`."""
    files = [
        (name, duckdb_type(dtype)) for name, dtype in schema.items() if name != partition_column
    ]
    return (*files, (partition_column, "VARCHAR"), *FOLDER_TYPES.items())


def duckdb_type(dtype: pl.DataType) -> str:
    """The DuckDB SQL type of a Polars type (lists and structs of supported types)."""
    if isinstance(dtype, pl.List):
        return f"{duckdb_type(dtype.inner)}[]"
    if isinstance(dtype, pl.Struct):
        fields = ", ".join(
            f"{quoted(field.name)} {duckdb_type(field.dtype)}" for field in dtype.fields
        )
        return f"STRUCT({fields})"
    found = _SCALAR_SQL_TYPES.get(dtype.base_type())
    if found is None:
        raise TypeError(f"no DuckDB type for Polars {dtype}")
    return found


def quoted(identifier: str) -> str:
    """A DuckDB identifier in double quotes."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def view_sql(view: TableView, files_variable: str | None = None) -> str:
    """The `SELECT` a view is made of (see the module); its file list literal, or the DuckDB
    variable `files_variable` holding it."""
    names = ", ".join(quoted(name) for name, _ in view.columns)
    if not view.files:
        typed = ", ".join(f"CAST(NULL AS {kind}) AS {quoted(name)}" for name, kind in view.columns)
        return f"SELECT {typed} WHERE false"
    hive_types = ", ".join(
        f"{literal(name)}: {kind}"
        for name, kind in ((view.partition_column, "VARCHAR"), *FOLDER_TYPES.items())
    )
    if view.is_globbed:
        sources = literal(view.files[0])
    elif files_variable is not None:
        sources = f"getvariable({literal(files_variable)})"
    else:
        sources = _list(view.files)
    return (
        f"SELECT {names} FROM read_parquet({sources}, hive_partitioning = true, "
        f"hive_types = {{{hive_types}}}, hive_types_autocast = false)"
    )


def _list(files: Sequence[str]) -> str:
    return "[" + ", ".join(literal(file) for file in files) + "]"


def create_views(
    connection: duckdb.DuckDBPyConnection,
    views: Sequence[TableView],
    settings: LakeSettings,
    *,
    session_only: bool = False,
) -> None:
    """`CREATE OR REPLACE VIEW` each of `views` in `connection` (schemas `bronze`, `silver`,
    `gold` created), the lake's S3 filesystem registered first when the lake is on S3.

    A view's SQL holds its file list, so a database file keeps working views. With
    `session_only`, the list is a variable of the connection instead (`SET VARIABLE`, bound
    as a parameter): DuckDB then never parses thousands of path literals (~50 ms for 6,000
    files), but the views work in this connection only."""
    if settings.use_s3:
        register_lake_filesystem(connection, settings)
    for tier in TIERS:
        connection.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted(tier)}")
    for view in views:
        name = f"{quoted(view.schema_name)}.{quoted(view.table_name)}"
        variable = None
        if session_only and view.files and not view.is_globbed:
            variable = f"lake_files_{view.schema_name}_{view.table_name}"
            connection.execute(f"SET VARIABLE {quoted(variable)} = ?", [list(view.files)])
        try:
            connection.execute(f"CREATE OR REPLACE VIEW {name} AS {view_sql(view, variable)}")
        except duckdb.IOException as error:
            if not view.is_globbed or NO_FILES not in str(error):
                raise
            # value folders but no file yet (a first write in flight): nothing to read
            empty = replace(view, files=())
            connection.execute(f"CREATE OR REPLACE VIEW {name} AS {view_sql(empty)}")


def register_lake_filesystem(connection: duckdb.DuckDBPyConnection, settings: LakeSettings) -> None:
    """Let DuckDB read `s3://` through the lake's own s3fs filesystem (endpoint, region,
    credentials of the settings), unless one is registered already."""
    from lake_platform.storage.backends.s3 import s3_filesystem

    filesystem = s3_filesystem(settings)
    if filesystem.protocol[0] not in connection.list_filesystems():
        connection.register_filesystem(filesystem)
