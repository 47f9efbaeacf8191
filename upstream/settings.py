"""Upstream's settings: one frozen object built once from the environment.

Read with the same toolkit as the sidecar's and the persistent cache's (``entitlements.envconfig``):
every problem is reported together, and the table in ``docs/upstream.md`` is rendered from
``SPECS`` by :func:`render_env_table` (a test keeps it fresh).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from entitlements.envconfig import (
    LOGGING_SPECS,
    Spec,
    boolean,
    int_in,
    non_empty,
    read_env,
    render_table,
    text,
)
from entitlements.envconfig import (
    SettingsError as SettingsError,  # re-exported: callers catch it from here
)
from upstream.catalog import DEMO_CATALOG
from upstream.events.keys import change_stream_key


def _catalog(raw: str) -> Path:
    value = raw.strip()
    catalog = Path(value) if value else DEMO_CATALOG
    if not catalog.is_file():
        raise ValueError(f"{catalog} is not a readable file")
    return catalog


def _optional(raw: str) -> str | None:
    return raw.strip() or None


SPECS: tuple[Spec, ...] = (
    Spec(
        "SERVER_API_KEY",
        "api_key",
        non_empty,
        None,
        "Required. The key clients must send as `X-API-KEY`.",
    ),
    Spec("UPSTREAM_PORT", "port", int_in(0, 65535), "8787", "HTTP listen port."),
    Spec("UPSTREAM_BIND_ADDRESS", "bind_address", text, "127.0.0.1", "HTTP listen address."),
    Spec("UPSTREAM_DATABASE", "database", text, "upstream.db", "SQLite database file."),
    Spec(
        "CATALOG_PATH",
        "catalog_path",
        _catalog,
        None,
        "The catalog YAML file. Default: the packaged demo catalog (`upstream/catalog/demo.yaml`).",
    ),
    Spec(
        "EVENTS_REDIS_URL",
        "events_redis_url",
        _optional,
        "",
        "Also publish every change to the Redis Stream `{REDIS_ENVIRONMENT_PREFIX}:changes` on "
        "this Redis (empty: no stream).",
    ),
    Spec(
        "REDIS_ENVIRONMENT_PREFIX",
        "environment_prefix",
        text,
        "",
        "The key prefix of this environment in Redis, shared with the persistent cache and the "
        "sidecars. Required when `EVENTS_REDIS_URL` is set.",
    ),
    Spec(
        "TEST_CLOCK_ENABLED",
        "test_clock_enabled",
        boolean,
        "0",
        "**Test environments only.** Serve the test clock (`/v1/test-clock`): anyone with the "
        "API key can then move upstream's time forward, ending trials, periods, grants and "
        "promotions early for every customer. Off: those endpoints answer 404.",
    ),
    *LOGGING_SPECS,
)


@dataclass(frozen=True)
class UpstreamSettings:
    api_key: str
    port: int = 8787
    bind_address: str = "127.0.0.1"
    database: str = "upstream.db"
    catalog_path: Path = DEMO_CATALOG
    events_redis_url: str | None = None
    environment_prefix: str = ""
    test_clock_enabled: bool = False
    log_level: str = "info"
    log_format: str = "auto"

    @property
    def stream_key(self) -> str:
        return change_stream_key(self.environment_prefix)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UpstreamSettings:
        env = os.environ if environ is None else environ
        values, problems = read_env(SPECS, env)
        if "api_key" not in values and "SERVER_API_KEY" not in env:
            problems.append("SERVER_API_KEY: is required")
        if values.get("events_redis_url") and not values.get("environment_prefix"):
            # The stream is one of the environment's keys: without the prefix upstream would
            # publish where no persistent cache of this environment reads.
            problems.append("REDIS_ENVIRONMENT_PREFIX: is required when EVENTS_REDIS_URL is set")
        if problems:
            raise SettingsError(problems)
        return cls(**values)


def render_env_table() -> str:
    """The configuration table of docs/upstream.md."""
    return render_table(SPECS)
