"""The executor of every asset job (UI launches, automation, backfills): steps in the run process.

A queued run already starts one fresh Python process (the run worker, spawned by the code
server), which imports Dagster and this code location. Dagster's default multiprocess
executor then spawns one more process per step, each importing everything again: for one
hour of the eight derived assets that is eight more start-ups on top of the work
(benchmarks/run_overhead.py measures every option). Running the steps one after the other in
the run process costs nothing to start and loses no parallelism that matters: every step is a
Polars rebuild that already uses every core, and Gold waits for Silver.

A multiprocess executor forking from a `forkserver` with this code location preloaded is no
way out: Polars and the NATS client are loaded by then, and forked step workers hung for good.
"""

import dagster as dg

DERIVED_EXECUTOR: dg.ExecutorDefinition = dg.in_process_executor
"""The `executor=` of the code location's `Definitions` (lake_platform/definitions.py)."""
