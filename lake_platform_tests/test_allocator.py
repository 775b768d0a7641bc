"""Importing lake_platform before Polars sets how Polars' allocator gives memory back."""

import os
import subprocess
import sys

from lake_platform import ALLOCATOR_CONF

SHOW_CONF = "import lake_platform, polars, os; print(os.environ['_RJEM_MALLOC_CONF'])"


def polars_conf(**environment: str) -> str:
    """`_RJEM_MALLOC_CONF` as Polars leaves it in a new process importing lake_platform
    first (Polars appends the value it finds to its own defaults: the last setting wins)."""
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"} | environment
    done = subprocess.run(
        [sys.executable, "-c", SHOW_CONF], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_package_sets_the_allocator_when_the_environment_does_not() -> None:
    assert polars_conf().endswith(ALLOCATOR_CONF)


def test_a_setting_in_the_environment_is_kept() -> None:
    conf = polars_conf(_RJEM_MALLOC_CONF="dirty_decay_ms:250")
    assert conf.endswith("dirty_decay_ms:250")
    assert ALLOCATOR_CONF not in conf
