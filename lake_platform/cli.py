"""`lake-platform`: the command line (docs/contract.md §6).

Every failure is one clear line on stderr and a non-zero exit, never a traceback.
"""

import argparse
import datetime as dt
import math
import os
import sys
from collections.abc import Callable, Sequence

from lake_platform.ingest.connection import NatsUnavailableError
from lake_platform.ingest.jetstream import ConsumerConfigError
from lake_platform.ingest.service import IngestFailedError
from lake_platform.schemas import SCHEMAS
from lake_platform.settings import LakeSettings, SettingsError
from lake_platform.simulate.publisher import PublishFailedError
from lake_platform.storage import StorageError

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130
DEBUG_ENV = "LAKE_PLATFORM_DEBUG"
SQL_FORMATS = ("table", "csv", "json", "parquet")
"""`lake-platform sql --format` (`query/output.py` writes them)."""
SQL_TABLE_ROWS = 40


def _tables(_: argparse.Namespace) -> int:
    """Print the registry: where each subject lands and the settings in force."""
    settings = LakeSettings.from_env()
    print(f"lake: {settings.data_root}   nats: {', '.join(settings.public()['nats_servers'])}")
    print(f"{'subject':<24}{'stream':<9}{'table':<26}{'partitioned by':<16}assets")
    for schema in SCHEMAS:
        tiers = ["bronze"] + (["silver"] if schema.silver else [])
        assets = ", ".join(f"{tier}/{schema.table}" for tier in tiers)
        print(
            f"{schema.subject:<24}{schema.stream:<9}{schema.table:<26}"
            f"{schema.partition_column:<16}{assets}"
        )
    from lake_platform.derived.sql_tables import SQL_GOLD_TABLES
    from lake_platform.derived.tables import GOLD_TABLES

    gold = (
        f"{gold.target} (from {' + '.join(gold.inputs)})"
        for gold in (*GOLD_TABLES, *SQL_GOLD_TABLES)
    )
    print(f"gold: {', '.join(gold)}")
    return 0


def _ingest(args: argparse.Namespace) -> int:
    """Run the Bronze ingest outside the Dagster daemon."""
    from lake_platform.commands.ingest import run_ingest

    return run_ingest(until_idle=args.until_idle, max_seconds=args.max_seconds)


def _compact(args: argparse.Namespace) -> int:
    """Rebuild Silver for every hour of a date through Dagster."""
    from lake_platform.commands.compact import run_compact

    return run_compact(args.date, args.table)


def _verify(args: argparse.Namespace) -> int:
    """Check a date's stored Silver and Gold files again, without rebuilding them."""
    from lake_platform.commands.verify import run_verify

    return run_verify(args.date, args.table, args.as_of)


def _status(args: argparse.Namespace) -> int:
    """The lake at a glance; exit 1 when a check fails or a table is stale."""
    from lake_platform.commands.status import run_status

    return run_status(args.hours, args.json)


def _publish(args: argparse.Namespace) -> int:
    """Publish a simulated session, or replay a JSON-lines file, to NATS."""
    from lake_platform.commands.publish import run_publish

    return run_publish(args)


def _demo(args: argparse.Namespace) -> int:
    """The whole chain as one batch on embedded defaults."""
    from lake_platform.commands.demo import run_demo

    return run_demo(minutes=args.minutes, rate=args.rate, seed=args.seed)


def _init(_: argparse.Namespace) -> int:
    """Idempotent deployment set-up: lake bucket, streams, consumers, Dagster storage."""
    from lake_platform.commands.init import run_init

    return run_init()


def _tag(args: argparse.Namespace) -> int:
    """Tag the current snapshot of every Silver and Gold table (or one)."""
    from lake_platform.commands.tag import run_tag

    return run_tag(args.name, args.table, args.replace)


def _maintain(args: argparse.Namespace) -> int:
    """The `lake_maintenance` job's work, once."""
    from lake_platform.commands.maintain import run_maintain

    return run_maintain(args.table)


def _catalog_recover(args: argparse.Namespace) -> int:
    """Rebuild a lost Iceberg catalog from Bronze."""
    from lake_platform.commands.catalog import run_catalog_recover

    return run_catalog_recover(args.date)


def _sql(args: argparse.Namespace) -> int:
    """A SQL query over every table of the lake, in DuckDB."""
    from lake_platform.commands.sql import SqlRequest, run_sql

    return run_sql(
        SqlRequest(
            query=args.query,
            file=args.file,
            tables=args.tables,
            as_of=args.as_of,
            fmt=args.format,
            output=args.output,
            limit=args.limit,
        )
    )


def _replay(args: argparse.Namespace) -> int:
    """A time range of the lake back onto NATS, in event-time order."""
    from lake_platform.commands.replay import request_of, run_replay

    return run_replay(request_of(args))


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {raw!r}") from None


def _positive_seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive finite number: {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    if not raw.isdecimal() or int(raw) <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number: {raw!r}")
    return int(raw)


def _non_negative_int(raw: str) -> int:
    if not raw.isdecimal():
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more: {raw!r}")
    return int(raw)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lake-platform", description="Market-data lakehouse: NATS -> Bronze -> Silver -> Gold"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    tables = commands.add_parser("tables", help="list the tables, their subjects and assets")
    tables.set_defaults(handler=_tables)
    ingest = commands.add_parser(
        "ingest", help="run the Bronze ingest (NATS JetStream -> Bronze) outside the daemon"
    )
    ingest.add_argument(
        "--until-idle", action="store_true", help="exit once both consumers have nothing pending"
    )
    ingest.add_argument(
        "--max-seconds", type=_positive_seconds, help="stop (flushing everything) after N seconds"
    )
    ingest.set_defaults(handler=_ingest)
    compact = commands.add_parser(
        "compact", help="materialize Silver for every hour of a date (through Dagster)"
    )
    compact.add_argument("--date", type=_date, required=True, help="UTC date, YYYY-MM-DD")
    compact.add_argument("--table", help="one table, e.g. stocks/trades (default: all six)")
    compact.set_defaults(handler=_compact)
    verify = commands.add_parser(
        "verify",
        help="check a date's stored Silver and Gold files again, without rebuilding them "
        "(through Dagster; exit 1 on a failure)",
    )
    verify.add_argument("--date", type=_date, required=True, help="UTC date, YYYY-MM-DD")
    verify.add_argument(
        "--table", help="one table, e.g. silver/stocks/trades or gold/stocks/bars_1m"
    )
    verify.add_argument(
        "--as-of",
        metavar="TAG|SNAPSHOT|TIMESTAMP",
        help="verify the version current then (a tag, a snapshot id, or a UTC time like "
        "2026-12-06T03:00:00Z) instead of the current one",
    )
    verify.set_defaults(handler=_verify)
    status = commands.add_parser(
        "status",
        help="per table: hours, rows, latest hour, last materialization, failing checks, "
        "staleness; JetStream lag (exit 1 when a check fails or a table is stale)",
    )
    status.add_argument(
        "--hours", type=_positive_int, default=24, help="the window, in hours (default 24)"
    )
    status.add_argument("--json", action="store_true", help="one JSON document, for machines")
    status.set_defaults(handler=_status)
    publish = commands.add_parser(
        "publish", help="publish a simulated market session (or replay a JSON-lines file)"
    )
    publish.add_argument("--minutes", type=_positive_seconds, default=10.0, help="session length")
    publish.add_argument("--rate", type=_positive_seconds, default=100.0, help="events per second")
    publish.add_argument("--symbols", default="SPY,QQQ", help="comma-separated stock symbols")
    publish.add_argument("--dup-rate", type=float, default=0.02, help="share re-published")
    publish.add_argument(
        "--seed", type=int, default=0, help="random seed (same seed, same session)"
    )
    publish.add_argument(
        "--live", action="store_true", help="pace at --rate in real time, event time = now"
    )
    publish.add_argument("--file", help='replay a JSON-lines file of {"subject": …, "data": {…}}')
    publish.set_defaults(handler=_publish)
    demo = commands.add_parser("demo", help="the whole chain on embedded defaults, as a batch")
    demo.add_argument("--minutes", type=_positive_seconds, default=10.0, help="session length")
    demo.add_argument("--rate", type=_positive_seconds, default=100.0, help="events per second")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    demo.set_defaults(handler=_demo)
    init = commands.add_parser(
        "init",
        help="set up a deployment once (idempotent): S3 bucket, streams with their replicas "
        "and retention, durable consumers, `dagster instance migrate`",
    )
    init.set_defaults(handler=_init)
    tag = commands.add_parser(
        "tag",
        help="tag the current snapshot of every Silver and Gold table (or one): a version that "
        "never expires, read back with --as-of NAME",
    )
    tag.add_argument("name", help="the tag, e.g. training-2026-01 (starts with a letter)")
    tag.add_argument("--table", help="one table, e.g. silver/stocks/trades or gold/stocks/bars_1m")
    tag.add_argument(
        "--replace", action="store_true", help="move a tag of that name to the current snapshot"
    )
    tag.set_defaults(handler=_tag)
    maintain = commands.add_parser(
        "maintain",
        help="Iceberg maintenance once (the lake_maintenance job): expire old snapshots, delete "
        "the files nothing kept needs, merge manifests, day tags; prints what it deleted",
    )
    maintain.add_argument(
        "--table", help="one table, e.g. silver/stocks/trades or gold/stocks/bars_1m"
    )
    maintain.set_defaults(handler=_maintain)
    catalog = commands.add_parser("catalog", help="the Iceberg catalog of Silver and Gold")
    catalog_commands = catalog.add_subparsers(dest="catalog_command", required=True)
    recover = catalog_commands.add_parser(
        "recover",
        help="rebuild a lost catalog from Bronze: every hour derived again, its "
        "content-addressed files registered, not rewritten",
    )
    recover.add_argument(
        "--date",
        type=_date,
        action="append",
        help="UTC date, YYYY-MM-DD (repeatable; default: every date Bronze has)",
    )
    recover.set_defaults(handler=_catalog_recover)
    sql = commands.add_parser(
        "sql",
        help="query the lake with SQL (DuckDB, in process): every table is a view "
        "{tier}.{table} (bronze.stocks_trades, silver.stocks_trades, gold.stocks_bars_1m), "
        "each Silver/Gold view pinned to one snapshot for the whole query",
    )
    sql.add_argument("query", nargs="?", help="the SQL; - reads it from standard input")
    sql.add_argument("--file", "-f", help="read the SQL from a file")
    sql.add_argument(
        "--tables", action="store_true", help="list the views: rows, snapshot id, lake path"
    )
    sql.add_argument(
        "--as-of",
        metavar="TAG|SNAPSHOT|TIMESTAMP",
        help="read each Silver/Gold table as it was then (a tag, a snapshot id, or a UTC time "
        "like 2026-12-06T03:00:00Z); Bronze is read as it is",
    )
    sql.add_argument(
        "--format",
        choices=SQL_FORMATS,
        help="table (default on a terminal), csv (default in a pipe), json (one object a "
        "line) or parquet; with --output, by default the file's extension",
    )
    sql.add_argument("--output", "-o", metavar="FILE", help="write the result to FILE")
    sql.add_argument(
        "--limit",
        type=_non_negative_int,
        default=SQL_TABLE_ROWS,
        help=f"rows the table format shows (default {SQL_TABLE_ROWS}; 0: all); the file "
        "formats write every row",
    )
    sql.set_defaults(handler=_sql)
    _add_replay(commands)
    return parser


def _add_replay(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    replay = commands.add_parser(
        "replay",
        help="publish a time range of the lake back to NATS JetStream as one stream in "
        "event-time order (Nats-Msg-Id = event_id), at real time, N times it, or as fast as "
        "acked; Ctrl-C prints the last event replayed",
    )
    replay.add_argument("--start", required=True, help="UTC time, e.g. 2025-12-16T14:00:00Z")
    replay.add_argument("--end", required=True, help="UTC time (excluded)")
    replay.add_argument(
        "--tables", help="comma-separated, e.g. stocks/trades,stocks/quotes (default: all)"
    )
    replay.add_argument("--symbols", help="comma-separated values of the partition column")
    replay.add_argument(
        "--speed",
        default="max",
        help="1 = real time by event-time deltas, N = N times faster, max = as fast as the "
        "target acks (default)",
    )
    replay.add_argument(
        "--subject-prefix",
        default="replay",
        help="subjects are {prefix}.{subject}.{value} (default replay; '' publishes on the "
        "live subjects, into MARKET/SIGNALS)",
    )
    replay.add_argument(
        "--as-recorded", action="store_true", help="keep each event's source (default: replay)"
    )
    replay.add_argument(
        "--from",
        dest="source",
        choices=("silver", "bronze"),
        default="silver",
        help="silver (deduplicated, default) or bronze (as ingested, duplicates included)",
    )
    replay.add_argument(
        "--as-of",
        metavar="TAG|SNAPSHOT|TIMESTAMP",
        help="replay the Silver tables as they were then",
    )
    replay.add_argument("--nats-url", help="the target's servers (default: NATS_URL)")
    replay.add_argument(
        "--resume-after", metavar="EVENT_ID", help="continue after this event of the range"
    )
    replay.set_defaults(handler=_replay)


def _is_expected(error: Exception) -> bool:
    """Whether `error` is one whose message is the whole story: the catalog that cannot be
    opened. (Imported only here: pyiceberg costs the start of every command a second or more;
    a `CatalogError` was raised by the module, so it is loaded already. Tag and `--as-of`
    errors are `ValueError`s.)"""
    from lake_platform.tables.catalog import CatalogError

    return isinstance(error, CatalogError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lake-platform` script."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (
        SettingsError,
        StorageError,
        NatsUnavailableError,
        ConsumerConfigError,
        IngestFailedError,
        PublishFailedError,
        OSError,
        ValueError,
    ) as error:
        print(f"lake-platform: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as error:
        if _is_expected(error):
            print(f"lake-platform: error: {error}", file=sys.stderr)
            return EXIT_FAILURE
        if os.environ.get(DEBUG_ENV):
            raise
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"lake-platform: error: {type(error).__name__}: {first_line} "
            f"(set {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
