"""Typed settings from the environment (docs/contract.md §5), shared by the CLI and Dagster.

Defaults live here, not in Dagster `EnvVar`s: an `EnvVar` fails when its variable is unset,
even for optional fields. Secrets never appear in `repr`/`str` of the settings.
"""

import datetime as dt
import os
import re
from collections.abc import Mapping
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
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


class SettingsError(ValueError):
    """An environment variable has a value the platform cannot use."""


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise SettingsError(f"{name} must be true or false, got {raw!r}")


def _positive(name: str, raw: str, kind: type[int] | type[float]) -> float:
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a positive {kind.__name__}, got {raw!r}") from None
    if value <= 0:
        raise SettingsError(f"{name} must be a positive {kind.__name__}, got {raw!r}")
    return value


def _port(name: str, raw: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PORT:
        raise SettingsError(f"{name} must be a TCP port (1-{MAX_PORT}), got {raw!r}")
    return int(raw)


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


def _quantity(name: str, raw: str, units: Mapping[str, int], example: str) -> float:
    """A positive number with an optional unit suffix (`12h`, `10g`); plain numbers are in
    the base unit (seconds, bytes)."""
    match = _QUANTITY.fullmatch(raw.strip().lower())
    if match is None or match.group(2) not in units or float(match.group(1)) <= 0:
        raise SettingsError(f"{name} must be a positive amount like {example}, got {raw!r}")
    return float(match.group(1)) * units[match.group(2)]


def duration_s(name: str, raw: str) -> float:
    """Seconds of `7d`, `12h`, `30m`, `45s` or a plain number of seconds."""
    return _quantity(name, raw, DURATION_UNITS_S, "7d, 12h, 30m or 3600")


def size_bytes(name: str, raw: str) -> int:
    """Bytes of `10GB`, `512M`, `1TiB` or a plain number of bytes (units are powers of 1024)."""
    return int(_quantity(name, raw, SIZE_UNITS, "10GB, 512M or 1073741824"))


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

    def __post_init__(self) -> None:
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
        for name, kind in (
            ("BRONZE_MAX_EVENTS", int),
            ("BRONZE_MAX_AGE_S", float),
            ("GOLD_MAX_EVENTS", int),
            ("GOLD_MAX_AGE_S", float),
            ("BRONZE_MAX_OPEN_BUFFERS", int),
        ):
            if raw := get(name):
                values[name.lower()] = _positive(name, raw, kind)
        if raw := get("LAKE_AUTOMATION_LOOKBACK_H"):
            values["automation_lookback_hours"] = _positive("LAKE_AUTOMATION_LOOKBACK_H", raw, int)
        if raw := get("LAKE_PARTITIONS_START"):
            values["partitions_start"] = _partition_start(raw)
        if raw := get("NATS_STREAM_MAX_AGE"):
            values["nats_stream_max_age_s"] = duration_s("NATS_STREAM_MAX_AGE", raw)
        if raw := get("NATS_STREAM_MAX_BYTES"):
            values["nats_stream_max_bytes"] = size_bytes("NATS_STREAM_MAX_BYTES", raw)
        if raw := get("BRONZE_MAX_BUFFER_BYTES"):
            values["bronze_max_buffer_bytes"] = size_bytes("BRONZE_MAX_BUFFER_BYTES", raw)
        if raw := get("NATS_STREAM_REPLICAS"):
            values["nats_stream_replicas"] = _positive("NATS_STREAM_REPLICAS", raw, int)
        if raw := get("LAKE_METRICS_PORT"):
            values["metrics_port"] = _port("LAKE_METRICS_PORT", raw)
        if raw := get("LAKE_METRICS_HOST"):
            values["metrics_host"] = raw
        return cls(**values)  # type: ignore[arg-type]

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
            elif f.name == "s3_endpoint" and value:
                value = redact_url(value)
            shown[f.name] = value
        return shown

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in self.public().items())
        return f"LakeSettings({shown})"

    __str__ = __repr__
