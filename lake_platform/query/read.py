"""`lake_platform.read`: one table of the lake as a Polars LazyFrame, pruned before reading.

Silver and Gold through the Iceberg catalog: the files of one snapshot (the current one, or
`as_of`), planned by `planning.planned_files` (partition values, the `date` bounds of each
manifest, each file's `ts_event_ns` statistics), then one `pl.scan_parquet` over exactly those
files, the partition column, `date` and `hour` read from their Hive folders as typed strings,
date and integer (the catalog's values: its folders are named from them, escaped). Bronze
over its Hive folders, as docs/readers.md reads it, with the same filters pushed into the
scan. Either way `start`/`end` keep rows with `ts_event_ns` in [start, end).

A lake path holding `=` (`/data/k=v/lake`) reads as a Hive folder to Polars: Silver and Gold
are then scanned per partition (value, date, hour) with the values as literals; Bronze
cannot be read so (a one-line error).
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence

import polars as pl
from pyiceberg.exceptions import NoSuchTableError

from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.query.planning import PlannedFile, planned_files
from lake_platform.schemas import SCHEMAS
from lake_platform.schemas.registry import without_column
from lake_platform.settings import LakeSettings
from lake_platform.tables.catalog import open_catalog, root_url
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.schema import DATE_COLUMN, HOUR_COLUMN
from lake_platform.tables.time_travel import snapshot_as_of

TIME_COLUMN = "ts_event_ns"
PARQUET_GLOB = "**/*.parquet"
Moment = dt.datetime | dt.date | str | int
"""A time: an aware datetime (a naive one is UTC), a date (its midnight UTC), an ISO-8601
string (the same), or nanoseconds since the epoch."""


def read(
    table: str,
    start: Moment | None = None,
    end: Moment | None = None,
    symbols: str | Iterable[str] | None = None,
    columns: Sequence[str] | None = None,
    as_of: str | None = None,
    settings: LakeSettings | None = None,
) -> pl.LazyFrame:
    """The rows of `table` (`silver/stocks/trades` or `silver.stocks_trades`; any tier) with
    `ts_event_ns` in [start, end), of the partition values `symbols` (the table's partition
    column: `symbol`, or `underlying`), as a LazyFrame of `columns` (all by default: the
    files' columns, the partition column, `date` and `hour`). `as_of` (a tag, snapshot id or
    time) reads a Silver/Gold table as it was; Bronze is append-only and read as it is.
    `settings`: the lake (the environment's by default)."""
    settings = settings or LakeSettings.from_env()
    tier, target, column, schema = _resolve(table)
    full = _view_schema(schema, column)
    wanted = list(full) if columns is None else list(columns)
    unknown = [name for name in wanted if name not in full]
    if unknown:
        raise ValueError(f"{target} has no column {', '.join(map(repr, unknown))}")
    values = [symbols] if isinstance(symbols, str) else None if symbols is None else list(symbols)
    start_ns = None if start is None else to_ns(start)
    end_ns = None if end is None else to_ns(end)
    if tier == "bronze":
        if as_of is not None:
            raise ValueError("as_of reads a Silver or Gold table as it was; Bronze has no versions")
        frame = _bronze(settings, target, column, full, values, start_ns, end_ns)
        inside = False
    else:
        frame, inside = _derived(settings, target, column, full, values, start_ns, end_ns, as_of)
    if start_ns is not None and not inside:
        frame = frame.filter(pl.col(TIME_COLUMN) >= start_ns)
    if end_ns is not None and not inside:
        frame = frame.filter(pl.col(TIME_COLUMN) < end_ns)
    return frame.select(wanted)


def _resolve(table: str) -> tuple[str, str, str, pl.Schema]:
    """(tier, lake path, partition column, declared row schema) of a table's name."""
    known: dict[str, tuple[str, str, pl.Schema]] = {}
    for entry in SCHEMAS:
        known[f"bronze/{entry.table}"] = (
            "bronze",
            entry.partition_column,
            entry.bronze_schema,
        )
    for derived in CATALOG_TABLES:
        tier = derived.target.split("/", 1)[0]
        known[derived.target] = (tier, derived.partition_column, derived.schema)
    for target, (tier, column, schema) in known.items():
        if table in (target, table_identifier(target)):
            return tier, target, column, schema
    raise ValueError(f"no table {table!r}; known: {', '.join(known)}")


def _view_schema(schema: pl.Schema, column: str) -> pl.Schema:
    """A read's columns: the files' columns, then the partition column, `date`, `hour`."""
    return pl.Schema(
        {
            **without_column(schema, column),
            column: pl.String(),
            DATE_COLUMN: pl.Date(),
            HOUR_COLUMN: pl.Int32(),
        }
    )


def _hive_schema(column: str) -> dict[str, pl.DataType]:
    return {column: pl.String(), DATE_COLUMN: pl.Date(), HOUR_COLUMN: pl.Int32()}


def to_ns(moment: Moment) -> int:
    """Nanoseconds since the epoch of a `Moment`."""
    if isinstance(moment, bool):
        raise TypeError(f"not a time: {moment!r}")
    if isinstance(moment, int):
        return moment
    if isinstance(moment, str):
        try:
            moment = dt.datetime.fromisoformat(moment.strip())
        except ValueError:
            raise ValueError(f"not an ISO-8601 time or date: {moment!r}") from None
    if not isinstance(moment, dt.datetime):
        moment = dt.datetime.combine(moment, dt.time())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1_000


def storage_options(settings: LakeSettings) -> dict[str, str] | None:
    """Polars' options for the lake's S3 store (it ignores pyiceberg's), None locally."""
    if not settings.use_s3:
        return None
    options = {
        "aws_endpoint_url": settings.s3_endpoint,
        "aws_region": settings.s3_region,
        "aws_access_key_id": settings.s3_access_key,
        "aws_secret_access_key": settings.s3_secret_key,
    }
    found = {name: value for name, value in options.items() if value}
    if (settings.s3_endpoint or "").startswith("http://"):
        found["aws_allow_http"] = "true"
    return found


def _derived(
    settings: LakeSettings,
    target: str,
    column: str,
    full: pl.Schema,
    values: list[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    as_of: str | None,
) -> tuple[pl.LazyFrame, bool]:
    """A Silver/Gold table's planned files as one scan (see the module), and whether every
    file's `ts_event_ns` bounds lie in [start, end) (no row then needs the time filter)."""
    try:
        table = open_catalog(settings).load_table(table_identifier(target))
    except NoSuchTableError:
        return pl.LazyFrame(schema=full), True
    snapshot = table.current_snapshot() if as_of is None else snapshot_as_of(table, as_of)
    snapshot_id = None if snapshot is None else snapshot.snapshot_id
    files = planned_files(table, snapshot_id, values=values, start_ns=start_ns, end_ns=end_ns)
    if not files:
        return pl.LazyFrame(schema=full), True
    inside = all(_within(file, start_ns, end_ns) for file in files)
    options = storage_options(settings)
    if "=" in table.location():
        return _scan_by_partition(files, column, options), inside
    frame = pl.scan_parquet(
        [file.path for file in files],
        hive_partitioning=True,
        hive_schema=_hive_schema(column),
        glob=False,
        storage_options=options,
    )
    return frame, inside


def _within(file: PlannedFile, start_ns: int | None, end_ns: int | None) -> bool:
    """Whether all of the file's `ts_event_ns` are known to lie in [start, end)."""
    if start_ns is not None and (file.ts_low is None or file.ts_low < start_ns):
        return False
    return end_ns is None or (file.ts_high is not None and file.ts_high < end_ns)


def _scan_by_partition(
    files: Sequence[PlannedFile], column: str, options: dict[str, str] | None
) -> pl.LazyFrame:
    """The files scanned per partition, its values added as literals (no Hive parsing)."""
    groups: dict[tuple[str, dt.date, int], list[str]] = defaultdict(list)
    for file in files:
        groups[(file.value, file.day, file.hour)].append(file.path)
    return pl.concat(
        pl.scan_parquet(
            paths, hive_partitioning=False, glob=False, storage_options=options
        ).with_columns(
            pl.lit(value, pl.String()).alias(column),
            pl.lit(day, pl.Date()).alias(DATE_COLUMN),
            pl.lit(hour, pl.Int32()).alias(HOUR_COLUMN),
        )
        for (value, day, hour), paths in groups.items()
    )


def _bronze(
    settings: LakeSettings,
    target: str,
    column: str,
    full: pl.Schema,
    values: list[str] | None,
    start_ns: int | None,
    end_ns: int | None,
) -> pl.LazyFrame:
    """A Bronze table over its Hive folders, partition filters pushed into the scan."""
    from lake_platform.storage import LakeStore

    root = root_url(settings)
    if "=" in root:
        raise ValueError(
            f"the lake's path {root} holds '=': Hive readers take it for a partition folder"
        )
    if not LakeStore.from_settings(settings).list_folders(target):
        return pl.LazyFrame(schema=full)
    frame = pl.scan_parquet(
        f"{root}/{target}/{PARQUET_GLOB}",
        hive_partitioning=True,
        hive_schema=_hive_schema(column),
        storage_options=storage_options(settings),
    )
    if values is not None:
        frame = frame.filter(pl.col(column).is_in(values))
    if start_ns is not None:
        frame = frame.filter(pl.col(DATE_COLUMN) >= _day_of(start_ns))
    if end_ns is not None:
        frame = frame.filter(pl.col(DATE_COLUMN) <= _day_of(end_ns - 1))
    return frame


def _day_of(ns: int) -> dt.date:
    return dt.date(1970, 1, 1) + dt.timedelta(days=ns // (86_400 * 10**9))
