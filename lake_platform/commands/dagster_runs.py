"""Materializing derived assets for a range of hours from a command, as one Dagster run."""

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from lake_platform.defs.resources import LakeResource
from lake_platform.settings import LakeSettings

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
QUIET_RUN = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
"""The run's events go to the instance; the terminal gets warnings only."""
DEFAULT_INSTANCE_CONFIG = (
    "# Written by lake-platform: Dagster's defaults, no telemetry.\ntelemetry:\n  enabled: false\n"
)
"""The `dagster.yaml` given to a `DAGSTER_HOME` that has none: without one, Dagster prints a
warning and a telemetry notice on every command."""


def command_instance() -> dg.DagsterInstance:
    """The instance of `DAGSTER_HOME`, or an ephemeral one (with a note) when it is unset.

    A `DAGSTER_HOME` folder that does not exist yet is created (as `make` does), with a
    `dagster.yaml` when it has none; a relative one is refused in one line (Dagster needs an
    absolute path).
    """
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        print("DAGSTER_HOME is not set: the run is not recorded", file=sys.stderr)
        return dg.DagsterInstance.ephemeral()
    folder = Path(home).expanduser()
    if not folder.is_absolute():
        raise ValueError(f"DAGSTER_HOME must be an absolute path, not {home!r}")
    if not folder.is_dir():
        folder.mkdir(parents=True)
        print(f"created DAGSTER_HOME {folder}", file=sys.stderr)
    config = folder / "dagster.yaml"
    if not config.exists():
        config.write_text(DEFAULT_INSTANCE_CONFIG)
        print(f"created {config}", file=sys.stderr)
    return dg.DagsterInstance.get()


def materialize_hours(
    assets: Sequence[dg.AssetsDefinition],
    instance: dg.DagsterInstance,
    settings: LakeSettings,
    first: str,
    last: str,
) -> dg.ExecuteInProcessResult:
    """One run over the partitions `first`…`last` (the assets' single-run backfill policy)."""
    return dg.materialize(
        list(assets),
        instance=instance,
        resources={"lake": LakeResource(data_root=settings.data_root, use_s3=settings.use_s3)},
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
        run_config=QUIET_RUN,
        raise_on_error=False,
    )
