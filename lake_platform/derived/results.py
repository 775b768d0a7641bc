"""What rebuilding one hour of a derived table records, for its checks and its metadata:
the files read and written, the rows, the reconciliations' totals of the input, and the row
checks already run on the rows written."""

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from lake_platform.checks import CheckOutcome
from lake_platform.derived.partition_files import WrittenFile
from lake_platform.tables.hours import HourCommit


@dataclass
class CheckedRows:
    """The row checks of one value-hour's files: the first failure of each check, by name,
    and each reconciliation's derived total.

    `digests` (path to SHA-256) name the exact files whose rows were checked when the checks
    ran on the rows a rebuild wrote them from; empty when they ran on the files as read.
    """

    failures: dict[str, CheckOutcome] = field(default_factory=dict)
    totals: dict[str, int | float] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)


@dataclass
class HourResult:
    """What rebuilding one hour read (`inputs`, the exact files) and wrote.

    `source_totals` holds each reconciliation's total of the rows the rebuild read, so the
    check compares with what the rebuild saw even after the inputs changed or vanished.
    `checked` holds, by value folder, the row checks of the rows each value-hour's files were
    written from (see `check_hour`). `values` are the value folders whose hour the rebuild
    listed when the ledger named them; None: every one. `lookups` holds the files of each of
    the table's lookups it read (by lookup name, then value folder). `commit` is what the
    hour's Iceberg commit did, `snapshot_id` the snapshot holding the hour as rebuilt (the
    checks read its files): the commit's, or the current one when the output was unchanged.
    """

    hour: dt.datetime
    inputs: dict[str, list[str]] = field(default_factory=dict)
    values: list[str] | None = None
    source_totals: dict[str, int | float] = field(default_factory=dict)
    rows_read: int = 0
    rows_written: int = 0
    files: list[WrittenFile] = field(default_factory=list)
    commit: HourCommit | None = None
    snapshot_id: int | None = None
    preview: pl.DataFrame | None = None
    checked: dict[str, CheckedRows] = field(default_factory=dict)
    lookups: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @property
    def duplicates_removed(self) -> int:
        return self.rows_read - self.rows_written

    @property
    def bytes(self) -> int:
        return sum(file.bytes for file in self.files)

    @property
    def input_files(self) -> int:
        return sum(len(files) for files in self.inputs.values())

    def every_input(self) -> dict[str, list[str]]:
        """The source's and the lookups' files read, by a key unique to each input folder
        (what the hour's snapshot records the digest of)."""
        lookups = {
            f"{name}:{folder}": paths
            for name, folders in self.lookups.items()
            for folder, paths in folders.items()
        }
        return {**self.inputs, **lookups}
