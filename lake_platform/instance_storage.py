"""The production Dagster instance's PostgreSQL storage, with one held connection per process.

dagster-postgres opens a new database connection for every statement (SQLAlchemy's
`NullPool`), so that an idle instance holds none. Every statement then pays a TCP connect and
SCRAM authentication, ~10 ms on loopback, and a run of one hour of the derived assets records
a few hundred events of several statements each: seconds of every run, whether it runs in the
run queue or in process (benchmarks/run_overhead.py measures both). Dagster's own webserver
avoids this by holding a pool (`optimize_for_webserver`); this storage does the same in every
process of the deployment: one connection kept open per storage, more opened under
concurrency and closed when returned, reconnected when the server dropped it.

docker/dagster.yaml selects it with `storage: custom:`; its configuration is exactly
`storage: postgres:`'s (the `postgres_db` block).
"""

from typing import Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

POOL_RECYCLE_S = 3_600
"""Connections older than this are replaced (servers and proxies drop idle ones)."""
MAX_OVERFLOW = 20
"""Connections opened beyond the held one when threads need them at once (the daemon)."""
NO_STATEMENT_TIMEOUT = 0
"""Statements of runs and daemons may take as long as they take (the webserver sets its own)."""


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose run, event log and schedule storages hold a connection."""

    def __init__(self, postgres_url: str, **kwargs: Any) -> None:
        super().__init__(postgres_url, **kwargs)
        for storage in (self.run_storage, self.event_log_storage, self.schedule_storage):
            storage.optimize_for_webserver(  # ty: ignore[unresolved-attribute]
                statement_timeout=NO_STATEMENT_TIMEOUT,
                pool_recycle=POOL_RECYCLE_S,
                max_overflow=MAX_OVERFLOW,
            )

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> "PooledPostgresStorage":
        return cls(
            pg_url_from_config(config_value),
            inst_data=inst_data,
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )
