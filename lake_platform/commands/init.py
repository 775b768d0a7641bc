"""`lake-platform init`: the idempotent set-up a deployment runs once before its services.

It creates what is missing and leaves what exists as it is, printing one line per thing:
`created …` or `exists …` (`migrated …` when the Dagster storage schema was upgraded). The
streams and consumers are made by the same functions the ingest uses, so `init` and a
first ingest make identical ones; the Iceberg tables likewise (`ensure_table`, which the
writers also call on first use). A second run prints only `exists` lines.
"""

import asyncio
import contextlib
import io
import os
from collections.abc import Callable
from urllib.parse import unquote

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from lake_platform.derived.registry import CATALOG_TABLES
from lake_platform.ingest.connection import connect
from lake_platform.ingest.jetstream import (
    DURABLE,
    ConsumerSizing,
    ensure_consumers,
    ensure_streams,
    retrying,
)
from lake_platform.schemas import STREAMS
from lake_platform.settings import SECRET_MASK, LakeSettings, redact_url
from lake_platform.storage import LakeStore, StorageError
from lake_platform.storage.store import storage_error_kind
from lake_platform.tables.catalog import (
    CATALOG_NAME,
    CatalogError,
    catalog_uri,
    open_catalog,
    root_url,
)
from lake_platform.tables.identifiers import table_identifier
from lake_platform.tables.registry import ensure_table

COMPUTE_LOG_BUCKET_ENV = "DAGSTER_COMPUTE_LOG_BUCKET"
AWS_DEFAULT_REGION = "us-east-1"
Say = Callable[[str], None]
CATALOG_TABLE = "iceberg_tables"
"""The SQL catalog's table of Iceberg tables: present once the catalog was created."""
MAINTENANCE_DATABASE = "postgres"
"""The PostgreSQL database connected to for creating a missing catalog database."""
CONNECT_TIMEOUT_S = 10


def run_init(say: Say = print) -> int:
    """Set up the lake, the Iceberg catalog and tables, the streams and consumers, and the
    Dagster storage."""
    settings = LakeSettings.from_env()
    init_lake(settings, say)
    init_catalog(settings, say)
    asyncio.run(init_nats(settings, say))
    init_dagster(say)
    return 0


def _state(existed: bool) -> str:
    return "exists" if existed else "created"


def init_lake(settings: LakeSettings, say: Say) -> None:
    """The lake folder, or on S3 the lake's bucket and `DAGSTER_COMPUTE_LOG_BUCKET` (made with
    the lake's S3 endpoint and credentials; ignored with a local lake)."""
    store = LakeStore.from_settings(settings)
    if store.is_local:
        existed = os.path.isdir(store.root)
        store.check_access()
        say(f"{_state(existed)} lake folder {store.root}")
        sweep_leftovers(store, say)
        return
    buckets = [store.root.split("/", 1)[0]]
    if (logs := os.environ.get(COMPUTE_LOG_BUCKET_ENV, "").strip()) and logs not in buckets:
        buckets.append(logs)
    for bucket in buckets:
        try:
            existed = store.fs.exists(bucket)
            if not existed:
                _create_bucket(store, bucket, settings.s3_region)
        except Exception as error:
            detail = str(error) or type(error).__name__
            for hidden in (settings.s3_secret_key, settings.s3_access_key):
                detail = detail.replace(hidden, SECRET_MASK) if hidden else detail
            raise StorageError(
                f"cannot create bucket {bucket} at {store.endpoint}: {detail}",
                storage_error_kind(error),
            ) from None
        say(f"{_state(existed)} bucket {bucket} at {store.endpoint}")
    store.check_access()
    sweep_leftovers(store, say)


def sweep_leftovers(store: LakeStore, say: Say) -> None:
    """Remove what killed writes left (`LakeStore.sweep_temporaries`); one line when any.

    A store that does not answer now is said in one line and left for the next start: the
    sweep is housekeeping, and the command's own retries deal with the outage.
    """
    try:
        swept = len(store.sweep_temporaries())
    except StorageError as error:
        if error.kind != "transient":
            raise
        say(f"leftovers of interrupted writes not swept now: {error}")
        return
    if swept:
        what = "temporary file" if store.is_local else "unfinished upload"
        plural = "" if swept == 1 else "s"
        hours = store.temporary_max_age_s / 3_600
        say(f"removed {swept} {what}{plural} older than {hours:g} h left by interrupted writes")


def _create_bucket(store: LakeStore, bucket: str, region: str | None) -> None:
    """Create `bucket`; AWS refuses a location constraint naming its default region."""
    params: dict[str, object] = {"Bucket": bucket}
    if region and region != AWS_DEFAULT_REGION:
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    store.fs.call_s3("create_bucket", **params)
    store.fs.invalidate_cache(bucket)


def init_catalog(settings: LakeSettings, say: Say) -> None:
    """The Iceberg catalog `lake` and every derived table (Silver, Gold) in it.

    A catalog on PostgreSQL whose database is missing (the deployment's `iceberg`) gets it
    created first, so a deployment whose PostgreSQL volume predates the catalog needs no step
    by hand. A catalog that cannot be reached fails in one line, its URL's password masked.
    """
    uri = catalog_uri(settings)
    existed = _prepare_catalog_database(uri)
    catalog = open_catalog(settings)
    say(f"{_state(existed)} iceberg catalog {CATALOG_NAME} at {redact_url(uri)}")
    root = root_url(settings)
    for table in CATALOG_TABLES:
        identifier = table_identifier(table.target)
        existed = catalog.table_exists(identifier)
        location = ensure_table(catalog, root, table).location()
        say(f"{_state(existed)} iceberg table {identifier} at {location}")


def _prepare_catalog_database(uri: str) -> bool:
    """Whether the catalog's tables exist in its database, a missing PostgreSQL database
    created (then False)."""
    try:
        url = make_url(uri)
        try:
            return _has_catalog_tables(url)
        except OperationalError:
            if url.get_backend_name() != "postgresql" or _database_exists(url):
                raise
            _create_database(url)
            return False
    except SQLAlchemyError as error:
        raise _catalog_error(uri, error) from None


def _engine_for(url: URL, **options: object) -> Engine:
    """An engine for `url` that gives up on an unreachable PostgreSQL after a bound."""
    if url.get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return create_engine(url, **options)


def _has_catalog_tables(url: URL) -> bool:
    engine = _engine_for(url)
    try:
        with engine.connect() as connection:
            return inspect(connection).has_table(CATALOG_TABLE)
    finally:
        engine.dispose()


def _database_exists(url: URL) -> bool:
    """Whether `url`'s database exists on its server (asked in the maintenance database)."""
    engine = _engine_for(url.set(database=MAINTENANCE_DATABASE))
    try:
        with engine.connect() as connection:
            query = text("SELECT 1 FROM pg_database WHERE datname = :name")
            return connection.execute(query, {"name": url.database}).first() is not None
    finally:
        engine.dispose()


def _create_database(url: URL) -> None:
    """CREATE DATABASE (outside a transaction, as PostgreSQL requires)."""
    engine = _engine_for(url.set(database=MAINTENANCE_DATABASE), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            name = engine.dialect.identifier_preparer.quote(url.database or "")
            connection.execute(text(f"CREATE DATABASE {name}"))
    finally:
        engine.dispose()


def _catalog_error(uri: str, error: SQLAlchemyError) -> CatalogError:
    """One line naming the catalog (password masked) and the database's first error line."""
    detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
    detail = detail.replace(uri, redact_url(uri))
    user_info = uri.partition("://")[2].rpartition("@")[0]
    raw_password = user_info.partition(":")[2]
    for hidden in {raw_password, unquote(raw_password)} - {""}:
        detail = detail.replace(hidden, SECRET_MASK)
    return CatalogError(f"cannot open the Iceberg catalog at {redact_url(uri)}: {detail}")


async def init_nats(settings: LakeSettings, say: Say) -> None:
    """The streams (replicas and retention of the settings) and the durable consumers."""
    nc = await connect(settings, name="lake-platform init")
    try:
        js = nc.jetstream()
        streams_before = {name: await _stream_exists(js, name) for name in STREAMS}
        await ensure_streams(js, settings)
        for name, existed in streams_before.items():
            config = (await retrying(f"stream {name}", js.stream_info, name)).config
            max_bytes = "unlimited" if (config.max_bytes or -1) < 0 else f"{config.max_bytes} B"
            say(
                f"{_state(existed)} stream {name} (replicas {config.num_replicas}, "
                f"max age {config.max_age:.0f} s, max bytes {max_bytes})"
            )
        consumers_before = {name: await _consumer_exists(js, name) for name in STREAMS}
        await ensure_consumers(js, ConsumerSizing.for_settings(settings))
        for name, existed in consumers_before.items():
            say(f"{_state(existed)} consumer {name}/{DURABLE}")
    finally:
        await nc.close()


async def _stream_exists(js: JetStreamContext, name: str) -> bool:
    """Whether stream `name` exists; asked again while JetStream elects a leader (bounded)."""
    try:
        await retrying(f"stream {name}", js.stream_info, name)
    except NotFoundError:
        return False
    return True


async def _consumer_exists(js: JetStreamContext, stream: str) -> bool:
    """Whether the durable consumer of `stream` exists (asked again during an election)."""
    try:
        await retrying(f"consumer {stream}/{DURABLE}", js.consumer_info, stream, DURABLE)
    except NotFoundError:
        return False
    return True


def init_dagster(say: Say) -> None:
    """`dagster instance migrate` for the instance of `DAGSTER_HOME` (nothing when unset).

    Opening the instance creates missing tables at the latest schema; `upgrade` migrates an
    older schema. Its progress lines are not shown: only whether the schema changed.
    """
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:
        say("skipped dagster storage: DAGSTER_HOME is not set")
        return
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        before = instance.schema_str()
        with contextlib.redirect_stdout(io.StringIO()):  # SQLite storages print progress
            instance.upgrade()
        changed = instance.schema_str() != before
    say(f"{'migrated' if changed else 'exists'} dagster storage of {home} (schema up to date)")
