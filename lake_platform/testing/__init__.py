"""Helpers for tests and the embedded demo: real local S3 and NATS servers."""
