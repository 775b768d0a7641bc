"""`lake-platform sql`: a SQL query over the lake in an in-process DuckDB.

Every table is a view `{tier}.{table}` (`query/views.py`); only the views the query names are
made (a Silver/Gold view costs its snapshot's scan planning, a Bronze view the listing of its
folders), each Silver/Gold one pinned to one snapshot for the whole query: the current one,
or the one current at `--as-of`. `--tables` lists every view with its row count and snapshot.

Output (`query/output.py`): an aligned table on a terminal, CSV in a pipe; `--format` and
`--output` choose. Every failure (SQL, an unknown table, a bad `--as-of`) is one line.
"""

import difflib
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from lake_platform.query.output import chosen_format, write_result
from lake_platform.query.views import (
    TableView,
    create_views,
    lake_views,
    quoted,
    referenced_views,
    view_names,
)
from lake_platform.settings import LakeSettings
from lake_platform.tables.lake_tables import open_lake_tables
from lake_platform.tables.time_travel import parse_as_of

STDIN = "-"
MISSING_TABLE = re.compile(r"Table with name (\S+) does not exist")


class QueryError(ValueError):
    """DuckDB refused or failed the query (its first line, for the CLI)."""


@dataclass(frozen=True)
class SqlRequest:
    """What `lake-platform sql` was asked."""

    query: str | None
    file: str | None
    tables: bool
    as_of: str | None
    fmt: str | None
    output: str | None
    limit: int


def run_sql(request: SqlRequest) -> int:
    """Run the query (or list the tables) and print the result; 0 when it ran."""
    if request.as_of is not None:
        parse_as_of(request.as_of)
    settings = LakeSettings.from_env()
    fmt = chosen_format(request.fmt, request.output, sys.stdout.isatty())
    connection = duckdb.connect()
    try:
        if request.tables:
            relation = _tables(connection, settings, request.as_of)
        else:
            sql = _query_text(request)
            add_views(connection, settings, referenced_views(sql), request.as_of)
            relation = connection.sql(sql)
        if relation is not None:
            write_result(connection, relation, fmt, request.output, request.limit)
    except duckdb.Error as error:
        raise QueryError(one_line(error)) from None
    finally:
        connection.close()
    return 0


def _query_text(request: SqlRequest) -> str:
    given = [request.query is not None, request.file is not None]
    if sum(given) != 1:
        raise ValueError("give one query: SQL text, - (standard input), or --file FILE")
    if request.file is not None:
        with open(request.file, encoding="utf-8") as handle:
            sql = handle.read()
    elif request.query == STDIN:
        sql = sys.stdin.read()
    else:
        sql = request.query or ""
    if not sql.strip():
        raise ValueError("the query is empty")
    return sql


def add_views(
    connection: duckdb.DuckDBPyConnection,
    settings: LakeSettings,
    names: Collection[str] | None,
    as_of: str | None = None,
) -> list[TableView]:
    """The views named (all when None; pinned as of `as_of`) in the connection, for this
    connection only, and the schemas of every tier; the lake's catalog is opened only when
    some view is wanted."""
    views = (
        []
        if names is not None and not names
        else lake_views(open_lake_tables(settings), as_of, only=names)
    )
    create_views(connection, views, settings, session_only=True)
    return views


def _tables(
    connection: duckdb.DuckDBPyConnection, settings: LakeSettings, as_of: str | None
) -> duckdb.DuckDBPyRelation:
    """Every view: its rows (the catalog's count of Silver/Gold, counted for Bronze), its
    snapshot and files."""
    views = add_views(connection, settings, None, as_of)
    rows = []
    for view in views:
        count = view.rows
        if count is None:
            name = f"{quoted(view.schema_name)}.{quoted(view.table_name)}"
            ((count,),) = connection.execute(f"SELECT count(*) FROM {name}").fetchall()
        rows.append((view.name, count, view.snapshot_id, view.target))
    listing = pa.table(
        {
            "view": [row[0] for row in rows],
            "rows": pa.array([row[1] for row in rows], pa.int64()),
            "snapshot_id": pa.array([row[2] for row in rows], pa.int64()),
            "path": [row[3] for row in rows],
        }
    )
    return connection.from_arrow(listing)


def one_line(error: duckdb.Error) -> str:
    """DuckDB's message in one line; for a missing table, the views it may have meant."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    first = lines[0] if lines else type(error).__name__
    missing = MISSING_TABLE.search(first)
    if missing is None:
        return first
    known = view_names()
    by_table: dict[str, list[str]] = {}
    for name in known:  # `stocks_trades`: bronze.stocks_trades, silver.stocks_trades
        by_table.setdefault(name.split(".", 1)[1], []).append(name)
    wanted = missing.group(1).strip('"')
    close = difflib.get_close_matches(wanted, [*known, *by_table], n=1)
    guesses = sorted(by_table.get(close[0], close)) if close else []
    hint = f"; did you mean {' or '.join(guesses)}?" if guesses else ""
    return f"{first.rstrip('!')}{hint} (lake-platform sql --tables lists the tables)"
