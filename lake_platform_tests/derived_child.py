"""A derived rebuild of one hour in its own process, for tests that kill it or race two.

    python -m lake_platform_tests.derived_child ROOT TABLE HOUR [--pause-before-first-write]

The store is a real local LakeStore that prints `writing <folder>` before and `wrote <path>`
after each Parquet file (so a test can SIGKILL it at a chosen point of the rebuild, files
written but the hour not committed) and, with `--pause-before-first-write`, waits for a line
on stdin before its first file: the rebuild has read its inputs by then, so a test can change
Bronze (and commit the hour from another run) under it.
"""

import argparse
import datetime as dt
import sys
from collections.abc import Callable

import fsspec
import polars as pl

from lake_platform.derived.rebuild import rebuild_hour
from lake_platform.derived.tables import SILVER_TABLES
from lake_platform.storage import LakeStore
from lake_platform_tests.tables_of import tables_of


class AnnouncingStore(LakeStore):
    pause_before_first_write = False

    def write_parquet_named(
        self,
        frame: pl.DataFrame,
        relative_folder: str,
        name_of: Callable[[str], str],
        *,
        row_group_size: int | None = None,
    ) -> tuple[str, int, str]:
        print(f"writing {relative_folder}", flush=True)
        if self.pause_before_first_write:
            self.pause_before_first_write = False
            sys.stdin.readline()
        written = super().write_parquet_named(
            frame, relative_folder, name_of, row_group_size=row_group_size
        )
        print(f"wrote {written[0]}", flush=True)
        return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("table")
    parser.add_argument("hour", type=dt.datetime.fromisoformat)
    parser.add_argument("--pause-before-first-write", action="store_true")
    args = parser.parse_args()
    store = AnnouncingStore(args.root, fsspec.filesystem("file"))
    store.pause_before_first_write = args.pause_before_first_write
    result = rebuild_hour(tables_of(store), SILVER_TABLES[args.table], args.hour)
    print(f"done {result.rows_written} rows in {len(result.files)} files", flush=True)


if __name__ == "__main__":
    main()
