"""Rebuilding derived partitions: read their inputs, transform, replace their files, check them."""
