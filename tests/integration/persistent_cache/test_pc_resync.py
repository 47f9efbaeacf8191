"""Resync: an empty cache, a trimmed stream, a flushed or restarted Redis all heal from upstream."""

from __future__ import annotations

from pathlib import Path

import pytest

import persistent_cache.resync as resync_module
from entitlements.redis.keys import change_stream, state_key
from persistent_cache.service import PersistentCacheService
from persistent_cache.upstream_feed import SnapshotPage, UpstreamFeed
from tests.conftest import wait_for
from tests.integration.persistent_cache.pc_support import (
    converged,
    differences,
    provision,
    redis_client,
    report,
    resyncs,
    running_upstream,
    sample,
    service_settings,
    state_keys,
    stream_length,
)
from tests.redis_server import RedisServer
from upstream.server import UpstreamServer


def head(up: UpstreamServer) -> int:
    with up.store.transaction() as tx:
        return tx.head_seq()


async def published(server: RedisServer, prefix: str, up: UpstreamServer) -> bool:
    """Every event upstream committed is in the stream (the stream is never trimmed here)."""
    return await stream_length(server, change_stream(prefix)) == head(up)


async def test_empty_cache_and_trimmed_stream_converge_through_the_snapshot(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    stream = change_stream(redis_prefix)
    async with (
        redis_client(redis_server) as events,
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
    ):
        customers = [f"early-{i}" for i in range(5)]
        provision(up, customers)
        report(up, customers, value=7)
        await wait_for(lambda: published(redis_server, redis_prefix, up), what="events published")
        # Everything happened before the consumer existed, and the stream lost it all.
        await events.xtrim(stream, maxlen=0)
        assert await events.xlen(stream) == 0

        async with PersistentCacheService(service_settings(redis_prefix, redis_server, up)) as svc:
            await wait_for(lambda: converged(svc.store, up), timeout=10, what="convergence")
            await wait_for(lambda: resyncs(svc, "startup") == 1, what="startup resync done")
            assert await svc.store.get_epoch() is not None
            assert resyncs(svc, "startup") == 1
            assert sample(svc, "persistent_cache_events_consumed_total") == 0
            # The startup resync covered the trimmed entries: no second resync for that gap.
            assert await svc.watchdog.check() is None

            # Later changes arrive through the stream.
            report(up, customers[:2], value=1)
            await wait_for(lambda: converged(svc.store, up), timeout=10, what="live changes")
            assert sample(svc, "persistent_cache_events_consumed_total") > 0


async def test_entries_trimmed_before_the_group_read_them_trigger_a_gap_resync(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    stream = change_stream(redis_prefix)
    async with (
        redis_client(redis_server) as events,
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
    ):
        customers = [f"gap-{i}" for i in range(4)]
        provision(up, customers)
        settings = service_settings(redis_prefix, redis_server, up, consumer_name="gap-a")
        async with PersistentCacheService(settings) as svc:
            await wait_for(lambda: converged(svc.store, up), timeout=10, what="first sync")
            await wait_for(lambda: resyncs(svc) == 1, what="startup resync done")
        # No replica runs while upstream moves on, and the stream is trimmed past the group.
        report(up, customers, value=3)
        await wait_for(lambda: published(redis_server, redis_prefix, up), what="events published")
        await events.xtrim(stream, maxlen=0)

        async with PersistentCacheService(settings) as svc:
            await wait_for(lambda: resyncs(svc, "gap") == 1, timeout=10, what="gap resync")
            assert resyncs(svc, "startup") == 0  # the epoch was still there
            assert await differences(svc.store, up) == []
            assert await svc.watchdog.check() is None


async def test_flushall_is_healed_by_the_epoch_check(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    prefix = "flush"
    async with (
        running_upstream(tmp_path, own_redis, prefix) as up,
        PersistentCacheService(service_settings(prefix, own_redis, up)) as svc,
    ):
        customers = [f"flush-{i}" for i in range(5)]
        provision(up, customers)
        report(up, customers, value=4)
        await wait_for(lambda: converged(svc.store, up), timeout=10, what="first sync")
        await wait_for(lambda: resyncs(svc) == 1, what="startup resync done")
        epoch = await svc.store.get_epoch()

        client = own_redis.client()
        client.flushall()
        client.close()
        await wait_for(lambda: resyncs(svc, "epoch_missing") == 1, timeout=10, what="resync")
        await wait_for(lambda: converged(svc.store, up), timeout=10, what="healed")
        assert await svc.store.get_epoch() not in (None, epoch)

        # The stream and its group went with the flush; consumption resumes on the new ones.
        report(up, customers[:1], value=1)
        await wait_for(lambda: converged(svc.store, up), timeout=10, what="live after flush")


async def test_redis_restart_is_survived_without_restarting_the_service(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    prefix = "restart"
    async with (
        running_upstream(tmp_path, own_redis, prefix) as up,
        PersistentCacheService(service_settings(prefix, own_redis, up)) as svc,
    ):
        customers = [f"restart-{i}" for i in range(4)]
        provision(up, customers)
        await wait_for(lambda: converged(svc.store, up), timeout=10, what="first sync")
        await wait_for(lambda: resyncs(svc) == 1, what="startup resync done")

        own_redis.kill()
        report(up, customers, value=2)  # committed upstream while Redis is down
        own_redis.start()

        # Whichever the watchdog saw first: the epoch or the consumer group gone.
        await wait_for(lambda: resyncs(svc) >= 2, timeout=20, what="healing resync")
        await wait_for(lambda: converged(svc.store, up), timeout=20, what="healed")
        report(up, customers, value=1)
        await wait_for(lambda: converged(svc.store, up), timeout=20, what="live after restart")
        # The same loop carried on through the outage; nothing was restarted.
        assert svc.consumer.running and await svc.is_ready()


async def test_a_key_redis_refuses_is_skipped_and_the_rest_resynced(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    async with (
        redis_client(redis_server) as events,
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
    ):
        customers = [f"refused-{i}" for i in range(4)]
        provision(up, customers)
        await wait_for(lambda: published(redis_server, redis_prefix, up), what="events published")
        await events.xtrim(change_stream(redis_prefix), maxlen=0)
        # A foreign string where one customer's hash belongs: Redis refuses every write to it.
        await events.set(state_key(redis_prefix, "refused-2", None), "squatter")

        async with PersistentCacheService(service_settings(redis_prefix, redis_server, up)) as svc:
            # The startup resync (the cache is empty), or a new one if it already finished.
            result = await svc.resync()
            assert result.skipped == 1
            assert result.states == len(state_keys(up)) - 1
            assert await svc.store.get_epoch() == result.epoch
            for customer in customers:
                got = await svc.store.get(customer, None)
                assert (got is None) == (customer == "refused-2"), customer
        assert await events.get(state_key(redis_prefix, "refused-2", None)) == "squatter"



async def test_the_snapshot_is_read_in_pages(
    redis_server: RedisServer, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resync_module, "SNAPSHOT_PAGE", 2)
    async with (
        redis_client(redis_server) as events,
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
    ):
        provision(up, [f"paged-{i}" for i in range(7)])
        await wait_for(lambda: published(redis_server, redis_prefix, up), what="events published")
        await events.xtrim(change_stream(redis_prefix), maxlen=0)
        fetched: list[str | None] = []
        original = UpstreamFeed.snapshot_page

        async def spy(feed: UpstreamFeed, after: str | None, limit: int) -> SnapshotPage:
            fetched.append(after)
            return await original(feed, after, limit)

        monkeypatch.setattr(UpstreamFeed, "snapshot_page", spy)
        async with PersistentCacheService(service_settings(redis_prefix, redis_server, up)) as svc:
            result = await svc.resync()
            assert result.states == len(state_keys(up)) == 7
            assert len(fetched) == 4 and fetched[0] is None and None not in fetched[1:]
            await wait_for(lambda: converged(svc.store, up), what="cache == upstream")
