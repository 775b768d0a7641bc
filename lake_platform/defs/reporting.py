"""Materialization metadata and check results of derived assets, from per-hour results."""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg
import polars as pl

from lake_platform.checks import CheckOutcome
from lake_platform.derived.hourly import HourResult


def _markdown_table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * frame.width
    rows = ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.iter_rows()]
    return "\n".join([header, rule, *rows])


def materialization_metadata(results: Sequence[HourResult]) -> dict[str, dg.MetadataValue]:
    """Counts summed over the run's hours, and a preview of the first rows written."""
    preview = next((r.preview for r in results if r.preview is not None), None)
    metadata: dict[str, dg.MetadataValue] = {
        "hours": dg.MetadataValue.int(len(results)),
        "rows_read": dg.MetadataValue.int(sum(r.rows_read for r in results)),
        "rows_written": dg.MetadataValue.int(sum(r.rows_written for r in results)),
        "duplicates_removed": dg.MetadataValue.int(sum(r.duplicates_removed for r in results)),
        "files": dg.MetadataValue.int(sum(len(r.files) for r in results)),
        "bytes": dg.MetadataValue.int(sum(r.bytes for r in results)),
    }
    if preview is not None:
        metadata["preview"] = dg.MetadataValue.md(_markdown_table(preview))
    return metadata


def check_results(
    outcomes: Sequence[Mapping[str, CheckOutcome]], names: Sequence[str]
) -> Iterator[dg.AssetCheckResult]:
    """One result per check over the run's hours: failed with the first failure's message."""
    for name in names:
        failed = [hour[name] for hour in outcomes if not hour[name].passed]
        shown = failed[0] if failed else (outcomes[-1][name] if outcomes else None)
        yield dg.AssetCheckResult(
            check_name=name,
            passed=not failed,
            severity=dg.AssetCheckSeverity.ERROR,
            description=shown.message if shown else "no hour in this run",
            metadata={"hours_checked": len(outcomes), "hours_failed": len(failed)},
        )
