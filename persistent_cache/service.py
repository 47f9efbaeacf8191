"""Wiring and lifecycle: settings -> Redis clients, store, stream source, consumer, resync, HTTP.

``async with PersistentCacheService(settings)`` starts the side port, the consumer loop and the
watchdog; leaving stops reading, lets the batch in hand be written and acked, then closes
everything. The service keeps no state of its own: any number of replicas share the work through
the consumer group, and a replaced pod loses nothing (its pending entries are claimed).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from types import TracebackType

import structlog
from prometheus_client import CollectorRegistry

from entitlements.errors import CacheUnavailable
from entitlements.http_server import HttpServer
from entitlements.redis.keys import change_stream, dead_letter_stream
from entitlements.redis.store import RedisStore
from entitlements.tasks import cancel_and_wait
from persistent_cache.consumer import Consumer
from persistent_cache.http import build_app
from persistent_cache.metrics import Metrics
from persistent_cache.redis_clients import cache_client, events_client
from persistent_cache.resync import Resyncer, ResyncResult
from persistent_cache.settings import Settings
from persistent_cache.source import RedisStreamSource
from persistent_cache.upstream_feed import UpstreamFeed
from persistent_cache.watchdog import Watchdog

log = structlog.get_logger("persistent_cache")

#: How long a stopping service waits for the batch in hand before abandoning it (it stays
#: pending and is claimed by another replica).
STOP_GRACE_SECONDS = 20.0
PING_TIMEOUT_SECONDS = 1.0


def claim_interval(claim_idle_ms: int) -> float:
    # Look twice per idle period, so a dead consumer's entries wait at most 1.5x CLAIM_IDLE_MS;
    # bounded so a huge idle setting still notices within seconds.
    return min(max(claim_idle_ms / 2000, 0.05), 10.0)


class PersistentCacheService:
    def __init__(self, settings: Settings, *, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(registry)
        self._cache_redis = cache_client(settings)
        self._events_redis = events_client(settings, self._cache_redis)
        prefix = settings.environment_prefix
        self.store = RedisStore(
            self._cache_redis, prefix=prefix, ttl_seconds=settings.keys_ttl_seconds
        )
        self.source = RedisStreamSource(
            self._events_redis,
            stream=change_stream(prefix),
            dead_letter_stream=dead_letter_stream(prefix),
            group=settings.consumer_group,
            consumer=settings.consumer_name,
            batch_size=settings.batch_size,
            block_ms=settings.block_ms,
            claim_idle_ms=settings.claim_idle_ms,
        )
        self._feed = UpstreamFeed(settings.api_url, settings.api_key)
        self.resyncer = Resyncer(
            self.store, self._feed, self.metrics, stream_position=self._stream_position
        )
        self.watchdog = Watchdog(
            self.store, self.source, self.resyncer, interval=settings.epoch_check_seconds
        )
        self.consumer = Consumer(
            self.source,
            self.store,
            self.metrics,
            claim_interval=claim_interval(settings.claim_idle_ms),
            on_loss=self.watchdog.request,
            lanes=settings.batches_in_flight,
        )
        app = build_app(
            self.metrics.registry,
            is_ready=self.is_ready,
            resync=self.resync,
            api_key=settings.api_key,
        )
        self.http = HttpServer(app, host=settings.http_bind_address, port=settings.http_port)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def http_port(self) -> int:
        return self.http.port

    async def _stream_position(self) -> int:
        return (await self.source.status()).entries_added

    async def is_ready(self) -> bool:
        if not self.consumer.running:
            return False
        try:
            async with asyncio.timeout(PING_TIMEOUT_SECONDS):
                return await self.store.ping()
        except (CacheUnavailable, TimeoutError):
            return False

    async def resync(self) -> ResyncResult:
        return await self.resyncer.run("http")

    async def start(self) -> None:
        await self.http.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.consumer.run(), name="persistent-cache-consumer"),
            loop.create_task(self.watchdog.run(), name="persistent-cache-watchdog"),
        ]
        log.info(
            "persistent_cache_started",
            http_port=self.http.port,
            upstream=self.settings.api_url,
            redis=f"{self.settings.redis_host}:{self.settings.redis_port}",
            redis_cluster=self.settings.redis_cluster,
            prefix=self.settings.environment_prefix,
            stream=self.source.stream,
            group=self.source.group,
            consumer=self.source.consumer,
        )

    async def stop(self) -> None:
        self.consumer.request_stop()
        if self._tasks:
            # The consumer task comes first: let it write and ack the batch in hand. Past the
            # grace the batch stays pending and another replica claims it.
            done, _ = await asyncio.wait(self._tasks[:1], timeout=STOP_GRACE_SECONDS)
            if not done:
                log.warning("consumer_abandoned_batch")
            for task in self._tasks:
                await cancel_and_wait(task)
        self._tasks = []
        await self.resyncer.aclose()
        await self.http.stop()
        await self._feed.aclose()
        if self._events_redis is not self._cache_redis:
            await self._events_redis.aclose()
        await self._cache_redis.aclose()
        log.info("persistent_cache_stopped")

    async def __aenter__(self) -> PersistentCacheService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then finish the batch in hand and stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with PersistentCacheService(settings):
        await stop.wait()
        log.info("stopping")
