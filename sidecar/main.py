"""``entitlement-sidecar``: the console entry point."""

from __future__ import annotations

import asyncio
import sys

import structlog

from sidecar.app import serve
from sidecar.observability import configure_logging
from sidecar.settings import Settings, SettingsError
from sidecar.source.base import EntitlementSource
from sidecar.source.http_upstream import HttpUpstreamSource


def _source(settings: Settings) -> EntitlementSource | None:
    if settings.offline:
        return None
    return HttpUpstreamSource(
        api_url=settings.api_url,
        api_key=settings.api_key,
        timeout=settings.upstream_timeout_seconds,
        retries=settings.upstream_retries,
        stream=settings.push_enabled,
    )


def main() -> int:
    try:
        settings = Settings.from_env()
        source = _source(settings)
    except SettingsError as exc:
        print(f"entitlement-sidecar: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings, source))
    except OSError as exc:
        structlog.get_logger("sidecar").error("startup_failed", error=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
