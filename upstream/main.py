"""``entitlement-upstream``: run the reference upstream service."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

import structlog

from entitlements.cli import parse_command_line
from entitlements.errors import listen_failure
from entitlements.logs import configure_logging
from upstream.catalog.model import CatalogError
from upstream.server import UpstreamServer
from upstream.settings import SPECS, SettingsError, UpstreamSettings


async def serve(settings: UpstreamSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with UpstreamServer(settings):
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parse_command_line(
        "entitlement-upstream",
        "The reference upstream: catalog, customers, subscriptions, credits and usage behind an "
        "HTTP API,\nwith a durable change stream. Without CATALOG_PATH it serves the packaged "
        "demo catalog.",
        docs="docs/upstream.md, section Configuration",
        variables=SPECS,
        argv=argv,
    )
    try:
        settings = UpstreamSettings.from_env()
    except SettingsError as exc:
        print(f"entitlement-upstream: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, service="entitlement-upstream")
    try:
        asyncio.run(serve(settings))
    except CatalogError as exc:
        print(f"entitlement-upstream: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The API port could not be bound, typically: nothing else is fatal at start.
        address = f"{settings.bind_address}:{settings.port}"
        failure = listen_failure("HTTP", address, exc, "UPSTREAM_PORT, UPSTREAM_BIND_ADDRESS")
        structlog.get_logger("upstream").error("startup_failed", error=str(failure))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
