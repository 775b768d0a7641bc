"""Lake storage: paths and escaping (`paths`), atomic Parquet I/O over fsspec (`store`)."""

from lake_platform.storage.store import LakeStore, StorageError

__all__ = ["LakeStore", "StorageError"]
