"""Content-addressed names of Silver and Gold data files.

`part-{NNNNN}-{first 16 hex of the file's SHA-256}.parquet`: the same rows give the same
name and bytes, a rebuild whose output is unchanged adds no file, and no path ever changes
its bytes (an older snapshot may still reference it).
"""

import hashlib

DIGEST_CHARS = 16


def content_name(body: bytes, index: int) -> str:
    """The name of the `index`-th file of a value-hour whose bytes are `body`."""
    return content_name_for_digest(hashlib.sha256(body).hexdigest(), index)


def content_name_for_digest(sha256_hex: str, index: int) -> str:
    """`content_name` of a file whose SHA-256 (hex) was taken while writing it."""
    if len(sha256_hex) < DIGEST_CHARS:
        raise ValueError(f"a SHA-256 in hex has 64 digits, got {sha256_hex!r}")
    return f"part-{index:05d}-{sha256_hex[:DIGEST_CHARS].lower()}.parquet"
