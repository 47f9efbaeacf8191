"""Upstream's settings, from environment variables, all problems reported together."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from upstream.catalog import DEMO_CATALOG
from upstream.events.keys import change_stream_key


class SettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class UpstreamSettings:
    api_key: str
    port: int = 8787
    bind_address: str = "127.0.0.1"
    database: str = "upstream.db"
    catalog_path: Path = DEMO_CATALOG
    events_redis_url: str | None = None
    environment_prefix: str = "entitlements"
    log_level: str = "info"
    log_format: str = "auto"

    @property
    def stream_key(self) -> str:
        return change_stream_key(self.environment_prefix)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> UpstreamSettings:
        env = os.environ if environ is None else environ
        problems: list[str] = []
        api_key = env.get("SERVER_API_KEY", "").strip()
        if not api_key:
            problems.append("SERVER_API_KEY: is required")
        port = 8787
        raw_port = env.get("UPSTREAM_PORT", "8787")
        try:
            port = int(raw_port)
            if not 0 <= port <= 65535:
                raise ValueError
        except ValueError:
            problems.append(f"UPSTREAM_PORT: expected a port number, got {raw_port!r}")
        raw_catalog = env.get("CATALOG_PATH", "").strip()
        catalog = Path(raw_catalog) if raw_catalog else DEMO_CATALOG
        if not catalog.is_file():
            problems.append(f"CATALOG_PATH: {catalog} is not a readable file")
        level = env.get("LOG_LEVEL", "info").strip().lower()
        if level not in ("debug", "info", "warn", "error"):
            problems.append(f"LOG_LEVEL: expected error, warn, info or debug; got {level!r}")
        if problems:
            raise SettingsError(problems)
        return cls(
            api_key=api_key,
            port=port,
            bind_address=env.get("UPSTREAM_BIND_ADDRESS", "127.0.0.1"),
            database=env.get("UPSTREAM_DATABASE", "upstream.db"),
            catalog_path=catalog,
            events_redis_url=env.get("EVENTS_REDIS_URL") or None,
            environment_prefix=env.get("REDIS_ENVIRONMENT_PREFIX", "entitlements"),
            log_level=level,
            log_format=env.get("LOG_FORMAT", "auto"),
        )
