"""Bronze rows of one partition to Silver rows: deduplicated by `event_id`, sorted by event time.

Of the rows sharing an `event_id`, the one with the smallest `ts_recv_ns` is kept (ties: the
smallest `_stream_seq`). One sort on `(ts_event_ns, event_id, ts_recv_ns, _stream_seq)` puts
every group of duplicates next to each other with the keeper first (valid because `event_id`
covers `ts_event_ns`), and leaves the result in Silver order; keeping the first row of each
run of equal `event_id`s is then one vectorized comparison with the previous row. Rows that
tie on the whole sort key are the same message stored twice, identical in every Silver
column, so the output never depends on the order of Bronze files.
"""

import polars as pl

SILVER_ORDER = ("ts_event_ns", "event_id")
DEDUP_ORDER = (*SILVER_ORDER, "ts_recv_ns", "_stream_seq")


def is_provenance(column: str) -> bool:
    """Bronze-only columns (`_stream_seq`, `_subject`, …)."""
    return column.startswith("_")


def distinct_rows(bronze: pl.DataFrame) -> pl.Series:
    """Row numbers in `bronze` of the row kept for each `event_id`, in Silver order.

    Only the sort key is sorted: the caller moves each of its columns once, by these rows,
    instead of sorting them all and filtering them all (nested columns are costly to move).
    """
    return (
        bronze.select(DEDUP_ORDER)
        .with_row_index("row")
        .sort(DEDUP_ORDER, nulls_last=True)
        .filter(pl.col("event_id").ne_missing(pl.col("event_id").shift(1)))
        .get_column("row")
    )


def deduplicate(bronze: pl.DataFrame) -> pl.DataFrame:
    """Silver rows of `bronze`: one per `event_id`, sorted by `ts_event_ns`, `event_id`."""
    kept = [column for column in bronze.columns if not is_provenance(column)]
    return bronze.select(pl.col(kept).gather(distinct_rows(bronze)))
