"""Upstream as a running service: store, catalog, API, outbox relay and time-driven changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from entitlements.redis.packing import use_hiredis_packing
from upstream.api.app import build_app
from upstream.catalog.loader import load_catalog
from upstream.events.hub import Hub
from upstream.events.publishers import HubPublisher, RedisStreamPublisher
from upstream.events.relay import Publisher, Relay
from upstream.service import Upstream, utcnow
from upstream.settings import UpstreamSettings
from upstream.store.sqlite import Store
from upstream.testclock import TestClock

log = structlog.get_logger("upstream")

#: Longest sleep of the scheduler: bounds how late a time-driven change can be
#: noticed if the clock jumps or a state's valid-until is moved earlier.
MAX_SCHEDULER_SLEEP = 5.0


class UpstreamServer:
    def __init__(
        self,
        settings: UpstreamSettings,
        *,
        ping_seconds: float = 15.0,
        extra_publishers: Sequence[Publisher] = (),
    ) -> None:
        self.settings = settings
        self.store = Store(settings.database)
        self.hub = Hub()
        publishers: list[Publisher] = [HubPublisher(self.hub), *extra_publishers]
        self._redis: aioredis.Redis | None = None
        if settings.events_redis_url:
            self._redis = use_hiredis_packing(aioredis.Redis.from_url(settings.events_redis_url))
            publishers.append(RedisStreamPublisher(self._redis, settings.stream_key))
        self.relay = Relay(self.store, publishers)
        # Test environments only: one clock for the API, every operation and the scheduler.
        self.test_clock = TestClock() if settings.test_clock_enabled else None
        self.upstream = Upstream(
            self.store,
            load_catalog(settings.catalog_path),
            on_commit=self.relay.notify,
            clock=self.test_clock.now if self.test_clock is not None else utcnow,
        )
        self.app = build_app(
            self.upstream,
            self.hub,
            api_key_value=settings.api_key,
            catalog_path=settings.catalog_path,
            ping_seconds=ping_seconds,
            test_clock=self.test_clock,
        )
        self._runner = web.AppRunner(self.app, access_log=None)
        self._scheduler: asyncio.Task[None] | None = None
        self.port = settings.port

    async def start(self) -> None:
        # Publish what a previous process committed but did not get out.
        await self.relay.drain()
        self.relay.start()
        self._scheduler = asyncio.get_running_loop().create_task(self._schedule())
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.bind_address, self.settings.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info(
            "upstream_ready",
            port=self.port,
            database=self.settings.database,
            catalog=str(self.settings.catalog_path),
            # Where changes go besides the HTTP feed and push channel (None: nowhere else).
            change_stream=self.settings.stream_key if self.settings.events_redis_url else None,
            # On: anyone with the API key can move this upstream's time (test environments only).
            test_clock="on" if self.test_clock is not None else "off",
        )
        if self.test_clock is not None:
            log.warning(
                "test_clock_enabled",
                message="TEST_CLOCK_ENABLED=1: POST /v1/test-clock/advance moves this upstream's "
                "time forward; for test environments only",
            )

    def _process_due(self) -> datetime | None:
        """One scheduler pass (on the writer thread): apply what is due; returns the next due."""
        self.upstream.process_due()
        return self.upstream.next_due()

    async def _schedule(self) -> None:
        """Apply trial ends, expiries and period ends when their time comes."""
        while True:
            try:
                due = await self.store.run(self._process_due)
            except Exception:
                log.exception("scheduler_failed")
                due = None
            delay = MAX_SCHEDULER_SLEEP
            if due is not None:
                delay = min(max((due - self.upstream.clock()).total_seconds(), 0.01), delay)
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        self.hub.close()
        await self._runner.cleanup()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        await self.relay.stop()
        with contextlib.suppress(Exception):
            await self.relay.drain()
        if self._redis is not None:
            await self._redis.aclose()
        # Last: waits for whatever the writer thread still has (a cancelled request's
        # transaction), then closes the database, off the loop.
        await asyncio.to_thread(self.store.close)

    async def __aenter__(self) -> UpstreamServer:
        try:
            await self.start()
        except BaseException:
            # A start that failed (the port taken, say) has the writer thread, the relay and
            # the scheduler running already: left alone, the thread keeps the process alive.
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
