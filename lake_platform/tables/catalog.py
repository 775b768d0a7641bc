"""The lake's Iceberg catalog: pyiceberg's SQL catalog named `lake`.

Its database is `settings.catalog_uri` (`LAKE_CATALOG_URI`, a SQLAlchemy URL): by default, for
a local `DATA_ROOT`, the SQLite file `{DATA_ROOT}/_iceberg/catalog.db`; a lake on S3 needs a
shared database (the deployment's PostgreSQL), since a SQLite file cannot live in a bucket. Its
tables are those of Iceberg's JDBC catalog, so other engines can attach the same database.

Credentials (the URL's password, the S3 keys) go to pyiceberg only, never into a message.
"""

import os

from pyiceberg.catalog.sql import SqlCatalog

from lake_platform.settings import LakeSettings, SettingsError, redact_url
from lake_platform.tables.identifiers import ICEBERG_FOLDER

CATALOG_NAME = "lake"
CATALOG_URI_VARIABLE = "LAKE_CATALOG_URI"
SQLITE_FILE = "catalog.db"


def root_url(settings: LakeSettings) -> str:
    """The lake root as Iceberg paths start: an absolute local path or `s3://bucket/prefix`."""
    if settings.use_s3:
        return settings.data_root.rstrip("/")
    return os.path.abspath(settings.data_root)


def catalog_uri(settings: LakeSettings) -> str:
    """The settings' catalog URI, or the SQLite default of a local lake (its folder created)."""
    if settings.catalog_uri:
        return settings.catalog_uri
    if settings.use_s3:
        raise SettingsError(
            f"{CATALOG_URI_VARIABLE} is required when DATA_ROOT is on S3: a SQLAlchemy URL "
            "such as postgresql+psycopg2://user:password@host:5432/iceberg"
        )
    folder = os.path.join(root_url(settings), ICEBERG_FOLDER)
    os.makedirs(folder, exist_ok=True)
    return f"sqlite:///{folder}/{SQLITE_FILE}"


def file_io_properties(settings: LakeSettings) -> dict[str, str]:
    """pyiceberg FileIO properties reaching the lake's store (S3 endpoint, keys, region)."""
    if not settings.use_s3:
        return {}
    wanted = {
        "s3.endpoint": settings.s3_endpoint,
        "s3.access-key-id": settings.s3_access_key,
        "s3.secret-access-key": settings.s3_secret_key,
        "s3.region": settings.s3_region,
    }
    return {name: value for name, value in wanted.items() if value}


def open_catalog(settings: LakeSettings) -> SqlCatalog:
    """The catalog `lake` of the settings' lake; its own tables are created when missing.

    A database that cannot be reached fails with the URL's password masked.
    """
    uri = catalog_uri(settings)
    try:
        return SqlCatalog(
            CATALOG_NAME,
            uri=uri,
            warehouse=f"{root_url(settings)}/{ICEBERG_FOLDER}",
            **file_io_properties(settings),
        )
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        detail = without_secrets(f"{type(error).__name__}: {first_line}", uri, settings)
        shown = redact_url(uri)
        raise CatalogError(f"cannot open the Iceberg catalog at {shown}: {detail}") from None


class CatalogError(RuntimeError):
    """The catalog's database cannot be used (unreachable, refused, not a database)."""


def without_secrets(text: str, uri: str, settings: LakeSettings) -> str:
    """`text` with the catalog URL and every credential of the settings masked."""
    text = text.replace(uri, redact_url(uri))
    hidden = (settings.s3_secret_key, settings.s3_access_key, _password(uri))
    for value in hidden:
        if value:
            text = text.replace(value, "***")
    return text


def _password(uri: str) -> str | None:
    """The password of a `scheme://user:password@host/…` URL (cut at its last `@`)."""
    _, separator, rest = uri.partition("://")
    user_info = rest.rpartition("@")[0] if separator else ""
    return user_info.partition(":")[2] or None
