"""`StorageError`: every failure of the lake's storage, with a `kind` telling the caller
what to do; and the classification of OS errors that every backend shares."""

import errno
from typing import Literal

StorageErrorKind = Literal["transient", "rejected", "denied"]

LOCAL_REJECTED_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EILSEQ})
"""A name the local filesystem refuses; a vanished folder or mount is transient, not this."""
LOCAL_DENIED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


class StorageError(RuntimeError):
    """The lake's storage failed; nothing of the failed operation was committed.

    `kind` is `transient` (unreachable, timeout, 5xx, slow down, disk full: retry later),
    `rejected` (the store refuses this object, e.g. a name too long: retrying never helps), or
    `denied` (credentials, permissions or a missing bucket: an operator must act).
    """

    def __init__(self, message: str, kind: StorageErrorKind = "transient") -> None:
        super().__init__(message)
        self.kind: StorageErrorKind = kind


def os_error_kind(error: BaseException) -> StorageErrorKind:
    """What an exception means by its `errno`: a refused name is `rejected`, missing
    permissions or a read-only filesystem `denied`, anything else `transient` (the ingest
    then keeps the messages and retries rather than losing them)."""
    if isinstance(error, OSError) and error.errno in LOCAL_REJECTED_ERRNOS:
        return "rejected"
    if isinstance(error, OSError) and error.errno in LOCAL_DENIED_ERRNOS:
        return "denied"
    return "transient"
