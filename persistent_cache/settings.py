"""Every setting of the persistent cache service: one frozen object built once from the environment.

Redis names follow Stigg's persistent-cache-service (``REDIS_*``, ``KEYS_TTL_IN_SECS``) so an
existing deployment's values carry over. Problems are collected and reported together so an
operator fixes a bad deployment in one round. ``docs/persistent-cache.md`` holds the table
rendered by :func:`render_env_table` (a test keeps it fresh).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from entitlements.envconfig import (
    LOGGING_SPECS,
    Spec,
    boolean,
    http_url,
    int_in,
    keys_ttl,
    non_empty,
    positive_float,
    read_env,
    render_table,
    text,
)
from entitlements.envconfig import (
    SettingsError as SettingsError,  # re-exported: callers catch it from here
)


def _redis_url(raw: str) -> str:
    value = raw.strip()
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {raw!r}")
    return value


def default_consumer_name() -> str:
    # Unique per process, so a restarted pod never inherits a dead process's pending entries
    # by accident: those are reclaimed explicitly after CLAIM_IDLE_MS.
    return f"{socket.gethostname()}-{os.getpid()}"


SPECS: tuple[Spec, ...] = (
    Spec("REDIS_HOST", "redis_host", non_empty, "localhost", "Cache Redis host."),
    Spec("REDIS_PORT", "redis_port", int_in(1, 65535), "6379", "Cache Redis port."),
    Spec("REDIS_DB", "redis_db", int_in(0, 1 << 20), "0", "Cache Redis database (0 in cluster)."),
    Spec("REDIS_USERNAME", "redis_username", text, "", "Redis ACL user name (empty: none)."),
    Spec("REDIS_PASSWORD", "redis_password", text, "", "Redis password (empty: none)."),
    Spec("REDIS_TLS", "redis_tls", boolean, "0", "Connect to the cache Redis over TLS."),
    Spec(
        "REDIS_CLUSTER",
        "redis_cluster",
        boolean,
        "0",
        "The cache Redis is a Redis Cluster (`REDIS_HOST`/`REDIS_PORT` is any seed node).",
    ),
    Spec(
        "REDIS_ENVIRONMENT_PREFIX",
        "environment_prefix",
        non_empty,
        None,
        "Required. Key prefix; must match upstream's and every sidecar's.",
    ),
    Spec(
        "KEYS_TTL_IN_SECS",
        "keys_ttl_seconds",
        keys_ttl,
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
        non_empty,
        "persistent-cache",
        "Consumer group shared by every replica; each entry goes to one replica.",
    ),
    Spec(
        "CONSUMER_NAME",
        "consumer_name",
        non_empty,
        None,
        "This replica's consumer name. Default: `<hostname>-<pid>`.",
    ),
    Spec(
        "BATCH_SIZE",
        "batch_size",
        int_in(1, 10_000),
        "500",
        "Entries read, and written in one pipeline, per batch.",
    ),
    Spec(
        "BATCHES_IN_FLIGHT",
        "batches_in_flight",
        int_in(1, 16),
        "4",
        "Batches read, written and acked at once by one replica, so the process decodes and"
        " packs some while Redis runs the others' writes (order never matters: every write is"
        " versioned).",
    ),
    Spec(
        "BLOCK_MS",
        "block_ms",
        int_in(1, 60_000),
        "1000",
        "Longest wait for new entries per read; also bounds how long SIGTERM takes.",
    ),
    Spec(
        "CLAIM_IDLE_MS",
        "claim_idle_ms",
        int_in(1, 86_400_000),
        "30000",
        "Entries pending this long on another consumer (a dead replica) are claimed and applied.",
    ),
    Spec(
        "API_URL",
        "api_url",
        http_url,
        "http://127.0.0.1:8787",
        "Upstream API base URL, for full resyncs (`/v1/snapshot`, `/v1/changes`).",
    ),
    Spec(
        "SERVER_API_KEY",
        "api_key",
        non_empty,
        None,
        "Required. Sent to upstream as `X-API-KEY`; also guards `POST /resync`.",
    ),
    Spec(
        "EPOCH_CHECK_SECONDS",
        "epoch_check_seconds",
        positive_float,
        "5",
        "How often to check for a lost cache (epoch key gone) or a stream gap.",
    ),
    Spec(
        "HTTP_PORT",
        "http_port",
        int_in(0, 65535),
        "8081",
        "HTTP side port (`/livez`, `/readyz`, `/metrics`). 8081, so it does not collide with "
        "the sidecar's 8080 on one host.",
    ),
    Spec(
        "HTTP_BIND_ADDRESS",
        "http_bind_address",
        text,
        "0.0.0.0",
        "HTTP side port address (all interfaces, so probes and scrapers reach it).",
    ),
    *LOGGING_SPECS,
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
    batches_in_flight: int = 4
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    api_url: str = "http://127.0.0.1:8787"
    epoch_check_seconds: float = 5.0
    http_port: int = 8081
    http_bind_address: str = "0.0.0.0"
    log_level: str = "info"
    log_format: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values, problems = read_env(SPECS, env)
        problems += [f"{name}: is required" for name in REQUIRED if name not in env]
        if values.get("redis_cluster") and values.get("redis_db", 0) != 0:
            problems.append("REDIS_DB: Redis Cluster only has database 0")
        if problems:
            raise SettingsError(problems)
        return cls(**values)


def render_env_table() -> str:
    """The configuration table of docs/persistent-cache.md."""
    return render_table(SPECS)
