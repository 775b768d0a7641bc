"""The compose topology (docker/compose.yaml) as local processes on 127.0.0.1."""

from __future__ import annotations

import os

import pytest

from lake_platform.local_servers import find_postgres_bin

REQUIRE_POSTGRES_ENV = "LAKE_REQUIRE_POSTGRES"


def require_postgres() -> None:
    """Skip the calling test when PostgreSQL is not installed, unless CI requires it
    (`LAKE_REQUIRE_POSTGRES=1`): then fail."""
    try:
        find_postgres_bin()
    except FileNotFoundError as missing:
        message = f"{missing} (apt-get install postgresql to run this test)"
        if os.environ.get(REQUIRE_POSTGRES_ENV):
            pytest.fail(f"{message}; {REQUIRE_POSTGRES_ENV} is set", pytrace=False)
        pytest.skip(message)
