"""The storage backends behind `LakeStore`, one class per kind of store, and how a
filesystem finds its backend.

A third kind of store (Google Cloud Storage, Azure Blob Storage through fsspec) is one
subclass of `ObjectStoreBackend` (its error classification; a sweep if its unfinished
uploads do not expire) named in `OBJECT_STORE_BACKENDS` under its fsspec protocol; without
one, an object store's filesystem gets `ObjectStoreBackend` itself.
"""

import fsspec
from fsspec.implementations.local import LocalFileSystem

from lake_platform.storage.backends.base import Backend, WriteBody, WrittenFile, protocols_of
from lake_platform.storage.backends.local import LocalBackend
from lake_platform.storage.backends.object_store import ObjectStoreBackend
from lake_platform.storage.backends.s3 import S3Backend

OBJECT_STORE_BACKENDS: dict[str, type[ObjectStoreBackend]] = {"s3": S3Backend}
"""The backend of each object store's fsspec protocol."""

__all__ = [
    "OBJECT_STORE_BACKENDS",
    "Backend",
    "LocalBackend",
    "ObjectStoreBackend",
    "S3Backend",
    "WriteBody",
    "WrittenFile",
    "backend_for",
]


def backend_for(root: str, fs: fsspec.AbstractFileSystem, endpoint: str | None = None) -> Backend:
    """The backend of the files below `root` (a folder; `bucket/prefix` on an object store)
    of `fs`; `endpoint` names an object store's server in messages."""
    if isinstance(fs, LocalFileSystem):
        return LocalBackend(root, fs)
    known = [
        OBJECT_STORE_BACKENDS[name] for name in protocols_of(fs) if name in OBJECT_STORE_BACKENDS
    ]
    backend = known[0] if known else ObjectStoreBackend
    return backend(root, fs, endpoint)
