"""Dagster wiring, one folder per tier; the core logic lives outside `defs/`."""
