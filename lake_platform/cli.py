"""`lake-platform`: the command line (INTERFACES §6).

Every failure is one clear line on stderr and a non-zero exit, never a traceback.
"""

import argparse
import sys
from collections.abc import Callable, Sequence

from lake_platform.schemas import SCHEMAS
from lake_platform.settings import LakeSettings, SettingsError
from lake_platform.storage import StorageError

EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


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
    print("gold: gold/levels/signals (from bronze/levels/signals), ", end="")
    print("gold/stocks/bars_1m (from silver/stocks/trades)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lake-platform", description="Market-data lakehouse: NATS -> Bronze -> Silver -> Gold"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    tables = commands.add_parser("tables", help="list the tables, their subjects and assets")
    tables.set_defaults(handler=_tables)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `lake-platform` script."""
    args = _parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except (SettingsError, StorageError, OSError, ValueError) as error:
        print(f"lake-platform: error: {error}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
