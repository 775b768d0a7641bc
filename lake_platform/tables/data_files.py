"""A Parquet file the lake wrote, as an Iceberg `DataFile` of its table.

The partition values are given explicitly (`Record(value, days since epoch, hour)`): the
files do not hold the folder columns, and `Table.add_files` would register them as NULL
without a word. Statistics come from the file's footer, so readers and the conflict check
can prune by `ts_event_ns` and the other columns.
"""

import datetime as dt
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table
from pyiceberg.typedef import Record

from lake_platform.storage.paths import folder_partition_value, hour_folder
from lake_platform.tables.schema import LAKE_PATH_PROPERTY

EPOCH = dt.date(1970, 1, 1)
FOOTER_READ_THREADS = 16


@dataclass(frozen=True)
class NewFile:
    """A data file written for an hour: its lake path (`silver/stocks/trades/symbol=SPY/
    date=…/hour=…/part-….parquet`) and, when the writer has them, its size and footer (else
    they are read from storage)."""

    path: str
    size: int | None = None
    footer: pq.FileMetaData | None = None


def lake_path_of(table: Table) -> str:
    """The table's path below the lake root (`silver/stocks/trades`)."""
    return table.metadata.properties[LAKE_PATH_PROPERTY]


def file_uri(table: Table, path: str) -> str:
    """The location of a lake path of the table, as the table's FileIO reads it."""
    prefix = f"{lake_path_of(table)}/"
    if not path.startswith(prefix):
        raise ValueError(f"{path} is not a file of {prefix.rstrip('/')}")
    return f"{table.location().rstrip('/')}/{path.removeprefix(prefix)}"


def lake_path(table: Table, data_file: DataFile) -> str:
    """The lake path of one of the table's data files (the inverse of `file_uri`)."""
    location = f"{table.location().rstrip('/')}/"
    return f"{lake_path_of(table)}/{data_file.file_path.removeprefix(location)}"


def partition_value(table: Table, path: str, hour: dt.datetime) -> str:
    """The partition value of a lake path in the hour's folder of a value (`A/B` for
    `…/symbol=A%2FB/date=…/hour=…/part-….parquet`); any other path is refused."""
    column = table.spec().fields[0].name
    relative = path.removeprefix(f"{lake_path_of(table)}/")
    value_folder, _, rest = relative.partition("/")
    folder, _, name = rest.rpartition("/")
    if not value_folder.startswith(f"{column}=") or folder != hour_folder(hour) or "/" in name:
        raise ValueError(f"{path} is not a file of {hour_folder(hour)} below a {column}= folder")
    return folder_partition_value(value_folder)


def data_files(table: Table, hour: dt.datetime, files: Sequence[NewFile]) -> list[DataFile]:
    """`DataFile`s of the hour's new files, footers read concurrently where not given."""
    if len(files) <= 1:
        return [data_file(table, hour, file) for file in files]
    with ThreadPoolExecutor(min(FOOTER_READ_THREADS, len(files))) as pool:
        return list(pool.map(lambda file: data_file(table, hour, file), files))


def data_file(table: Table, hour: dt.datetime, file: NewFile) -> DataFile:
    """One new file of the hour as a `DataFile` with its partition and footer statistics."""
    value = partition_value(table, file.path, hour)
    uri = file_uri(table, file.path)
    footer, size = file.footer, file.size
    if footer is None or size is None:
        input_file = table.io.new_input(uri)
        size = len(input_file) if size is None else size
        if footer is None:
            with input_file.open() as stream:
                footer = pq.read_metadata(stream)
    metadata = table.metadata
    statistics = data_file_statistics_from_parquet_metadata(
        parquet_metadata=footer,
        stats_columns=compute_statistics_plan(metadata.schema(), metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(metadata.schema()),
    )
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=uri,
        file_format=FileFormat.PARQUET,
        partition=Record(value, (hour.date() - EPOCH).days, hour.hour),
        file_size_in_bytes=size,
        sort_order_id=None,
        spec_id=metadata.default_spec_id,
        equality_ids=None,
        key_metadata=None,
        **statistics.to_serialized_dict(),
    )
