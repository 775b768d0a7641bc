"""`LakeResource`: the platform settings and lake store, as a Dagster resource.

Every field is optional: unset fields come from the environment with the defaults of
docs/contract.md §5 (see `LakeSettings.from_env`), so a missing variable never fails a run.
Credentials are only ever read from the environment, never configured in Dagster.
"""

from dataclasses import replace

import dagster as dg

from lake_platform.settings import LakeSettings
from lake_platform.storage import LakeStore
from lake_platform.tables.lake_tables import LakeTables, open_lake_tables


class LakeResource(dg.ConfigurableResource):
    """Where the lake is; overrides the environment's `DATA_ROOT`/`USE_S3` when set."""

    data_root: str | None = None
    use_s3: bool | None = None

    def settings(self) -> LakeSettings:
        """The environment's settings with this resource's overrides applied."""
        settings = LakeSettings.from_env()
        overrides = {
            name: value
            for name, value in (("data_root", self.data_root), ("use_s3", self.use_s3))
            if value is not None
        }
        return replace(settings, **overrides) if overrides else settings

    def store(self) -> LakeStore:
        """The lake's store."""
        return LakeStore.from_settings(self.settings())

    def tables(self) -> LakeTables:
        """The lake's store and its Iceberg catalog (Silver and Gold tables)."""
        return open_lake_tables(self.settings())
