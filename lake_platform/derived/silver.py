"""Rebuilding and checking the Silver files of one table for one UTC hour.

Work is done one partition value (symbol, underlying) at a time, so memory holds at most one
value's hour of Bronze, never the whole hour of a table.
"""

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from lake_platform import checks
from lake_platform.checks import CheckOutcome
from lake_platform.derived.partition_files import (
    WrittenFile,
    read_with_metadata,
    replace_partition,
)
from lake_platform.schemas import TableSchema
from lake_platform.storage import LakeStore
from lake_platform.storage.paths import hour_folder
from lake_platform.transforms.silver import SILVER_ORDER, deduplicate

PREVIEW_ROWS = 5


@dataclass
class HourResult:
    """What rebuilding one hour read and wrote."""

    hour: dt.datetime
    rows_read: int = 0
    rows_written: int = 0
    files: list[WrittenFile] = field(default_factory=list)
    removed_values: list[str] = field(default_factory=list)
    preview: pl.DataFrame | None = None

    @property
    def duplicates_removed(self) -> int:
        return self.rows_read - self.rows_written

    @property
    def bytes(self) -> int:
        return sum(file.bytes for file in self.files)


def bronze_hour_files(
    store: LakeStore, schema: TableSchema, hour: dt.datetime
) -> dict[str, list[str]]:
    """Bronze files of the hour, by partition-value folder (`symbol=SPY`), sorted."""
    base = f"bronze/{schema.table}"
    found = {}
    for value_folder in store.list_folders(base):
        files = store.list_files(f"{base}/{value_folder}/{hour_folder(hour)}")
        if files:
            found[value_folder] = files
    return found


def silver_hour_folders(store: LakeStore, schema: TableSchema, hour: dt.datetime) -> list[str]:
    """Partition-value folders that hold Silver files for the hour."""
    base = f"silver/{schema.table}"
    return [
        value_folder
        for value_folder in store.list_folders(base)
        if store.list_files(f"{base}/{value_folder}/{hour_folder(hour)}")
    ]


def rebuild_silver_hour(store: LakeStore, schema: TableSchema, hour: dt.datetime) -> HourResult:
    """Replace the hour's Silver files with the deduplicated, sorted Bronze rows."""
    result = HourResult(hour)
    inputs = bronze_hour_files(store, schema, hour)
    for value_folder, files in inputs.items():
        bronze = store.read_parquet(files)
        silver = deduplicate(bronze)
        folder = f"silver/{schema.table}/{value_folder}/{hour_folder(hour)}"
        result.files.extend(replace_partition(store, folder, silver))
        result.rows_read += bronze.height
        result.rows_written += silver.height
        if result.preview is None:
            result.preview = silver.head(PREVIEW_ROWS)
    for value_folder in silver_hour_folders(store, schema, hour):
        if value_folder not in inputs:
            folder = f"silver/{schema.table}/{value_folder}/{hour_folder(hour)}"
            store.delete(store.list_files(folder))
            result.removed_values.append(value_folder)
    return result


SILVER_CHECKS = (
    "sorted_by_ts_event_ns",
    "event_id_unique",
    "reconciles_with_bronze",
    "within_partition_hour",
    "matches_declared_schema",
    "zstd_compressed",
)


def check_silver_hour(
    store: LakeStore, schema: TableSchema, hour: dt.datetime
) -> dict[str, CheckOutcome]:
    """Every Silver check of the hour, read back from the files in storage."""
    failures: dict[str, CheckOutcome] = {}
    silver_rows = 0
    files = 0
    for value_folder in silver_hour_folders(store, schema, hour):
        folder = f"silver/{schema.table}/{value_folder}/{hour_folder(hour)}"
        for path in store.list_files(folder):
            frame, metadata = read_with_metadata(store, path)
            files += 1
            silver_rows += frame.height
            for name, outcome in (
                ("sorted_by_ts_event_ns", checks.sorted_by(frame, SILVER_ORDER, path)),
                ("event_id_unique", checks.unique(frame, ["event_id"], path)),
                ("within_partition_hour", checks.within_hour(frame, hour, path)),
                (
                    "matches_declared_schema",
                    checks.matches_schema(frame, schema.stored_schema, path),
                ),
                ("zstd_compressed", checks.zstd_compressed(metadata, path)),
            ):
                if not outcome.passed:
                    failures.setdefault(name, outcome)
    bronze_ids = sum(
        store.read_parquet(paths, columns=["event_id"]).get_column("event_id").n_unique()
        for paths in bronze_hour_files(store, schema, hour).values()
    )
    if silver_rows != bronze_ids:
        failures["reconciles_with_bronze"] = CheckOutcome(
            False,
            f"silver/{schema.table} {hour:%Y-%m-%d %H}:00 holds {silver_rows} rows but Bronze "
            f"has {bronze_ids} distinct event_id",
        )
    passed = CheckOutcome.ok(f"{files} files, {silver_rows} rows, {bronze_ids} distinct in Bronze")
    return {name: failures.get(name, passed) for name in SILVER_CHECKS}
