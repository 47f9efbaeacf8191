"""Wiring: settings + source -> cache, service, gRPC server, HTTP side port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import TracebackType

import structlog

from sidecar.api.grpc_server import GrpcServer
from sidecar.api.http_server import HttpServer, build_app
from sidecar.api.servicer import SidecarServicer
from sidecar.cache.hot_cache import HotCache
from sidecar.observability import Metrics
from sidecar.service.entitlements import CacheEntry, EntitlementService
from sidecar.settings import Settings
from sidecar.source.base import EntitlementSource

log = structlog.get_logger("sidecar")


class Sidecar:
    """The running daemon. ``async with Sidecar(...)`` starts it; leaving drains it."""

    def __init__(
        self,
        settings: Settings,
        source: EntitlementSource | None,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        # Passed in when the source reports into the same registry (the Redis tier does).
        self.metrics = metrics if metrics is not None else Metrics()
        self.cache: HotCache[CacheEntry] = HotCache(settings.cache_max_bytes)
        self.metrics.watch_cache(self.cache)
        self.service = EntitlementService(
            source=source,
            cache=self.cache,
            metrics=self.metrics,
            coherent=settings.push_enabled,
        )
        servicer = SidecarServicer(self.service, self.metrics, settings.fallbacks)
        self.grpc = GrpcServer(
            servicer,
            address=f"{settings.bind_address}:{settings.port}",
            max_message_bytes=settings.max_message_bytes,
        )
        self.http = HttpServer(
            build_app(self.metrics.registry, self.is_ready),
            host=settings.http_bind_address,
            port=settings.http_port,
        )
        self._ready = False

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    def is_ready(self) -> bool:
        return self._ready

    async def start(self) -> None:
        await self.http.start()
        await self.grpc.start()
        self.service.start()
        # Ready once the change stream is live (or at once offline), so a fresh
        # pod never answers from a cache that cannot be kept coherent.
        await self.service.synced.wait()
        await self.grpc.mark_serving()
        self._ready = True
        log.info(
            "Sidecar is ready",
            grpc_port=self.grpc.port,
            http_port=self.http.port,
            offline=self.service.offline,
            cache_max_bytes=self.settings.cache_max_bytes,
        )

    async def stop(self) -> None:
        self._ready = False
        await self.grpc.stop(self.settings.shutdown_grace_seconds)
        await self.service.aclose()
        await self.http.stop()
        log.info("sidecar_stopped")

    async def __aenter__(self) -> Sidecar:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    settings: Settings, source: EntitlementSource | None, *, metrics: Metrics | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then drain within the configured grace period."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Sidecar(settings, source, metrics=metrics):
        await stop.wait()
        log.info("draining", grace_seconds=settings.shutdown_grace_seconds)
