"""The schema registry and the code generated from it: decoding and event identities."""

from lake_platform.schemas.decode import DecodedBatch, Rejection, decode_batch
from lake_platform.schemas.registry import (
    BY_NAME,
    BY_TABLE,
    SCHEMAS,
    STREAMS,
    TableSchema,
    schema_for_subject,
)

__all__ = [
    "BY_NAME",
    "BY_TABLE",
    "SCHEMAS",
    "STREAMS",
    "DecodedBatch",
    "Rejection",
    "TableSchema",
    "decode_batch",
    "schema_for_subject",
]
