"""Upstream -> Redis Stream -> persistent cache -> Redis: the cache ends up equal to upstream."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from persistent_cache.service import PersistentCacheService
from tests.conftest import wait_for
from tests.integration.persistent_cache.pc_support import (
    API_KEY,
    converged,
    differences,
    provision,
    report,
    resyncs,
    running_upstream,
    sample,
    service_settings,
)
from tests.redis_server import RedisServer


@pytest.mark.parametrize("lanes", [1, 4], ids=["one-batch-in-flight", "four-in-flight"])
async def test_stream_keeps_redis_equal_to_upstream(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path, lanes: int
) -> None:
    settings = service_settings(redis_prefix, redis_server, None, batches_in_flight=lanes)
    async with (
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
        PersistentCacheService(replace(settings, api_url=f"http://127.0.0.1:{up.port}")) as svc,
    ):
        base = f"http://127.0.0.1:{svc.http_port}"
        async with aiohttp.ClientSession(base) as http:

            async def ready() -> bool:
                async with http.get("/readyz") as response:
                    return response.status == 200

            await wait_for(ready, timeout=10, what="/readyz")
            # Changes made before the startup resync fetched its snapshot would reach Redis
            # through the snapshot and arrive stale from the stream; wait so they are live.
            await wait_for(lambda: resyncs(svc, "startup") == 1, what="startup resync")
            customers = [f"e2e-{i}" for i in range(6)]
            provision(up, customers[:3], plan="free")
            provision(up, customers[3:], plan="pro")
            for _ in range(3):
                report(up, customers, value=2)
            report(up, customers[:2], value=5)

            await wait_for(lambda: converged(svc.store, up), timeout=15, what="Redis == upstream")
            assert await differences(svc.store, up) == []
            assert sample(svc, "persistent_cache_events_consumed_total") > 0
            assert sample(svc, "persistent_cache_events_applied_total") > 0
            assert sample(svc, "persistent_cache_commit_to_redis_seconds_count") > 0
            assert sample(svc, "persistent_cache_apply_duration_seconds_count") > 0

            async with http.get("/metrics") as response:
                text = await response.text()
            assert "persistent_cache_commit_to_redis_seconds_bucket" in text
            assert "persistent_cache_consumer_lag" in text
            for name in ("process_cpu_seconds_total", "python_gc_objects_collected_total", "python_info{"):
                assert name in text, name

            # On-demand resync: refused without the key, a fresh epoch with it.
            before = await svc.store.get_epoch()
            async with http.post("/resync") as response:
                assert response.status == 401
            async with http.post("/resync", headers={"X-API-KEY": API_KEY}) as response:
                assert response.status == 200
                body = await response.json()
            assert body["trigger"] == "http"
            assert body["states"] == len(customers)
            assert body["epoch"] == await svc.store.get_epoch() != before
            assert resyncs(svc, "http") == 1
            assert await differences(svc.store, up) == []
