"""Every setting of the sidecar: one frozen object built once from the environment.

Names follow Stigg's sidecar where one exists. Problems are collected and
reported together so an operator fixes a bad deployment in one round. The
README's configuration table is rendered from ``SPECS`` (a test keeps it fresh).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from entitlements.envconfig import (
    LOGGING_SPECS,
    Spec,
    boolean,
    http_url,
    int_in,
    keys_ttl,
    positive_float,
    read_env,
    render_table,
    text,
)
from entitlements.envconfig import (
    SettingsError as SettingsError,  # re-exported: callers catch it from here
)
from sidecar.cache.memory_limit import default_cache_max_bytes
from sidecar.evaluation.fallback import FallbackError, FallbackValues, parse_fallback_map


def _startup_wait(raw: str) -> float | None:
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"expected a number of seconds, got {raw!r}") from None
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"expected a finite number of seconds, got {raw!r}")
    return None if seconds < 0 else seconds


def _spool_backend(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("disk", "redis"):
        raise ValueError(f"must be disk or redis, got {raw!r}")
    return value


def _fallbacks(raw: str) -> Mapping[str, FallbackValues]:
    try:
        return parse_fallback_map(raw)
    except FallbackError as exc:
        raise ValueError(str(exc)) from None


SPECS: tuple[Spec, ...] = (
    Spec(
        "PORT",
        "port",
        int_in(0, 65535),
        "80",
        "gRPC listen port (80 is what the official SDKs dial by default).",
    ),
    Spec(
        "BIND_ADDRESS",
        "bind_address",
        text,
        "127.0.0.1",
        "gRPC listen address. Loopback by default: the sidecar serves its own pod only.",
    ),
    Spec(
        "HTTP_PORT",
        "http_port",
        int_in(0, 65535),
        "8080",
        "HTTP side port for `/livez`, `/readyz` and `/metrics`.",
    ),
    Spec(
        "HTTP_BIND_ADDRESS",
        "http_bind_address",
        text,
        "0.0.0.0",
        "HTTP side port address (all interfaces, so kubelet probes and scrapers reach it).",
    ),
    Spec(
        "OFFLINE",
        "offline",
        boolean,
        "0",
        "Offline mode: no network; reads return fallbacks, usage reports are acknowledged "
        "locally, events are dropped.",
    ),
    Spec(
        "SERVER_API_KEY",
        "api_key",
        text,
        "",
        "Key sent to upstream as `X-API-KEY`. Required unless `OFFLINE=1`.",
    ),
    Spec(
        "API_URL",
        "api_url",
        http_url,
        "http://127.0.0.1:8787",
        "Base URL of the upstream API (entitlement state, usage, events, change stream).",
    ),
    Spec(
        "WS_ENABLED",
        "push_enabled",
        boolean,
        "1",
        "Subscribe to upstream's push channel to keep the hot cache coherent. With `0` every "
        "read goes to upstream and the cache only serves as a stale copy when upstream fails.",
    ),
    Spec(
        "UPSTREAM_TIMEOUT_SECONDS",
        "upstream_timeout_seconds",
        positive_float,
        "10",
        "Total time allowed for one upstream request, retries excluded.",
    ),
    Spec(
        "UPSTREAM_RETRIES",
        "upstream_retries",
        int_in(0, 10),
        "3",
        "Extra attempts for upstream calls on transient failures: fetches, event batches, and "
        "usage reports (they carry idempotency keys; never past the call's gRPC deadline).",
    ),
    Spec(
        "SPOOL_DIR",
        "spool_dir",
        text,
        None,
        "Directory of the durable event spool: `ReportEvents` is acknowledged once the events "
        "are fsync'd there and shipped upstream in the background. Default: "
        "`/tmp/entitlement-sidecar-spool-<PORT>` (under `$TMPDIR` when set; `/tmp` is writable "
        "under the image's read-only root; "
        "mount a volume there to keep events across pod restarts). One sidecar per directory. "
        "Empty: no spool, events are forwarded synchronously.",
    ),
    Spec(
        "SPOOL_MAX_BYTES",
        "spool_max_bytes",
        int_in(1024, 2**50),
        "268435456",
        "Bound of the spool in bytes (events and buffered usage together); when full, "
        "`ReportEvents` answers `RESOURCE_EXHAUSTED` and takes nothing (a usage report that "
        "would be buffered: `UNAVAILABLE`).",
    ),
    Spec(
        "SPOOL_BACKEND",
        "spool_backend",
        _spool_backend,
        "disk",
        "Where the spool lives. `disk`: SQLite in `SPOOL_DIR`; acknowledges without a network "
        "hop and needs nothing else, but what a deleted pod held is lost unless `SPOOL_DIR` is "
        "a volume that outlives it. `redis` (needs `REDIS_ENVIRONMENT_PREFIX`): streams shared "
        "by the environment's sidecars, so a deleted pod loses nothing; costs a Redis round "
        "trip per acknowledgement, is as durable as the Redis deployment, and while Redis is "
        "unreachable those calls answer `UNAVAILABLE` (no local fallback).",
    ),
    Spec(
        "USAGE_BUFFERING",
        "usage_buffering",
        boolean,
        "0",
        "With `1`, a usage report upstream cannot be reached for (refused connection, timeout, "
        "5xx, after the retries) is appended to the spool in `SPOOL_DIR` with its idempotency "
        "key, acknowledged with a local measurement id, applied to this sidecar's view at once, "
        "and shipped when upstream is back. Off by default: an acknowledgement then means "
        "upstream processed the report (Stigg's semantics). Needs `SPOOL_DIR`.",
    ),
    Spec(
        "ENTITLEMENTS_FALLBACK",
        "fallbacks",
        _fallbacks,
        "",
        'Global fallbacks, Stigg JSON format: `{"feature-id": {"hasAccess": true, '
        '"usageLimit": 1000}}`; keys `hasAccess`, `value`, `isUnlimited`, `usageLimit`, '
        "`enumValues`.",
    ),
    Spec(
        "CACHE_MAX_SIZE_BYTES",
        "cache_max_bytes",
        int_in(1, 2**62),
        None,
        "Byte bound of the in-process hot cache. Default: half the container memory limit "
        "(cgroup v2/v1), else half the physical memory.",
    ),
    *LOGGING_SPECS,
    Spec(
        "SHUTDOWN_GRACE_SECONDS",
        "shutdown_grace_seconds",
        positive_float,
        "10",
        "On SIGTERM/SIGINT: stop accepting calls and let in-flight ones finish, then ship what "
        "the event and usage spool holds, all within this long; what could not be shipped stays "
        "in the spool for the next start.",
    ),
    Spec(
        "STARTUP_WAIT_SECONDS",
        "startup_wait_seconds",
        _startup_wait,
        "10",
        "How long a starting sidecar waits for its backend (the change stream; the first "
        "answer from upstream) before it reports ready anyway and serves what it can (Redis, "
        "stale copies, fallbacks: `is_fallback` says so). Negative: wait for the backend "
        "however long it takes (strict readiness, for a standalone deployment).",
    ),
    Spec(
        "WORKERS",
        "workers",
        int_in(1, 64),
        "1",
        "Worker processes serving the same ports (SO_REUSEPORT), for the standalone deployment "
        "on more than one core. Each is a whole sidecar with its own hot cache and its own "
        "spool (`SPOOL_DIR/worker-N`), sharing nothing but Redis and upstream; `/metrics` shows "
        "the worker a scrape reaches. Keep 1 for a sidecar injected into an app pod.",
    ),
    Spec(
        "MAX_MESSAGE_BYTES",
        "max_message_bytes",
        int_in(1024, 64 * 2**20),
        "4194304",
        "Largest gRPC request or response accepted, in bytes.",
    ),
    Spec(
        "REDIS_ENVIRONMENT_PREFIX",
        "redis_prefix",
        text,
        "",
        "Key prefix in Redis; setting it switches the Redis tier on (hot cache -> Redis -> "
        "upstream). Must match the persistent cache's prefix. Empty: no Redis.",
    ),
    Spec(
        "REDIS_HOST", "redis_host", text, "localhost", "Redis host (a seed node in cluster mode)."
    ),
    Spec("REDIS_PORT", "redis_port", int_in(1, 65535), "6379", "Redis port."),
    Spec("REDIS_DB", "redis_db", int_in(0, 2**31 - 1), "0", "Redis database number."),
    Spec("REDIS_USERNAME", "redis_username", text, "", "Redis ACL user name."),
    Spec("REDIS_PASSWORD", "redis_password", text, "", "Redis password."),
    Spec("REDIS_TLS", "redis_tls", boolean, "0", "Connect to Redis over TLS."),
    Spec(
        "REDIS_CLUSTER",
        "redis_cluster",
        boolean,
        "0",
        "Redis Cluster mode (`REDIS_HOST`/`REDIS_PORT` name a seed node; `REDIS_DB` must be 0).",
    ),
    Spec(
        "REDIS_KEYS_TTL_IN_SECS",
        "redis_keys_ttl_seconds",
        keys_ttl,
        "604800",
        "Expiry of the keys this sidecar writes to Redis, refreshed on every write; "
        "negative: never expire. 0 is rejected.",
    ),
    Spec(
        "REDIS_TIMEOUT_MS",
        "redis_timeout_ms",
        int_in(1, 60_000),
        "100",
        "Connect and per-command timeout for Redis. Small on purpose: a slow Redis is "
        "skipped (reads go to upstream) instead of stalling every read.",
    ),
    Spec(
        "REDIS_MAX_CONNECTIONS",
        "redis_max_connections",
        int_in(1, 10_000),
        "64",
        "Connections the sidecar's pool opens to Redis at most (standalone Redis), for writes, "
        "scripts and refetch coordination; more concurrent commands wait for a free one, up "
        "to REDIS_TIMEOUT_MS, instead of failing. Reads (`HGETALL`) share one pipelined "
        "connection of their own, and subscriptions one more.",
    ),
)


@dataclass(frozen=True)
class Settings:
    port: int = 80
    bind_address: str = "127.0.0.1"
    http_port: int = 8080
    http_bind_address: str = "0.0.0.0"
    offline: bool = False
    api_key: str = ""
    api_url: str = "http://127.0.0.1:8787"
    push_enabled: bool = True
    upstream_timeout_seconds: float = 10.0
    upstream_retries: int = 3
    # Empty: no spool (events are forwarded synchronously). from_env fills the default in.
    spool_dir: str = ""
    spool_max_bytes: int = 256 * 2**20
    # "disk" (SQLite in spool_dir) or "redis" (streams shared by the sidecars).
    spool_backend: str = "disk"
    # Usage upstream cannot be reached for goes to the spool and is acknowledged locally.
    usage_buffering: bool = False
    fallbacks: Mapping[str, FallbackValues] = field(default_factory=dict)
    cache_max_bytes: int = 256 * 2**20
    log_level: str = "info"
    log_format: str = "auto"
    shutdown_grace_seconds: float = 10.0
    # None: strict, ready only once the backend is synced.
    startup_wait_seconds: float | None = 10.0
    max_message_bytes: int = 4 * 2**20
    redis_prefix: str = ""
    redis_host: str = "localhost"
    redis_port: int = 6379
    redis_db: int = 0
    redis_username: str = ""
    # Kept out of repr so a logged or printed Settings never leaks it.
    redis_password: str = field(default="", repr=False)
    redis_tls: bool = False
    redis_cluster: bool = False
    redis_keys_ttl_seconds: int = 604_800
    redis_timeout_ms: int = 100
    redis_max_connections: int = 64
    workers: int = 1
    # Set by the supervisor for its workers (not from the environment): they share the ports.
    reuse_port: bool = False

    @property
    def redis_enabled(self) -> bool:
        return bool(self.redis_prefix)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values, problems = read_env(SPECS, env)
        if not values.get("offline") and not values.get("api_key"):
            problems.append("SERVER_API_KEY: is required unless OFFLINE=1")
        problems += _redis_problems(values)
        if values.get("workers", 1) > 1:
            problems += [
                f"{name}: must be a fixed port with WORKERS > 1 (the workers share it)"
                for name, attr in (("PORT", "port"), ("HTTP_PORT", "http_port"))
                if values.get(attr) == 0
            ]
        redis_spool = values.get("spool_backend") == "redis"
        if values.get("usage_buffering") and values.get("spool_dir") == "" and not redis_spool:
            problems.append("USAGE_BUFFERING: needs a spool; SPOOL_DIR must not be empty")
        if redis_spool and not values.get("redis_prefix"):
            problems.append("SPOOL_BACKEND: redis needs REDIS_ENVIRONMENT_PREFIX (the Redis tier)")
        if problems:
            raise SettingsError(problems)
        if "cache_max_bytes" not in values:
            values["cache_max_bytes"] = default_cache_max_bytes()
        if "spool_dir" not in values:
            # Keyed by port: two sidecars on one host cannot share a port, so they never share
            # a spool, and a restarted one (same port) finds what its predecessor left.
            temp = env.get("TMPDIR") or "/tmp"
            values["spool_dir"] = f"{temp.rstrip('/')}/entitlement-sidecar-spool-{values['port']}"
        return cls(**values)


def _redis_problems(values: Mapping[str, Any]) -> list[str]:
    """Combinations that parse but cannot work; checked only when the Redis tier is on."""
    if not values.get("redis_prefix"):
        return []
    problems = []
    if not values.get("redis_host"):
        problems.append("REDIS_HOST: is required when REDIS_ENVIRONMENT_PREFIX is set")
    if values.get("redis_cluster") and values.get("redis_db", 0) != 0:
        problems.append("REDIS_DB: must be 0 with REDIS_CLUSTER=1 (a cluster has one database)")
    return problems


def render_env_table() -> str:
    """The README's configuration table."""
    return render_table(SPECS)
