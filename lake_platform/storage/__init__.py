"""Lake storage: paths and escaping (`paths`), the `LakeStore` facade (`store`) over one
backend per kind of store (`backends`: local disk, object stores, S3), Parquet encoding
(`parquet`) and `StorageError` (`errors`)."""

from lake_platform.storage.errors import StorageError
from lake_platform.storage.store import LakeStore

__all__ = ["LakeStore", "StorageError"]
