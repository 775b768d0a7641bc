"""The production Dagster instance's PostgreSQL storage, with one held connection per process.

dagster-postgres opens a new database connection for every statement (SQLAlchemy's
`NullPool`), so that an idle instance holds none. Every statement then pays a TCP connect and
SCRAM authentication, ~10 ms on loopback, and a run of one hour of the derived assets records
a few hundred events of several statements each: seconds of every run, whether it runs in the
run queue or in process (benchmarks/run_overhead.py measures both). Dagster's own webserver
avoids this by holding a pool (`optimize_for_webserver`); this storage does the same in every
process of the deployment: one connection kept open per storage (run, event log, schedule),
more opened under concurrency and closed when returned. Each connection is checked before use
(`pool_pre_ping`): after a PostgreSQL restart the dead one is replaced instead of failing the
next statement (dagster-postgres retries connecting, not a statement on a dead connection).

docker/dagster.yaml selects it with `storage: custom:`; its configuration is exactly
`storage: postgres:`'s (the `postgres_db` block).
"""

from typing import TYPE_CHECKING, Any

from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)

if TYPE_CHECKING:
    from dagster_postgres.auth import PgTokenProvider

POOL_RECYCLE_S = 3_600
"""Connections older than this are replaced (servers and proxies drop idle ones)."""
MAX_OVERFLOW = 20
"""Connections opened beyond the held one when threads need them at once (the daemon)."""


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose run, event log and schedule storages hold a connection."""

    def __init__(
        self, postgres_url: str, token_provider: "PgTokenProvider | None" = None, **kwargs: Any
    ) -> None:
        super().__init__(postgres_url, token_provider=token_provider, **kwargs)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            # The storages keep their engine in `_engine` (dagster-postgres 0.29): replaced
            # here by a pooled one, as their own `optimize_for_webserver` does.
            storage._engine.dispose()
            storage._engine = create_pg_engine(
                postgres_url,
                token_provider,
                isolation_level="AUTOCOMMIT",
                pool_size=1,
                max_overflow=MAX_OVERFLOW,
                pool_recycle=POOL_RECYCLE_S,
                pool_pre_ping=True,
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
