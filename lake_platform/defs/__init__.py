"""Dagster wiring, one folder per tier; the core logic lives outside `defs/`."""

import warnings

import dagster as dg

# Single-run backfills are how a day is rebuilt in one run; the parameter is marked beta.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy`", category=dg.BetaWarning)
# Checks partitioned like their asset record one result per hour; the parameter is a preview.
warnings.filterwarnings("ignore", message="Specifying a partitions_def", category=dg.PreviewWarning)
# Code references (the UI's links to each table's transform) are beta classes.
warnings.filterwarnings(
    "ignore",
    message="Class `(LocalFileCodeReference|CodeReferencesMetadataValue)`",
    category=dg.BetaWarning,
)
