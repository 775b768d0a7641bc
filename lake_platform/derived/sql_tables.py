"""The SQL Gold tables: Gold tables written as one DuckDB query over a view of their input.

A SQL Gold table is a `.sql` file in `lake_platform/derived/sql/` and one `sql_gold_table`
entry in `SQL_GOLD_TABLES`; its daily asset, checks and Iceberg table follow from them
(`defs/gold/sql_assets.py`, `derived/sql_rebuild.py`). The file's leading comment is the
table's description (its first paragraph) and the meaning of its columns (`-- name: meaning`
lines) where the shared descriptions of `schemas/columns.py` do not fit; its query reads the
day's rows of the input as the view the declaration names (the input's partition column
included, exactly as published) and returns the table's columns. Its output schema is the
query's result over an empty input, so the query's casts are the declared types (DuckDB sums
integers as 128-bit: cast them).

**Daily, stored like the hourly Gold tables.** A SQL Gold table is partitioned by UTC day and
by its input's partition column. A day's files live in the day's `hour=00` folder
(`symbol=SPY/date=2025-12-16/hour=00/part-00000-<16 hex>.parquet`) and each row's
`ts_event_ns` is the start of its day, so the table has the hourly tables' layout, Iceberg
partition spec and catalog entry, and a day is replaced in one commit by the hourly tables'
`tables.hours.replace_hour` of the day's first hour (whose conflict predicate, hour 00 and its
`ts_event_ns` range, holds every row of the day).
"""

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from itertools import takewhile
from pathlib import Path
from typing import Final

import duckdb
import polars as pl

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.derived.declaration import DerivedTable, FileCheck, Reconciliation
from lake_platform.derived.tables import DERIVED_TABLES
from lake_platform.schemas.registry import partition_column_last

SQL_FOLDER = Path(__file__).parent / "sql"
DAY_NS = 86_400 * 10**9
TIME_COLUMN = "ts_event_ns"
DAY = "day"
WITHIN_PARTITION_DAY: Final = "within_partition_day"
EVENT_ID_MACRO = """
create or replace temp macro lake_event_id(ts_event_ns, key) as md5(
    coalesce(cast(ts_event_ns as varchar), '~') || '|'
    || coalesce(cast(strlen(key) as varchar) || ':' || key, '~')
)
"""
"""`lake_event_id(ts_event_ns, key)`: the `event_id` of an (int64, string) pair, as
`schemas/event_id.py` encodes it (version 1: tokens joined by `|`, a string as
`{utf8 byte length}:{value}`, null as `~`, MD5 as 32 lowercase hex), so a daily row's id is
made like a bar's of its minute (`transforms/gold.bars_1m`)."""


def run_query(
    sql: str,
    view: str,
    order: tuple[str, ...],
    rows: pl.DataFrame,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> pl.DataFrame:
    """The result of `sql` over `rows` as the view `view`, in DuckDB (`connection`, or an
    in-memory database of its own).

    Deterministic: the rows are put in `order` before DuckDB sees them and the connection
    runs on one thread, so floating sums add in the same order on every run (DuckDB's
    parallel aggregation would not; a day of bars is small). `lake_event_id` is defined.
    """
    own = connection is None
    connection = duckdb.connect(":memory:") if connection is None else connection
    try:
        connection.execute("set threads to 1")
        connection.execute(EVENT_ID_MACRO)
        connection.register(view, rows.sort(order).to_arrow())
        try:
            return connection.sql(sql).pl()
        finally:
            connection.unregister(view)
    finally:
        if own:
            connection.close()


def sql_header(sql: str, path: Path) -> tuple[str, dict[str, str]]:
    """The description and the column meanings of a `.sql` file's leading comment: its first
    paragraph, then one `-- column: meaning` line per column described."""
    lines = [line.removeprefix("--").strip() for line in takewhile(_is_comment, sql.splitlines())]
    blank = lines.index("") if "" in lines else len(lines)
    description = " ".join(lines[:blank])
    if not description:
        raise ValueError(f"{path}: the first comment lines must describe the table")
    docs = {}
    for line in filter(None, lines[blank + 1 :]):
        name, colon, meaning = line.partition(":")
        if not colon or not name.isidentifier() or not meaning.strip():
            raise ValueError(f"{path}: {line!r} is not a `-- column: meaning` line")
        docs[name] = meaning.strip()
    return description, docs


def _is_comment(line: str) -> bool:
    return line.startswith("--")


def equal_sums(column: str) -> Reconciliation:
    """The table's `column` summed per partition value equals the input's `column` summed over
    the day's input rows of that value."""
    return Reconciliation(f"sum of {column}", pl.col(column).sum(), pl.col(column).sum())


@dataclass(frozen=True, kw_only=True)
class SqlGoldTable(DerivedTable):
    """A daily Gold table defined by a `.sql` file (see the module): its input (`source`, an
    hourly Silver or Gold table, read through the catalog), its query (`transform`:
    `run_query` of the file over the view `view`), its schema (the query's), its partition
    column (its input's), order, unique keys and reconciliations.

    Its checks are the hourly tables' with a day for an hour: order, uniqueness of its keys
    with `ts_event_ns` taken as its UTC day (`symbol_day_unique`), every row in the
    partition's day, schema, ZSTD, then each reconciliation compared per partition value
    with the day's input rows (`volume_matches_bars`).
    """

    description: str
    sql: str
    sql_path: Path
    view: str
    input_order: tuple[str, ...]
    """The order the input rows are put in before the query sees them (`run_query`)."""

    @property
    def inputs(self) -> tuple[str, ...]:
        """The lake paths of the tables it is derived from: its upstream assets."""
        return (self.source,)

    def query(
        self, rows: pl.DataFrame, connection: duckdb.DuckDBPyConnection | None = None
    ) -> pl.DataFrame:
        """The table's rows from the input's `rows`, by its query in `connection`."""
        return run_query(self.sql, self.view, self.input_order, rows, connection)

    @property
    def unique_check(self) -> str:
        """Name of the uniqueness check: its keys, `ts_event_ns` named as the day it is in."""
        return f"{'_'.join(self._day_keys)}_unique"

    @property
    def check_names(self) -> tuple[str, ...]:
        """Check names: order, uniqueness, day bounds, schema, ZSTD, then reconciliations."""
        return (
            self.sorted_check,
            self.unique_check,
            WITHIN_PARTITION_DAY,
            checks.MATCHES_DECLARED_SCHEMA,
            checks.ZSTD_COMPRESSED,
            *self.reconciliations,
        )

    def row_checks(self) -> dict[str, FileCheck]:
        """Every check of rows (of one file, or of one partition value's day), by name; the
        datetime they get is the day's start."""
        return {
            self.sorted_check: lambda frame, path, _: checks.sorted_by(frame, self.order, path),
            self.unique_check: lambda frame, path, _: checks.unique(
                frame.with_columns(_day_of(pl.col(TIME_COLUMN))), self._day_keys, path
            ),
            WITHIN_PARTITION_DAY: within_day,
        }

    @property
    def _day_keys(self) -> tuple[str, ...]:
        return tuple(DAY if key == TIME_COLUMN else key for key in self.unique_keys)

    def check_descriptions(self) -> dict[str, str]:
        """What each check verifies over one day, by check name (the UI's text)."""
        value = self.partition_column
        keys = ", ".join("its UTC day" if key == TIME_COLUMN else key for key in self.unique_keys)
        descriptions = {
            self.sorted_check: (
                f"Each {value}'s files of the day are sorted by ({', '.join(self.order)}): "
                "within every file and across its files in name order."
            ),
            self.unique_check: f"No ({keys}) appears twice among the day's rows.",
            WITHIN_PARTITION_DAY: "Every row's ts_event_ns lies in the partition's UTC day.",
            checks.MATCHES_DECLARED_SCHEMA: (
                f"Every file's columns and types, with {value} from its folder last, are exactly "
                "the declared ones (the query's), in order."
            ),
            checks.ZSTD_COMPRESSED: (
                "Every column chunk of every file of the day is ZSTD-compressed."
            ),
            **{
                name: (
                    f"Per {value}, the day's {r.what} equals the {r.what} of the day's rows of "
                    f"{self.source} its rebuild read (read again with Polars, not by the query)."
                )
                for name, r in self.reconciliations.items()
            },
        }
        return {name: descriptions[name] for name in self.check_names}


def _day_of(ts_event_ns: pl.Expr) -> pl.Expr:
    """The UTC date of a `ts_event_ns`, as the column `day`."""
    return (ts_event_ns // DAY_NS).cast(pl.Int32).cast(pl.Date).alias(DAY)


def within_day(frame: pl.DataFrame, path: str, day: dt.datetime) -> CheckOutcome:
    """Every `ts_event_ns` lies in `[day, day + 1 day)`."""
    start = int(day.timestamp()) * 10**9
    outside = frame.select(
        (~pl.col(TIME_COLUMN).is_between(start, start + DAY_NS, closed="left")).alias("o")
    ).get_column("o")
    if not outside.any():
        return CheckOutcome.ok(f"{path}: every row in {day:%Y-%m-%d} UTC")
    row = int(outside.arg_true()[0])
    return CheckOutcome(
        False,
        f"{path}: row {row} has ts_event_ns {frame[TIME_COLUMN][row]} outside "
        f"[{start}, {start + DAY_NS})",
    )


def sql_gold_table(
    target: str,
    sql_file: str | Path,
    *,
    source: str,
    view: str,
    reconciliations: Mapping[str, Reconciliation] | None = None,
    order: tuple[str, ...] = (TIME_COLUMN, "event_id"),
    unique_keys: tuple[str, ...] | None = None,
) -> SqlGoldTable:
    """The SQL Gold table at lake path `target` defined by `sql_file` (in `SQL_FOLDER` unless
    absolute) over the view `view` of the hourly table `source`.

    Its unique keys default to (partition column, `ts_event_ns`): one row per partition value
    and day. A query whose result lacks the partition column, `ts_event_ns` or a key, or a
    comment describing a column the result lacks, is refused here, at import.
    """
    path = SQL_FOLDER / sql_file
    sql = path.read_text(encoding="utf-8")
    description, column_docs = sql_header(sql, path)
    hourly = {table.target: table for table in DERIVED_TABLES}
    if source not in hourly:
        raise ValueError(f"{target}: no hourly table {source!r}; known: {', '.join(hourly)}")
    input_table = hourly[source]
    column = input_table.partition_column
    query = partial(run_query, sql, view, (column, *input_table.order))
    output = query(pl.DataFrame(schema=input_table.schema)).schema
    keys = unique_keys or (column, TIME_COLUMN)
    missing = [name for name in (column, TIME_COLUMN, *order, *keys) if name not in output]
    undescribed = [name for name in column_docs if name not in output]
    if missing or undescribed:
        raise ValueError(
            f"{path}: the query returns no {sorted(set(missing))} column"
            if missing
            else f"{path}: the comment describes {undescribed}, which the query does not return"
        )
    return SqlGoldTable(
        description=description,
        sql=sql,
        sql_path=path,
        view=view,
        input_order=(column, *input_table.order),
        source=source,
        target=target,
        partition_column=column,
        source_columns=tuple(name for name in input_table.schema if name != column),
        transform=query,
        schema=partition_column_last(output, column),
        order=order,
        unique_keys=keys,
        reconciliations=dict(reconciliations or {}),
        column_docs=column_docs,
    )


SQL_GOLD_TABLES: tuple[SqlGoldTable, ...] = (
    sql_gold_table(
        "gold/stocks/daily_summary",
        "daily_summary.sql",
        source="gold/stocks/bars_1m",
        view="bars",
        reconciliations={"volume_matches_bars": equal_sums("volume")},
    ),
)
"""Every SQL Gold table, one entry each, in the order the UI lists them."""
