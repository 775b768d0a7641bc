"""lake_platform: NATS JetStream → Bronze → Silver → Gold, orchestrated by Dagster.

Importing the package sets how Polars' allocator (its own jemalloc, configured by
`_RJEM_MALLOC_CONF`, which Polars reads when it is imported) gives freed memory back:
`ALLOCATOR_CONF`, unless the environment already sets one. A rebuild releases its input
column by column while its output grows (`transforms.silver.deduplicate`); with Polars'
default (freed pages kept 0.5 s, then 1 s more as MADV_FREE, still resident) the freed input
stays in RSS and the peak holds input and output together (~3.5x the hour's Arrow size, not
~2.3x), at no measured gain in speed. It takes effect in a process that imports lake_platform
before Polars (the CLI, the Dagster code location and the run processes started from it).
"""

import os

ALLOCATOR_CONF = "dirty_decay_ms:10,muzzy_decay_ms:0"
os.environ.setdefault("_RJEM_MALLOC_CONF", ALLOCATOR_CONF)


def __getattr__(name: str) -> object:
    """`lake_platform.read` (`query/read.py`) and `lake_platform.replay` (the package),
    imported on first use: importing the package stays cheap (no Polars, pyiceberg or DuckDB)
    for the CLI and the allocator setting above."""
    if name == "read":
        from lake_platform.query.read import read

        return read
    if name == "replay":
        import importlib

        return importlib.import_module("lake_platform.replay")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
