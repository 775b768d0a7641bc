"""Iceberg names and locations of the derived tables.

A table's identifier is `{tier}.{rest of its path with / as _}` (`silver/stocks/trades` is
`silver.stocks_trades`); its location is its existing folder (the data files stay at their
Hive paths) and its metadata lives outside the Hive tree, under `_iceberg/`.
"""

ICEBERG_FOLDER = "_iceberg"
"""Folder below the lake root holding the catalog (SQLite) and every table's metadata."""


def table_identifier(target: str) -> str:
    """`silver.stocks_trades` for `silver/stocks/trades`."""
    tier, separator, rest = target.partition("/")
    if not separator or not rest:
        raise ValueError(f"a table path is tier/table, got {target!r}")
    return f"{tier}.{rest.replace('/', '_')}"


def namespace(target: str) -> str:
    """The namespace of a table path: its tier (`silver`, `gold`)."""
    return table_identifier(target).split(".", 1)[0]


def table_location(root_url: str, target: str) -> str:
    """The table's folder below the lake root (`/data/lake/silver/stocks/trades`)."""
    return f"{root_url.rstrip('/')}/{target}"


def metadata_location(root_url: str, target: str) -> str:
    """Where the table's metadata files go: `{root}/_iceberg/{target}/metadata`."""
    return f"{root_url.rstrip('/')}/{ICEBERG_FOLDER}/{target}/metadata"
