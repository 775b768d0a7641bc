"""A benchmark lake with its Iceberg catalog: Silver hours committed as the Silver rebuild
leaves them, and a derived table emptied before each timed rebuild.

For the benchmarks that time a derived rebuild over Silver inputs (`asof.py`; `gold.py`'s
`write_silver_trades` is `commit_silver_hour` of one value). Silver is read through the
catalog (the files of a pinned snapshot), so inputs written without a commit are not inputs.
"""

import datetime as dt
import shutil
from pathlib import Path

import fsspec
import polars as pl
from pyiceberg.table import Table

from lake_platform.derived.declaration import DerivedTable
from lake_platform.derived.partition_files import write_partition
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.schemas.event_id import event_id
from lake_platform.schemas.registry import TableSchema
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import partition_folder
from lake_platform.tables.data_files import NewFile
from lake_platform.tables.hours import replace_hour
from lake_platform.tables.identifiers import ICEBERG_FOLDER, table_identifier
from lake_platform.tables.lake_tables import LakeTables
from lake_platform.transforms.silver import SILVER_ORDER
from lake_platform_tests.tables_of import tables_of


def store_at(lake: Path) -> LakeStore:
    """The store of a lake on local disk (its catalog: `tables_of(store)`)."""
    return LakeStore(str(lake), fsspec.filesystem("file"))


def commit_silver_hour(
    store: LakeStore, schema: TableSchema, rows: pl.DataFrame, hour: dt.datetime
) -> int:
    """`rows` (the table's stored columns but `event_id`, which is computed here, with the
    partition column) as the Silver hour of `schema`'s table: one value-hour per partition
    value, in Silver order, written by `write_partition` (content-named ZSTD files, as the
    Silver rebuild writes them) and committed in one `replace_hour`. Rows written."""
    stored = schema.stored_schema
    column = schema.partition_column
    silver = rows.select(
        [pl.col(name).cast(dtype) for name, dtype in stored.items() if name != "event_id"]
    ).with_columns(event_id(stored))
    base = f"silver/{schema.table}"
    written = []
    for (value,), part in silver.partition_by(column, as_dict=True).items():
        folder = f"{base}/{partition_folder(column, str(value), hour)}"
        written.extend(write_partition(store, folder, part.sort(SILVER_ORDER).drop(column)))
    table = tables_of(store).table(SILVER_TABLES[schema.table])
    replace_hour(table, hour, [NewFile(file.path, file.bytes) for file in written], {})
    return silver.height


def fresh_table(tables: LakeTables, table: DerivedTable) -> Table:
    """`table` dropped from the catalog with its data and metadata files, then created empty
    (before `tables` loaded it: a table it holds is not reloaded).

    Each timed rebuild then writes and commits its hour as a first build does: rebuilt over a
    committed hour whose files were only deleted from disk, the same content-named files
    would be written again and the commit would find the hour unchanged (no commit timed)."""
    identifier = table_identifier(table.target)
    if tables.catalog.table_exists(identifier):
        tables.catalog.drop_table(identifier)
    root = Path(tables.store.root)
    for folder in (root / table.target, root / ICEBERG_FOLDER / table.target):
        shutil.rmtree(folder, ignore_errors=True)
    return tables.table(table)
