"""The commands behind `lake-platform …` and `make run`; `lake_platform.cli` parses arguments."""
