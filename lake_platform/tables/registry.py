"""Creating the derived tables in the catalog, idempotently.

An existing table is loaded as it is: evolving its schema when a declaration gains a column
is a later step. A table created at the same moment by another process is loaded too.
"""

import time
from collections.abc import Iterable

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import TableAlreadyExistsError
from pyiceberg.table import Table

from lake_platform.derived.declaration import DerivedTable
from lake_platform.tables.identifiers import namespace, table_identifier, table_location
from lake_platform.tables.schema import (
    CREATED_PROPERTY,
    iceberg_schema,
    partition_spec,
    table_properties,
)


def ensure_tables(
    catalog: Catalog, root_url: str, tables: Iterable[DerivedTable]
) -> dict[str, Table]:
    """Each table of `tables`, created when missing (and its namespace), by lake path."""
    return {table.target: ensure_table(catalog, root_url, table) for table in tables}


def ensure_table(catalog: Catalog, root_url: str, table: DerivedTable) -> Table:
    """The Iceberg table of `table`, created when missing."""
    identifier = table_identifier(table.target)
    if catalog.table_exists(identifier):
        return catalog.load_table(identifier)
    _ensure_namespace(catalog, namespace(table.target))
    schema = iceberg_schema(table)
    try:
        return catalog.create_table(
            identifier,
            schema=schema,
            location=table_location(root_url, table.target),
            partition_spec=partition_spec(table, schema),
            properties={
                **table_properties(table, schema, root_url),
                CREATED_PROPERTY: str(time.time_ns() // 1_000_000),
            },
        )
    except TableAlreadyExistsError:
        return catalog.load_table(identifier)


def _ensure_namespace(catalog: Catalog, name: str) -> None:
    """Create the namespace when missing. Two processes creating it at once (two rebuilds of
    a new lake) race in pyiceberg's check-then-insert, and the loser's insert fails on the
    catalog's unique key (an `IntegrityError`, not `NamespaceAlreadyExistsError`): a namespace
    that exists afterwards is what was wanted."""
    try:
        catalog.create_namespace_if_not_exists(name)
    except Exception:
        if not catalog.namespace_exists(name):
            raise
