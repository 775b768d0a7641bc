"""A derived table's Iceberg schema, partition spec and table properties, from its declaration.

The schema is the file columns (ids 1..n, in the declared order) then the folder-only columns
(the partition column as a string, `date` as a date, `hour` as an int), then ids of nested
list elements; every field is optional (pyiceberg refuses a required field that a file holds
as optional, and Polars writes optional columns). The spec is identity(value column) ×
identity(date) × identity(hour): the Hive folders, whose values readers get from the
metadata, exactly as published (`0700`, `A/B`).

Our files carry no Iceberg field ids, so the name mapping (`schema.name-mapping.default`) is
what lets any reader find their columns: it is mandatory.
"""

from collections.abc import Iterator

import polars as pl
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema, assign_fresh_schema_ids
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    StringType,
)

from lake_platform.derived.declaration import DerivedTable
from lake_platform.tables.identifiers import metadata_location

DATE_COLUMN = "date"
HOUR_COLUMN = "hour"
FIRST_PARTITION_FIELD_ID = 1000
FORMAT_VERSION = 2
COMMIT_RETRIES = 10
"""Retries of a commit that lost a race for the catalog row (not of a conflict: see `hours`)."""
METADATA_VERSIONS_KEPT = 24
"""Older metadata.json files kept (each commit writes one; older ones are deleted)."""
CREATED_PROPERTY = "lake.created-ms"
"""Table property: when the table was created (ms since the epoch). Files written before it
are never swept as orphans: after a catalog recovery of some dates, the other dates' files
are no snapshot's yet, and must not be deleted (`maintenance.py`)."""
LAKE_PATH_PROPERTY = "lake.path"
"""Table property: the table's path below the lake root (`silver/stocks/trades`)."""

_SCALAR_TYPES: dict[type[pl.DataType], IcebergType] = {
    pl.Boolean: BooleanType(),
    pl.Int8: IntegerType(),
    pl.Int16: IntegerType(),
    pl.Int32: IntegerType(),
    pl.UInt8: IntegerType(),
    pl.UInt16: IntegerType(),
    pl.Int64: LongType(),
    pl.UInt32: LongType(),
    pl.Float32: FloatType(),
    pl.Float64: DoubleType(),
    pl.String: StringType(),
    pl.Binary: BinaryType(),
    pl.Date: DateType(),
}


def iceberg_schema(table: DerivedTable) -> Schema:
    """The table's Iceberg schema, with the ids the catalog gives it (see the module)."""
    next_id = iter(range(1, 1_000_000))
    file_columns = [
        NestedField(next(next_id), name, iceberg_type(dtype, next_id, name), required=False)
        for name, dtype in table.schema.items()
        if name != table.partition_column
    ]
    folder_columns = [
        NestedField(next(next_id), table.partition_column, StringType(), required=False),
        NestedField(next(next_id), DATE_COLUMN, DateType(), required=False),
        NestedField(next(next_id), HOUR_COLUMN, IntegerType(), required=False),
    ]
    taken = {field.name for field in file_columns}
    clashing = taken & {DATE_COLUMN, HOUR_COLUMN, table.partition_column}
    if clashing:
        raise ValueError(f"{table.target}: file columns {sorted(clashing)} are folder columns")
    # The catalog assigns ids breadth-first; doing it here gives the ids it will keep, so the
    # name mapping and the spec below name the same ids as the created table.
    return assign_fresh_schema_ids(Schema(*file_columns, *folder_columns))


def iceberg_type(dtype: pl.DataType, next_id: Iterator[int], name: str) -> IcebergType:
    """The Iceberg type of a Polars column type (lists of any supported type)."""
    if isinstance(dtype, pl.List):
        element = iceberg_type(dtype.inner, next_id, name)
        return ListType(next(next_id), element, element_required=False)
    found = _SCALAR_TYPES.get(dtype.base_type())
    if found is None:
        raise TypeError(f"column {name!r}: no Iceberg type for Polars {dtype}")
    return found


def partition_spec(table: DerivedTable, schema: Schema) -> PartitionSpec:
    """identity(partition column) × identity(date) × identity(hour)."""
    names = (table.partition_column, DATE_COLUMN, HOUR_COLUMN)
    return PartitionSpec(
        *(
            PartitionField(
                source_id=schema.find_field(name).field_id,
                field_id=FIRST_PARTITION_FIELD_ID + offset,
                transform=IdentityTransform(),
                name=name,
            )
            for offset, name in enumerate(names)
        )
    )


def table_properties(table: DerivedTable, schema: Schema, root_url: str) -> dict[str, str]:
    """Name mapping, metadata folder outside the Hive tree, commit retries, bounded
    metadata.json files, and the table's lake path."""
    return {
        "schema.name-mapping.default": schema.name_mapping.model_dump_json(),
        "write.metadata.path": metadata_location(root_url, table.target),
        "write.metadata.delete-after-commit.enabled": "true",
        "write.metadata.previous-versions-max": str(METADATA_VERSIONS_KEPT),
        "commit.retry.num-retries": str(COMMIT_RETRIES),
        "format-version": str(FORMAT_VERSION),
        LAKE_PATH_PROPERTY: table.target,
    }
