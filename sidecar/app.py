"""Wiring: settings + source -> cache, service, gRPC server, HTTP side port."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from types import TracebackType

import structlog

from entitlements.errors import listen_failure
from entitlements.http_server import HttpServer, build_app
from entitlements.tasks import cancel_and_wait
from sidecar.api.grpc_server import GrpcServer
from sidecar.api.servicer import SidecarServicer
from sidecar.cache.hot_cache import HotCache
from sidecar.observability import Metrics
from sidecar.service.entitlements import CacheEntry, EntitlementService
from sidecar.settings import Settings
from sidecar.source.base import EntitlementSource
from sidecar.spool.store import EventSpool, Spool

log = structlog.get_logger("sidecar")


class Sidecar:
    """The running daemon. ``async with Sidecar(...)`` starts it; leaving drains it."""

    def __init__(
        self,
        settings: Settings,
        source: EntitlementSource | None,
        *,
        metrics: Metrics | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.settings = settings
        # Passed in when the source reports into the same registry (the Redis tier does).
        self.metrics = metrics if metrics is not None else Metrics()
        self.cache: HotCache[CacheEntry] = HotCache(settings.cache_max_bytes)
        self.metrics.watch_cache(self.cache)
        # Offline, events are dropped (as Stigg's offline mode does): nothing to spool for.
        # ``spool`` is given for SPOOL_BACKEND=redis (main builds it on its own Redis client).
        self.spool: Spool | None = (
            None
            if source is None
            else spool
            if spool is not None
            else EventSpool(settings.spool_dir, settings.spool_max_bytes)
            if settings.spool_dir
            else None
        )
        if self.spool is not None:
            self.metrics.watch_spool(self.spool)
        self.service = EntitlementService(
            source=source,
            cache=self.cache,
            metrics=self.metrics,
            coherent=settings.push_enabled,
            spool=self.spool,
            usage_buffering=settings.usage_buffering,
        )
        servicer = SidecarServicer(self.service, self.metrics, settings.fallbacks)
        self.grpc = GrpcServer(
            servicer,
            address=f"{settings.bind_address}:{settings.port}",
            max_message_bytes=settings.max_message_bytes,
            reuse_port=settings.reuse_port,
        )
        self.http = HttpServer(
            build_app(self.metrics.registry, self.is_ready),
            host=settings.http_bind_address,
            port=settings.http_port,
            reuse_port=settings.reuse_port,
        )
        self._ready = False

    @property
    def grpc_port(self) -> int:
        return self.grpc.port

    def is_ready(self) -> bool:
        return self._ready

    def tiers(self) -> list[str]:
        """The read path's tiers in the order a read tries them."""
        if self.service.offline:
            return ["hot_cache", "fallback"]
        redis = [f"redis:{self.settings.redis_prefix}"] if self.settings.redis_enabled else []
        return ["hot_cache", *redis, "upstream", "stale", "fallback"]

    async def start(self) -> None:
        """Start serving; on any failure or cancellation, release what was started."""
        try:
            try:
                await self.http.start()
            except OSError as exc:
                address = f"{self.settings.http_bind_address}:{self.settings.http_port}"
                raise listen_failure("HTTP", address, exc, "HTTP_PORT, HTTP_BIND_ADDRESS") from exc
            if self.spool is not None:
                await self.spool.open()
            await self.grpc.start()
            self.service.start()
            synced = await self._wait_for_backend()
        except BaseException:
            await self._release()
            raise
        await self.grpc.mark_serving()
        self._ready = True
        log.info(
            "sidecar_ready",
            # Stigg's older SDKs that spawn a local sidecar wait for this exact text on stderr.
            message="Sidecar is ready",
            grpc_port=self.grpc.port,
            http_port=self.http.port,
            offline=self.service.offline,
            backend_synced=synced,
            tiers=self.tiers(),
            upstream=None if self.service.offline else self.settings.api_url,
            event_spool=None if self.spool is None else self.spool.location,
            spooled_events=None if self.spool is None else self.spool.events,
            usage_buffering=self.settings.usage_buffering and self.spool is not None,
            spooled_usage=None if self.spool is None else self.spool.usage.count,
            cache_max_bytes=self.settings.cache_max_bytes,
        )

    async def _wait_for_backend(self) -> bool:
        """Whether the backend synced before readiness.

        Ready once the change stream is live (or at once offline), so a fresh pod does not
        answer from a cache that cannot be kept coherent; but an injected sidecar must not keep
        its app pod unready through a backend outage, so after ``startup_wait_seconds`` it
        serves what it can (Redis, stale copies, fallbacks) and says so.
        """
        wait = self.settings.startup_wait_seconds
        if wait is None:
            await self.service.synced.wait()
            return True
        try:
            async with asyncio.timeout(wait):
                await self.service.synced.wait()
        except TimeoutError:
            log.warning(
                "ready_without_backend",
                waited_seconds=wait,
                api_url=self.settings.api_url,
                hint="answers come from Redis, stale copies or fallbacks until it is reachable",
            )
            return False
        return True

    async def stop(self) -> None:
        await self._release()
        log.info("sidecar_stopped")

    async def _release(self) -> None:
        self._ready = False
        grace = self.settings.shutdown_grace_seconds
        started = time.monotonic()
        await self.grpc.stop(grace)
        # What the grace period has left goes to shipping what the spool holds: on a volume
        # that dies with the pod (emptyDir), what is left there is lost.
        await self.service.aclose(drain_seconds=grace - (time.monotonic() - started))
        if self.spool is not None:
            await self.spool.close()
        await self.http.stop()

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
    settings: Settings,
    source: EntitlementSource | None,
    *,
    metrics: Metrics | None = None,
    spool: Spool | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then drain within the configured grace period.

    The signals are honoured from the first moment, start-up included: a sidecar still
    waiting for its backend stops at once instead of holding a rollout until SIGKILL.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    sidecar = Sidecar(settings, source, metrics=metrics, spool=spool)
    starting = loop.create_task(sidecar.start())
    stopping = loop.create_task(stop.wait())
    try:
        await asyncio.wait((starting, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(stopping)
    if not starting.done():
        log.info("stopping_before_ready")
        starting.cancel()
        await asyncio.wait((starting,))
        if starting.cancelled() or starting.exception() is not None:
            return  # start() released what it had started
        # The cancellation arrived just as the start completed.
        await sidecar.stop()
        return
    starting.result()  # a failed start raises here
    try:
        await stop.wait()
        log.info("draining", grace_seconds=settings.shutdown_grace_seconds)
    finally:
        await sidecar.stop()
