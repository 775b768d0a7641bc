"""What the Dagster UI shows of each table besides its data: columns, location, owner, code.

Every value comes from the registry (`schemas/registry.py`, `schemas/columns.py`) and the
derived tables' declarations, so the UI cannot drift from what is stored. The counts of each
materialization (`dagster/row_count`, `dagster/size_bytes`) are per hour: see
`defs/reporting.py`.
"""

import inspect
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import dagster as dg
import polars as pl

from lake_platform.schemas.columns import describe_columns
from lake_platform.settings import LakeSettings

OWNERS = ["team:data-platform"]
"""Who answers for every table (the UI's owner; a team, as Dagster spells it)."""


def column_schema(
    table: str, schema: pl.Schema, own: Mapping[str, str] | None = None
) -> dg.TableSchema:
    """The columns of the table at lake path `table`, in stored order, with Polars types and
    their one-line descriptions (`own`: the table's own meanings; the partition column, read
    from the folder, last)."""
    descriptions = describe_columns(table, schema.names(), own)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name=name, type=str(dtype), description=descriptions[name])
            for name, dtype in schema.items()
        ]
    )


def table_uri(table: str, settings: LakeSettings) -> str:
    """Where the table's files are: `s3://bucket/prefix/{table}` or a `file://` URI."""
    root = settings.data_root.rstrip("/")
    if root.startswith("s3://"):
        return f"{root}/{table}"
    return (Path(root).expanduser().resolve() / table).as_uri()


def code_reference(function: Callable[..., object], label: str) -> dg.LocalFileCodeReference:
    """The file and first line of `function`, shown as a link in the UI ("Open {label} in
    editor": keep the label to a word or two)."""
    return dg.LocalFileCodeReference(
        file_path=str(inspect.getsourcefile(function)),
        line_number=inspect.getsourcelines(function)[1],
        label=label,
    )


def table_metadata(
    table: str,
    schema: pl.Schema,
    partition_column: str,
    code: Sequence[dg.LocalFileCodeReference],
    settings: LakeSettings | None = None,
    column_docs: Mapping[str, str] | None = None,
) -> Mapping[str, object]:
    """Definition metadata of the asset of the table at lake path `table`: its column
    schema, its location, how it is partitioned, and the code that writes it."""
    settings = settings or LakeSettings.from_env()
    return {
        "dagster/column_schema": column_schema(table, schema, column_docs),
        "dagster/table_name": table,
        "dagster/uri": table_uri(table, settings),
        "partition_column": partition_column,
        "dagster/code_references": dg.CodeReferencesMetadataValue(code_references=list(code)),
    }
