"""How `lake-platform sql` prints a result: an aligned table for a person, CSV, JSON lines or
Parquet for a program.

The table shows the first `limit` rows (streamed: the rest are counted, never held) and says
how many more there were. The file formats are DuckDB's own writers (`COPY … TO`), which
write nested values (lists, structs) as every DuckDB user knows them; to standard output they
go through a temporary file, so a redirect (`>>` included) gets exactly the bytes a file
would.
"""

import datetime as dt
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from typing import BinaryIO, TextIO

import duckdb
import pyarrow as pa

from lake_platform.query.views import literal

FORMATS = ("table", "csv", "json", "parquet")
COPY_OPTIONS = {
    "csv": "FORMAT csv, HEADER true",
    "json": "FORMAT json",
    "parquet": "FORMAT parquet, COMPRESSION zstd",
}
EXTENSIONS = {".csv": "csv", ".json": "json", ".jsonl": "json", ".ndjson": "json"}
EXTENSIONS |= {".parquet": "parquet", ".pq": "parquet"}
MAX_CELL = 40
"""Characters of a cell shown in the table (longer ones end with `…`)."""
NULL = "NULL"
RESULT_VIEW = "lake_sql_result"
BATCH_ROWS = 8_192


def chosen_format(requested: str | None, output: str | None, is_tty: bool) -> str:
    """The format asked for; else the output file's by its extension (CSV for another
    extension); else the table on a terminal and CSV in a pipe."""
    if requested is not None:
        if requested not in FORMATS:
            raise ValueError(f"--format {requested!r}: one of {', '.join(FORMATS)}")
        return requested
    if output is not None:
        return EXTENSIONS.get(os.path.splitext(output)[1].lower(), "csv")
    return "table" if is_tty else "csv"


def write_result(
    connection: duckdb.DuckDBPyConnection,
    relation: duckdb.DuckDBPyRelation,
    fmt: str,
    output: str | None,
    limit: int,
    stdout: TextIO | None = None,
) -> None:
    """Write the relation's rows in `fmt` to `output` (a file) or standard output; `limit`
    rows of the table (0: all)."""
    stdout = stdout or sys.stdout
    if fmt == "table":
        if output is None:
            write_table(relation, stdout, limit)
            return
        with open(output, "w", encoding="utf-8") as handle:
            write_table(relation, handle, limit)
        return
    if output is not None:
        copy_to(connection, relation, fmt, output)
        return
    if fmt == "parquet" and stdout.isatty():
        raise ValueError("Parquet is binary: give --output FILE (or redirect standard output)")
    with tempfile.TemporaryDirectory(prefix="lake-sql-") as folder:
        path = os.path.join(folder, f"result.{fmt}")
        copy_to(connection, relation, fmt, path)
        stdout.flush()
        with open(path, "rb") as result:
            _copy_bytes(result, stdout)


def _copy_bytes(source: BinaryIO, stdout: TextIO) -> None:
    buffer = getattr(stdout, "buffer", None)
    if buffer is not None:
        shutil.copyfileobj(source, buffer)
        buffer.flush()
    else:
        stdout.write(source.read().decode("utf-8"))


def copy_to(
    connection: duckdb.DuckDBPyConnection, relation: duckdb.DuckDBPyRelation, fmt: str, path: str
) -> None:
    """DuckDB's `COPY` of the relation's rows (run once, now) to `path` in `fmt`."""
    relation.to_view(RESULT_VIEW, replace=True)
    connection.execute(f"COPY {RESULT_VIEW} TO {literal(path)} ({COPY_OPTIONS[fmt]})")


def write_table(relation: duckdb.DuckDBPyRelation, stream: TextIO, limit: int) -> None:
    """The first `limit` rows (all when 0) aligned under their column names, then how many
    rows there were."""
    reader = relation.to_arrow_reader(BATCH_ROWS)
    schema = reader.schema
    shown: list[list[str]] = []
    total = 0
    for batch in reader:
        room = batch.num_rows if limit == 0 else max(0, min(batch.num_rows, limit - len(shown)))
        if room:
            columns = [batch.column(i).slice(0, room).to_pylist() for i in range(batch.num_columns)]
            shown.extend([cell(value) for value in row] for row in zip(*columns, strict=True))
        total += batch.num_rows
    stream.write(aligned(schema.names, shown, [_is_number(field.type) for field in schema]))
    more = total - len(shown)
    if more:
        stream.write(f"… {more:,} more rows ({total:,} in all; --limit N shows N, 0 all)\n")
    else:
        stream.write(f"({total:,} row{'' if total == 1 else 's'})\n")


def aligned(names: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    """Rows under their column names, numbers right-aligned, columns two spaces apart."""
    headers = [cell(name) for name in names]
    widths = [
        max([len(header), *(len(row[i]) for row in rows)]) for i, header in enumerate(headers)
    ]
    lines = [headers, ["-" * width for width in widths], *rows]
    text = []
    for line in lines:
        cells = [
            value.rjust(width) if is_right else value.ljust(width)
            for value, width, is_right in zip(line, widths, right, strict=True)
        ]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text) + "\n"


def cell(value: object) -> str:
    """A value as the table shows it: NULL, ISO dates and times, control characters escaped,
    at most `MAX_CELL` characters."""
    if value is None:
        text = NULL
    elif isinstance(value, dt.date | dt.datetime | dt.time):
        text = value.isoformat()
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
