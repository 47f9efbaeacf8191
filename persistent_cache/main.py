"""``entitlement-persistent-cache``: the console entry point."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import structlog

from entitlements.cli import parse_command_line
from entitlements.errors import listen_failure
from entitlements.logs import configure_logging
from persistent_cache.service import serve
from persistent_cache.settings import SPECS, Settings, SettingsError


def main(argv: Sequence[str] | None = None) -> int:
    parse_command_line(
        "entitlement-persistent-cache",
        "The persistent cache: applies upstream's change stream to Redis (versioned, with a TTL "
        "or none),\nso sidecars with the Redis tier keep answering through upstream outages. "
        "Stateless; run as many as you like.",
        docs="docs/persistent-cache.md, section Configuration",
        variables=SPECS,
        argv=argv,
    )
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"entitlement-persistent-cache: {exc}", file=sys.stderr)
        return 2
    configure_logging(
        settings.log_level, settings.log_format, service="entitlement-persistent-cache"
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(settings))
    except OSError as exc:
        # The side port could not be bound, typically: nothing else is fatal at start.
        address = f"{settings.http_bind_address}:{settings.http_port}"
        failure = listen_failure("HTTP", address, exc, "HTTP_PORT, HTTP_BIND_ADDRESS")
        structlog.get_logger("persistent_cache").error("startup_failed", error=str(failure))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
