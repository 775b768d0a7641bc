"""`LakeTables`: a lake's store and its Iceberg catalog together, tables loaded by lake path.

What every writer and reader of Silver and Gold holds: the store writes and reads the data
files, the catalog says which files an hour holds. Tables are created in the catalog on first
use (`ensure_table`), so a lake that `lake-platform init` never saw still works.
"""

from dataclasses import dataclass, field

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from lake_platform.derived.declaration import DerivedTable
from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.catalog import open_catalog, root_url
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.registry import ensure_table


@dataclass
class LakeTables:
    """The lake's store and catalog; `table` loads a derived table's Iceberg table.

    Not shared between threads or processes: each writer opens its own.
    """

    settings: LakeSettings
    store: LakeStore
    catalog: SqlCatalog
    _loaded: dict[str, Table] = field(default_factory=dict, repr=False)

    @property
    def root_url(self) -> str:
        return root_url(self.settings)

    def table(self, table: DerivedTable) -> Table:
        """The Iceberg table of `table`, created when missing, refreshed to its current
        snapshot."""
        loaded = self._loaded.get(table.target)
        if loaded is None:
            loaded = self._loaded[table.target] = ensure_table(self.catalog, self.root_url, table)
        else:
            loaded.refresh()
        return loaded

    def existing(self, target: str) -> Table | None:
        """The Iceberg table at lake path `target` as it is now, None when the catalog has
        none."""
        loaded = self._loaded.get(target)
        if loaded is not None:
            return loaded.refresh()
        try:
            loaded = self.catalog.load_table(table_identifier(target))
        except NoSuchTableError:
            return None
        self._loaded[target] = loaded
        return loaded


def open_lake_tables(settings: LakeSettings, store: LakeStore | None = None) -> LakeTables:
    """The settings' lake: its store (`store` when given) and its catalog."""
    return LakeTables(settings, store or LakeStore.from_settings(settings), open_catalog(settings))
