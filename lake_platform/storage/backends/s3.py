"""`S3Backend`: the lake in an S3 bucket (AWS or a compatible server), through s3fs.

What S3 adds to any object store: its error codes tell a refused object from missing
credentials from an outage, and multipart uploads a killed writer never completed stay
stored (and billed) until aborted, so `sweep_temporaries` aborts them.
"""

from typing import TYPE_CHECKING

from lake_platform.settings import LakeSettings, SettingsError
from lake_platform.storage.backends.object_store import ObjectStoreBackend
from lake_platform.storage.errors import StorageErrorKind, os_error_kind
from lake_platform.storage.paths import LAKE_KEY_MAX_BYTES

if TYPE_CHECKING:
    import s3fs

S3_REJECTED_CODES = frozenset(
    {
        "KeyTooLongError",
        "InvalidArgument",
        "InvalidObjectName",
        "InvalidURI",
        "EntityTooLarge",
        "MetadataTooLarge",
        "NoSuchKey",
    }
)
"""S3 error codes that refuse one object: retrying the same write or read never helps."""
S3_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccountProblem",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidBucketName",
        "InvalidToken",
        "NoSuchBucket",
        "SignatureDoesNotMatch",
    }
)
"""S3 error codes that need an operator: credentials, permissions, a missing bucket."""
BOTO_DENIED_ERRORS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "ParamValidationError"}
)
"""botocore errors raised before any request: missing credentials, an invalid bucket name."""
S3_KEY_MAX_BYTES = 1_024
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}}
"""Bounded waits: a store that stopped answering fails a call in seconds, and the caller's
own retry (with backoff) takes over, instead of one call hanging for minutes."""


class S3Backend(ObjectStoreBackend):
    """Objects below `bucket/prefix` of an `s3fs.S3FileSystem`."""

    def error_kind(self, error: BaseException) -> StorageErrorKind:
        return s3_error_kind(error)

    def sweep_temporaries(self, deadline: float) -> list[str]:
        """Abort the multipart uploads below the root started before `deadline` (S3 does
        not advance an upload's time with each part); their keys relative to the root."""
        bucket, _, prefix = self.root.partition("/")
        prefix = f"{prefix}/" if prefix else ""
        aborted = []
        markers: dict[str, str] = {}
        while True:
            page = self.fs.call_s3(
                "list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers
            )
            for upload in page.get("Uploads", []):
                if upload["Initiated"].timestamp() < deadline:
                    self.fs.call_s3(
                        "abort_multipart_upload",
                        Bucket=bucket,
                        Key=upload["Key"],
                        UploadId=upload["UploadId"],
                    )
                    aborted.append(upload["Key"].removeprefix(prefix))
            if not page.get("IsTruncated"):
                return sorted(aborted)
            markers = {
                "KeyMarker": page["NextKeyMarker"],
                "UploadIdMarker": page["NextUploadIdMarker"],
            }


def s3_error_kind(error: BaseException) -> StorageErrorKind:
    """What an exception of s3fs or botocore means (see `StorageError`): by the S3 error code
    in its cause chain, else by botocore's error class, else by its errno."""
    code = _s3_error_code(error)
    if code in S3_REJECTED_CODES:
        return "rejected"
    if code in S3_DENIED_CODES:
        return "denied"
    if code is not None:
        return "transient"
    if type(error).__name__ in BOTO_DENIED_ERRORS:
        return "denied"
    return os_error_kind(error)


def _s3_error_code(error: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError in the exception's cause chain."""
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
        seen = seen.__cause__ or seen.__context__
    return None


def s3_filesystem(settings: LakeSettings) -> "s3fs.S3FileSystem":
    """The S3 filesystem of the settings (endpoint, region, credentials, bounded waits);
    refuses a `DATA_ROOT` so long that the lake's longest keys would exceed S3's limit.
    s3fs is imported only here: a local lake never pays for importing it."""
    import s3fs

    prefix_bytes = len(settings.data_root.removeprefix("s3://").encode()) + 1
    if prefix_bytes + LAKE_KEY_MAX_BYTES >= S3_KEY_MAX_BYTES:
        raise SettingsError(
            f"DATA_ROOT is {prefix_bytes} bytes long: with the lake's own keys (up to "
            f"{LAKE_KEY_MAX_BYTES} bytes) it would exceed S3's {S3_KEY_MAX_BYTES}-byte limit"
        )
    client_kwargs = {"region_name": settings.s3_region} if settings.s3_region else {}
    return s3fs.S3FileSystem(
        key=settings.s3_access_key,
        secret=settings.s3_secret_key,
        endpoint_url=settings.s3_endpoint,
        client_kwargs=client_kwargs,
        config_kwargs=S3_CONFIG,
        skip_instance_cache=True,
        # s3fs would keep every listing forever and answer `ls`, `info` (and the size check of
        # `cat_file`) from it: a long-lived store would miss what other processes wrote since.
        use_listings_cache=False,
    )
