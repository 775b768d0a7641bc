"""Typed settings from the environment (docs/contract.md §5), shared by the CLI and Dagster.

Defaults live here, not in Dagster `EnvVar`s: an `EnvVar` fails when its variable is unset,
even for optional fields. Secrets never appear in `repr`/`str` of the settings.
"""

import datetime as dt
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

PARTITION_KEY_FORMAT = "%Y-%m-%d-%H:%M"
SECRET_MASK = "***"
DEFAULT_STREAM_MAX_AGE_S = 7 * 24 * 3_600.0
DEFAULT_BRONZE_MAX_BUFFER_BYTES = 256 * 2**20
DURATION_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
SIZE_UNITS = {
    f"{prefix}{suffix}": 2 ** (10 * power)
    for power, prefix in enumerate(("", "k", "m", "g", "t"))
    for suffix in ("", "b", "ib")
    if prefix or suffix != "ib"
}
MAX_PORT = 65_535
MAX_BATCH_EVENTS = 1_000_000
MAX_BATCH_AGE_S = 86_400.0
"""A day: held messages get in-progress acks, but a micro-batch older than that is a mistake
(and `ack_wait`, 6 × the age in nanoseconds, must fit JetStream's int64)."""
MAX_OPEN_BUFFERS = 10_000_000
MAX_LOOKBACK_HOURS = 87_600
MAX_DAILY_TAGS = 36_500
MAX_STREAM_REPLICAS = 5
"""JetStream's limit on stream replicas."""
MAX_STREAM_AGE_S = 36_500 * 86_400
"""A century: JetStream takes `max_age` in int64 nanoseconds (~292 years)."""
MAX_SIZE_BYTES = 2**63 - 1
SIZE_RANGE = "a size from 1 byte to 8EiB like 10GB, 512M or 1073741824"
DURATION_RANGE = "a duration from 1s to 36500d like 7d, 12h, 30m or 3600"
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)")
_WHOLE = re.compile(r"[0-9]+")


class SettingsError(ValueError):
    """An environment variable has a value the platform cannot use."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _partition_start(raw: str) -> dt.datetime:
    try:
        start = dt.datetime.strptime(raw, PARTITION_KEY_FORMAT)
    except ValueError:
        raise SettingsError(
            f"LAKE_PARTITIONS_START must look like 2024-01-01-00:00, got {raw!r}"
        ) from None
    if start.minute:
        raise SettingsError(f"LAKE_PARTITIONS_START must be a whole hour, got {raw!r}")
    return start.replace(tzinfo=dt.UTC)


def _whole(raw: str) -> int:
    """An unsigned decimal integer in ASCII digits (`int()` also takes `١٢`, `1_0`, `-3`)."""
    if _WHOLE.fullmatch(raw) is None:
        raise ValueError(raw)
    return int(raw)


def _quantity(raw: str, units: Mapping[str, int]) -> float:
    """A number with an optional unit suffix (`12h`, `10g`); plain numbers are in the base
    unit (seconds, bytes)."""
    match = _QUANTITY.fullmatch(raw.strip().lower())
    if match is None or match.group(2) not in units:
        raise ValueError(raw)
    return float(match.group(1)) * units[match.group(2)]


def _duration(raw: str) -> float:
    return _quantity(raw, DURATION_UNITS_S)


def _size(raw: str) -> int:
    amount = _quantity(raw, SIZE_UNITS)
    if not math.isfinite(amount):
        raise ValueError(raw)
    return int(amount)


@dataclass(frozen=True)
class NumberRule:
    """How one numeric setting is written and the range it accepts.

    The range is checked on the parsed value, whether it came from the environment or from
    code, so `nan`, `inf`, zero and negative values never reach the ingest.
    """

    variable: str
    parse: Callable[[str], float]
    low: float
    high: float
    accepts: str
    low_excluded: bool = False

    def read(self, raw: str) -> float:
        """The value of the variable's text `raw`, or a `SettingsError` naming the range."""
        try:
            value = self.parse(raw)
        except (ValueError, OverflowError):
            raise self.error(raw) from None
        self.check(value, raw)
        return value

    def check(self, value: float, shown: object) -> None:
        """Raise a `SettingsError` unless `value` is a finite number inside the range."""
        above_low = value > self.low if self.low_excluded else value >= self.low
        if not (math.isfinite(value) and above_low and value <= self.high):
            raise self.error(shown)

    def error(self, shown: object) -> SettingsError:
        return SettingsError(f"{self.variable} must be {self.accepts}, got {shown!r}")


MAX_ASOF_AGE_S = 3600
MAX_OPTION_MULTIPLIER = 1_000_000


def _count(variable: str, high: int) -> NumberRule:
    return NumberRule(variable, _whole, 1, high, f"a whole number from 1 to {high}")


def _seconds(variable: str, high: float) -> NumberRule:
    return NumberRule(
        variable, float, 0, high, f"a number of seconds above 0 and at most {high:g}", True
    )


NUMBER_RULES: dict[str, NumberRule] = {
    "bronze_max_events": _count("BRONZE_MAX_EVENTS", MAX_BATCH_EVENTS),
    "bronze_max_age_s": _seconds("BRONZE_MAX_AGE_S", MAX_BATCH_AGE_S),
    "gold_max_events": _count("GOLD_MAX_EVENTS", MAX_BATCH_EVENTS),
    "gold_max_age_s": _seconds("GOLD_MAX_AGE_S", MAX_BATCH_AGE_S),
    "bronze_max_open_buffers": _count("BRONZE_MAX_OPEN_BUFFERS", MAX_OPEN_BUFFERS),
    "bronze_max_buffer_bytes": NumberRule(
        "BRONZE_MAX_BUFFER_BYTES", _size, 1, MAX_SIZE_BYTES, SIZE_RANGE
    ),
    "automation_lookback_hours": _count("LAKE_AUTOMATION_LOOKBACK_H", MAX_LOOKBACK_HOURS),
    "nats_stream_max_age_s": NumberRule(
        "NATS_STREAM_MAX_AGE", _duration, 1, MAX_STREAM_AGE_S, DURATION_RANGE
    ),
    "nats_stream_max_bytes": NumberRule(
        "NATS_STREAM_MAX_BYTES", _size, 1, MAX_SIZE_BYTES, SIZE_RANGE
    ),
    "nats_stream_replicas": _count("NATS_STREAM_REPLICAS", MAX_STREAM_REPLICAS),
    "snapshot_retention_s": NumberRule(
        "LAKE_SNAPSHOT_RETENTION", _duration, 1, MAX_STREAM_AGE_S, DURATION_RANGE
    ),
    "asof_max_age_s": NumberRule(
        "LAKE_ASOF_MAX_AGE", _duration, 0, MAX_ASOF_AGE_S, "a duration from 0 to 1h (3600 s)"
    ),
    "option_multiplier": NumberRule(
        "LAKE_OPTION_MULTIPLIER",
        _whole,
        1,
        MAX_OPTION_MULTIPLIER,
        f"a whole number from 1 to {MAX_OPTION_MULTIPLIER}",
    ),
    "daily_tags": NumberRule(
        "LAKE_DAILY_TAGS", _whole, 0, MAX_DAILY_TAGS, f"a whole number from 0 to {MAX_DAILY_TAGS}"
    ),
    "metrics_port": NumberRule(
        "LAKE_METRICS_PORT", _whole, 1, MAX_PORT, f"a TCP port (1-{MAX_PORT})"
    ),
}
"""Every numeric field of `LakeSettings` with its variable and accepted range."""


def redact_url(url: str) -> str:
    """`url` with everything before its last `@` after the scheme masked.

    Cutting at the *last* `@` masks a password holding `@`, `:`, `/`, `?`, `#` or `%40` whole
    (a URL parser would end the user info at the first `/`); an `@` later in a path only masks
    more than needed, never less.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return f"{scheme}{separator}{SECRET_MASK}@{rest.rpartition('@')[2]}"


URL_FIELDS = ("s3_endpoint", "catalog_uri")
"""Fields holding one URL whose user info may carry a credential: shown through `redact_url`."""


def secret(**kwargs: object) -> object:
    """A settings field holding a credential: masked in repr and metadata."""
    return field(metadata={"secret": True}, **kwargs)  # type: ignore[call-overload]


@dataclass(frozen=True)
class LakeSettings:
    """Every setting of the platform, resolved and validated."""

    data_root: str = "./data/lake"
    use_s3: bool = False
    s3_endpoint: str | None = None
    s3_access_key: str | None = secret(default=None)
    s3_secret_key: str | None = secret(default=None)
    s3_region: str | None = None
    nats_servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    nats_user: str | None = None
    nats_password: str | None = secret(default=None)
    nats_token: str | None = secret(default=None)
    nats_creds: str | None = None
    nats_tls_ca: str | None = None
    bronze_max_events: int = 1000
    bronze_max_age_s: float = 5.0
    gold_max_events: int = 500
    gold_max_age_s: float = 10.0
    bronze_max_open_buffers: int = 50_000
    bronze_max_buffer_bytes: int = DEFAULT_BRONZE_MAX_BUFFER_BYTES
    partitions_start: dt.datetime = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    automation_lookback_hours: int = 48
    nats_stream_max_age_s: float = DEFAULT_STREAM_MAX_AGE_S
    nats_stream_max_bytes: int | None = None
    nats_stream_replicas: int = 1
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    catalog_uri: str | None = None
    """LAKE_CATALOG_URI, the Iceberg catalog's SQLAlchemy URL; it may hold a password, so it
    is shown only through `redact_url`."""
    snapshot_retention_s: float = 3600.0
    """LAKE_SNAPSHOT_RETENTION: untagged Iceberg snapshots older than this expire."""
    daily_tags: int = 7
    asof_max_age_s: float = 3600.0
    """LAKE_ASOF_MAX_AGE: the oldest quote or greeks snapshot an as-of Gold row joins (at most
    the hour before: the previous hour partition is all the enrichment reads)."""
    option_multiplier: int = 100
    """LAKE_OPTION_MULTIPLIER: shares per option contract, in `delta_notional`."""
    """LAKE_DAILY_TAGS: automatic `day-YYYY-MM-DD` tags kept per table (0: none made)."""
    duckdb_path: str | None = None
    """LAKE_DUCKDB_PATH: the DuckDB warehouse file the `serving/duckdb` asset writes; see
    `warehouse_path`."""

    @property
    def asof_max_age_ns(self) -> int:
        """`asof_max_age_s` in nanoseconds, as the as-of transforms take it."""
        return round(self.asof_max_age_s * 10**9)

    def __post_init__(self) -> None:
        for name, rule in NUMBER_RULES.items():
            value = getattr(self, name)
            if value is not None:
                rule.check(value, value)
        is_s3_root = self.data_root.startswith("s3://")
        if self.use_s3 and not is_s3_root:
            raise SettingsError(
                f"USE_S3=true needs DATA_ROOT=s3://bucket/prefix, got DATA_ROOT={self.data_root}"
            )
        if is_s3_root and not self.use_s3:
            raise SettingsError("DATA_ROOT is an s3:// URL: set USE_S3=true to use S3")
        if is_s3_root and len(self.data_root) <= len("s3://"):
            raise SettingsError("DATA_ROOT=s3:// needs a bucket name")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "LakeSettings":
        """Settings from environment variables; unset or empty ones take their default."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        values: dict[str, object] = {
            "s3_endpoint": get("S3_ENDPOINT"),
            "s3_access_key": get("S3_ACCESS_KEY"),
            "s3_secret_key": get("S3_SECRET_KEY"),
            "s3_region": get("S3_REGION"),
            "nats_user": get("NATS_USER"),
            "nats_password": get("NATS_PASSWORD"),
            "nats_token": get("NATS_TOKEN"),
            "nats_creds": get("NATS_CREDS"),
            "nats_tls_ca": get("NATS_TLS_CA"),
            "catalog_uri": get("LAKE_CATALOG_URI"),
            "duckdb_path": get("LAKE_DUCKDB_PATH"),
        }
        if raw := get("DATA_ROOT"):
            values["data_root"] = raw
        if raw := get("USE_S3"):
            values["use_s3"] = _bool("USE_S3", raw)
        if raw := get("NATS_URL"):
            servers = tuple(url.strip() for url in raw.split(",") if url.strip())
            if not servers:
                raise SettingsError(f"NATS_URL has no server in {raw!r}")
            values["nats_servers"] = servers
        for name, rule in NUMBER_RULES.items():
            if raw := get(rule.variable):
                values[name] = rule.read(raw)
        if raw := get("LAKE_PARTITIONS_START"):
            values["partitions_start"] = _partition_start(raw)
        if raw := get("LAKE_METRICS_HOST"):
            values["metrics_host"] = raw
        return cls(**values)  # type: ignore[arg-type]

    @property
    def warehouse_path(self) -> str:
        """LAKE_DUCKDB_PATH, by default next to a local lake (`./data/lake` →
        `./data/lake.duckdb`); a lake on S3 needs it set (a DuckDB file is local)."""
        if self.duckdb_path:
            return self.duckdb_path
        if self.use_s3:
            raise SettingsError("LAKE_DUCKDB_PATH is required when DATA_ROOT is on S3")
        return f"{self.data_root.rstrip('/')}.duckdb"

    @property
    def partitions_start_key(self) -> str:
        """LAKE_PARTITIONS_START as a partition key (`2024-01-01-00:00`)."""
        return self.partitions_start.strftime(PARTITION_KEY_FORMAT)

    def public(self) -> dict[str, object]:
        """The settings as a dict safe to log or show: secrets and URL passwords masked."""
        shown: dict[str, object] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("secret") and value:
                value = SECRET_MASK
            elif f.name == "nats_servers":
                value = tuple(redact_url(url) for url in value)
            elif f.name in URL_FIELDS and value:
                value = redact_url(value)
            shown[f.name] = value
        return shown

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.public().items())
        return f"LakeSettings({shown})"

    __str__ = __repr__
