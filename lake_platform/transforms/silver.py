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


FIRST_OF_EVENT = pl.col("event_id").ne_missing(pl.col("event_id").shift(1))
"""In rows sorted by `DEDUP_ORDER` (nulls last), the row kept for its `event_id`."""


def deduplicate(bronze: pl.DataFrame) -> pl.DataFrame:
    """Silver rows of `bronze`: one per `event_id`, sorted by `ts_event_ns`, `event_id`."""
    kept = [column for column in bronze.columns if not is_provenance(column)]
    return (
        bronze.select(*kept, "_stream_seq")  # other provenance would only be sorted to be dropped
        .sort(DEDUP_ORDER, nulls_last=True)
        .filter(FIRST_OF_EVENT)
        .select(kept)
    )


def distinct_rows(bronze: pl.DataFrame) -> pl.Series:
    """Row numbers in `bronze` of the rows `deduplicate` keeps, in Silver order.

    Only the sort key is sorted: a caller that moves wide nested columns moves them once, by
    these rows, instead of sorting them and then filtering them.
    """
    return (
        bronze.select(DEDUP_ORDER)
        .with_row_index("row")
        .sort(DEDUP_ORDER, nulls_last=True)
        .filter(FIRST_OF_EVENT)
        .get_column("row")
    )
