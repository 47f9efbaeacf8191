"""Cache writes failing: nothing is acked unwritten, and the same consumer retries on recovery.

The cache Redis is made to refuse writes (maxmemory reached, noeviction: it answers OOM) while it
stays reachable; the stream lives in another Redis and keeps delivering.
"""

from __future__ import annotations

from pathlib import Path

from entitlements.redis.keys import change_stream
from persistent_cache.service import PersistentCacheService
from tests.conftest import wait_for
from tests.integration.persistent_cache.pc_support import (
    converged,
    provision,
    redis_client,
    report,
    resyncs,
    running_upstream,
    sample,
    service_settings,
)
from tests.redis_server import RedisServer


async def test_entries_stay_pending_while_writes_fail_and_are_retried(
    redis_server: RedisServer, own_redis: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    stream = change_stream(redis_prefix)
    async with (
        redis_client(redis_server) as events,
        redis_client(own_redis) as cache,
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
    ):
        settings = service_settings(
            redis_prefix,
            own_redis,
            up,
            events_redis_url=redis_server.url,
            consumer_name="steady",
            claim_idle_ms=60_000,  # far beyond the test: recovery must not wait for a claim
        )
        customers = [f"outage-{i}" for i in range(5)]
        provision(up, customers)
        async with PersistentCacheService(settings) as svc:
            await wait_for(lambda: resyncs(svc, "startup") == 1, what="startup resync")

            async def pending() -> int:
                return int((await events.xpending(stream, "persistent-cache"))["pending"])

            await cache.config_set("maxmemory-policy", "noeviction")
            await cache.config_set("maxmemory", "1")
            report(up, customers, value=3)

            async def failing() -> bool:
                return sample(svc, "persistent_cache_errors_total", component="cache") >= 2

            await wait_for(failing, timeout=10, what="writes refused, then retried")
            assert await pending() > 0
            assert not await converged(svc.store, up)

            await cache.config_set("maxmemory", "0")

            async def drained() -> bool:
                return await pending() == 0

            await wait_for(drained, timeout=20, what="the same consumer retrying")
            await wait_for(lambda: converged(svc.store, up), timeout=15, what="convergence")
            assert sample(svc, "persistent_cache_events_reclaimed_total") == 0
