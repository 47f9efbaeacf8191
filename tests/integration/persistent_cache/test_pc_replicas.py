"""Two replicas in one consumer group share the stream: every entry consumed and acked once."""

from __future__ import annotations

from pathlib import Path

from entitlements.redis.keys import change_stream
from persistent_cache.service import PersistentCacheService
from tests.conftest import wait_for
from tests.integration.persistent_cache.pc_support import (
    converged,
    differences,
    provision,
    redis_client,
    report,
    running_upstream,
    sample,
    service_settings,
)
from tests.redis_server import RedisServer


async def test_two_replicas_split_the_stream(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    stream = change_stream(redis_prefix)
    async with (
        redis_client(redis_server) as events,
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
        PersistentCacheService(
            service_settings(redis_prefix, redis_server, up, consumer_name="replica-a")
        ) as a,
        PersistentCacheService(
            service_settings(redis_prefix, redis_server, up, consumer_name="replica-b")
        ) as b,
    ):
        async def all_lanes_waiting() -> bool:
            # Every lane of both replicas blocked in XREADGROUP: Redis hands new entries to
            # blocked readers first come first served, so both replicas get some of the burst.
            clients = await events.client_list()
            readers = [c for c in clients if c["cmd"] == "xreadgroup" and "b" in c["flags"]]
            return len(readers) == 2 * a.settings.batches_in_flight

        await wait_for(all_lanes_waiting, what="both replicas waiting for entries")
        customers = [f"shared-{i}" for i in range(20)]
        provision(up, customers)
        for round_ in range(15):
            # Separate transactions, so entries arrive in many small bursts.
            report(up, customers[round_ % 4 :: 4], value=round_ + 1)

        def consumed(svc: PersistentCacheService) -> float:
            return sample(svc, "persistent_cache_events_consumed_total")

        async def all_acked() -> bool:
            pending = await events.xpending(stream, "persistent-cache")
            length = await events.xlen(stream)
            return pending["pending"] == 0 and consumed(a) + consumed(b) == length

        await wait_for(lambda: converged(a.store, up), timeout=15, what="Redis == upstream")
        await wait_for(all_acked, timeout=15, what="every entry acked")
        assert await differences(a.store, up) == []
        # Each entry went to exactly one replica, and both did their share.
        assert consumed(a) + consumed(b) == await events.xlen(stream)
        assert consumed(a) > 0 and consumed(b) > 0
        assert sample(a, "persistent_cache_events_reclaimed_total") == 0
        assert sample(b, "persistent_cache_events_reclaimed_total") == 0
        names = {c["name"] for c in await events.xinfo_consumers(stream, "persistent-cache")}
        assert names == {"replica-a", "replica-b"}
