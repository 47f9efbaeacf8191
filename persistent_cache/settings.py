"""Every setting of the persistent cache service: one frozen object built once from the environment.

Redis names follow Stigg's persistent-cache-service (``REDIS_*``, ``KEYS_TTL_IN_SECS``) so an
existing deployment's values carry over. Problems are collected and reported together so an
operator fixes a bad deployment in one round. ``docs/persistent-cache.md`` holds the table
rendered by :func:`render_env_table` (a test keeps it fresh).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected a boolean (1/0, true/false), got {raw!r}")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {raw!r}") from None
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _ttl(raw: str) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(f"expected a whole number of seconds, got {raw!r}") from None
    if value == 0:
        # Stigg's PCS treats 0 inconsistently; here it would expire every key at once.
        raise ValueError("0 would expire every key at once; use a negative value for no expiry")
    return value


def _positive_float(raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number, got {raw!r}")
    return value


def _str(raw: str) -> str:
    return raw.strip()


def _name(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {raw!r}")
    return value


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {raw!r}")
    return value


def _log_level(raw: str) -> str:
    value = raw.strip().lower()
    if value == "warning":
        value = "warn"
    if value not in ("debug", "info", "warn", "error"):
        raise ValueError(f"expected one of error, warn, info, debug; got {raw!r}")
    return value


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("auto", "json", "console"):
        raise ValueError(f"expected auto, json or console; got {raw!r}")
    return value


def default_consumer_name() -> str:
    # Unique per process, so a restarted pod never inherits a dead process's pending entries
    # by accident: those are reclaimed explicitly after CLAIM_IDLE_MS.
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Spec:
    env: str
    attr: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str


SPECS: tuple[Spec, ...] = (
    Spec("REDIS_HOST", "redis_host", _name, "localhost", "Cache Redis host."),
    Spec("REDIS_PORT", "redis_port", _int_in(1, 65535), "6379", "Cache Redis port."),
    Spec("REDIS_DB", "redis_db", _int_in(0, 1 << 20), "0", "Cache Redis database (0 in cluster)."),
    Spec("REDIS_USERNAME", "redis_username", _str, "", "Redis ACL user name (empty: none)."),
    Spec("REDIS_PASSWORD", "redis_password", _str, "", "Redis password (empty: none)."),
    Spec("REDIS_TLS", "redis_tls", _bool, "0", "Connect to the cache Redis over TLS."),
    Spec(
        "REDIS_CLUSTER",
        "redis_cluster",
        _bool,
        "0",
        "The cache Redis is a Redis Cluster (`REDIS_HOST`/`REDIS_PORT` is any seed node).",
    ),
    Spec(
        "REDIS_ENVIRONMENT_PREFIX",
        "environment_prefix",
        _name,
        None,
        "Required. Key prefix; must match upstream's and every sidecar's.",
    ),
    Spec(
        "KEYS_TTL_IN_SECS",
        "keys_ttl_seconds",
        _ttl,
        "604800",
        "TTL of every cache key, refreshed on each write. Negative: keys never expire. "
        "`0` is rejected.",
    ),
    Spec(
        "EVENTS_REDIS_URL",
        "events_redis_url",
        _redis_url,
        "",
        "Redis holding upstream's change stream `{prefix}:changes` (empty: the cache Redis).",
    ),
    Spec(
        "CONSUMER_GROUP",
        "consumer_group",
        _name,
        "persistent-cache",
        "Consumer group shared by every replica; each entry goes to one replica.",
    ),
    Spec(
        "CONSUMER_NAME",
        "consumer_name",
        _name,
        None,
        "This replica's consumer name. Default: `<hostname>-<pid>`.",
    ),
    Spec(
        "BATCH_SIZE",
        "batch_size",
        _int_in(1, 10_000),
        "500",
        "Entries read, and written in one pipeline, per batch.",
    ),
    Spec(
        "BLOCK_MS",
        "block_ms",
        _int_in(1, 60_000),
        "1000",
        "Longest wait for new entries per read; also bounds how long SIGTERM takes.",
    ),
    Spec(
        "CLAIM_IDLE_MS",
        "claim_idle_ms",
        _int_in(1, 86_400_000),
        "30000",
        "Entries pending this long on another consumer (a dead replica) are claimed and applied.",
    ),
    Spec(
        "API_URL",
        "api_url",
        _http_url,
        "http://127.0.0.1:8787",
        "Upstream API base URL, for full resyncs (`/v1/snapshot`, `/v1/changes`).",
    ),
    Spec(
        "SERVER_API_KEY",
        "api_key",
        _name,
        None,
        "Required. Sent to upstream as `X-API-KEY`; also guards `POST /resync`.",
    ),
    Spec(
        "EPOCH_CHECK_SECONDS",
        "epoch_check_seconds",
        _positive_float,
        "5",
        "How often to check for a lost cache (epoch key gone) or a stream gap.",
    ),
    Spec("HTTP_PORT", "http_port", _int_in(0, 65535), "8080", "HTTP side port."),
    Spec(
        "HTTP_BIND_ADDRESS",
        "http_bind_address",
        _str,
        "0.0.0.0",
        "HTTP side port address (all interfaces, so probes and scrapers reach it).",
    ),
    Spec("LOG_LEVEL", "log_level", _log_level, "info", "`error`, `warn`, `info` or `debug`."),
    Spec(
        "LOG_FORMAT",
        "log_format",
        _log_format,
        "auto",
        "`json`, `console`, or `auto` (JSON unless stderr is a terminal).",
    ),
)


REQUIRED = ("REDIS_ENVIRONMENT_PREFIX", "SERVER_API_KEY")


@dataclass(frozen=True)
class Settings:
    environment_prefix: str
    api_key: str
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_username: str = ""
    redis_password: str = ""
    redis_tls: bool = False
    redis_cluster: bool = False
    keys_ttl_seconds: int = 604_800
    events_redis_url: str = ""
    consumer_group: str = "persistent-cache"
    consumer_name: str = field(default_factory=default_consumer_name)
    batch_size: int = 500
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    api_url: str = "http://127.0.0.1:8787"
    epoch_check_seconds: float = 5.0
    http_port: int = 8080
    http_bind_address: str = "0.0.0.0"
    log_level: str = "info"
    log_format: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for spec in SPECS:
            raw = env.get(spec.env, spec.default)
            if raw is None:
                continue
            try:
                values[spec.attr] = spec.parse(raw)
            except ValueError as exc:
                problems.append(f"{spec.env}: {exc}")
        problems += [f"{name}: is required" for name in REQUIRED if name not in env]
        if values.get("redis_cluster") and values.get("redis_db", 0) != 0:
            problems.append("REDIS_DB: Redis Cluster only has database 0")
        if problems:
            raise SettingsError(problems)
        return cls(**values)


def render_env_table() -> str:
    """The configuration table of docs/persistent-cache.md."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for spec in SPECS:
        if spec.default is None:
            default = "(see meaning)"
        elif spec.default == "":
            default = "(empty)"
        else:
            default = f"`{spec.default}`"
        rows.append(f"| `{spec.env}` | {default} | {spec.doc} |")
    return "\n".join(rows)
