"""The read path through the Redis tier: miss, write-back, sharing, versioning, TTLs."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from entitlements.errors import SourceUnavailable
from entitlements.redis.keys import invalidation_channel, state_key
from sidecar.pb import sidecar_pb2 as pb
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import wait_for
from tests.integration.redis_tier.conftest import Tiers, metric, now_ms, with_seats


async def test_miss_is_fetched_written_back_and_shared(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    truth = upstream.put(demo_snapshot("cust-1"))
    first = await tiers.sidecar(upstream)
    assert await first.seat_limit("cust-1") == 5
    assert upstream.fetch_count == 1
    assert metric(first.metrics, "sidecar_redis_misses_total") == 1

    stored = await (await tiers.store()).get("cust-1", None)
    assert stored is not None
    assert stored.state.version == truth.state.version
    assert stored.state.features.keys() == truth.state.features.keys()
    assert stored.feature_usage["api-calls"].current_usage == 7

    second = await tiers.sidecar(upstream)
    assert await second.seat_limit("cust-1") == 5
    assert await second.usage("cust-1") == 7
    assert upstream.fetch_count == 1, "the second sidecar must answer from Redis"
    assert metric(second.metrics, "sidecar_redis_hits_total") >= 1
    assert metric(second.metrics, "sidecar_redis_misses_total") == 0


async def test_write_back_never_overwrites_newer(tiers: Tiers, upstream: InMemorySource) -> None:
    older = upstream.put(demo_snapshot("cust-1"))
    sidecar = await tiers.sidecar(upstream)
    upstream.gate = asyncio.Event()
    read = asyncio.ensure_future(sidecar.seats("cust-1"))
    await wait_for(lambda: upstream.fetch_count == 1, what="the upstream fetch to start")

    outside = await tiers.store()
    newer = with_seats(older, 9, version=older.state.version + 100)
    assert (await outside.apply_snapshot(newer)).applied >= 1
    upstream.gate.set()
    # Redis kept the newer state, and the racing read answers with it rather than upstream's.
    assert (await read).entitlement.value == 9

    stored = await outside.get("cust-1", None)
    assert stored is not None
    assert stored.state.version == newer.state.version
    assert stored.state.features["seats"].usage_limit == 9
    assert await sidecar.seat_limit("cust-1") == 9
    assert upstream.fetch_count == 1


async def test_outside_write_invalidates_hot_cache(tiers: Tiers, upstream: InMemorySource) -> None:
    truth = upstream.put(demo_snapshot("cust-1"))
    sidecar = await tiers.sidecar(upstream)
    assert await sidecar.seat_limit("cust-1") == 5
    assert ("cust-1", None) in sidecar.sidecar.cache

    outside = await tiers.store()
    newer = with_seats(truth, 12, truth.state.version + 10)
    await outside.apply_snapshot(newer, committed_at_ms=now_ms())
    await wait_for(lambda: sidecar.serves_seats("cust-1", 12), what="the invalidation")
    assert metric(sidecar.metrics, "sidecar_propagation_seconds_count") >= 1
    assert upstream.fetch_count == 1, "the new state comes from Redis, not upstream"


async def test_undecodable_invalidation_is_skipped(tiers: Tiers, upstream: InMemorySource) -> None:
    truth = upstream.put(demo_snapshot("cust-1"))
    sidecar = await tiers.sidecar(upstream)
    assert await sidecar.seat_limit("cust-1") == 5
    raw = await tiers.raw()
    assert await raw.publish(invalidation_channel(tiers.prefix), "not json") == 1
    assert await raw.publish(invalidation_channel(tiers.prefix), '{"c": 7}') == 1
    outside = await tiers.store()
    await outside.apply_snapshot(with_seats(truth, 3, truth.state.version + 1))
    await wait_for(lambda: sidecar.serves_seats("cust-1", 3), what="a valid invalidation")


async def test_negative_ttl_serves_from_redis_with_upstream_stopped(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.failure = SourceUnavailable("upstream is stopped for this whole test")
    forever = await tiers.store(ttl_seconds=-1)
    await forever.apply_snapshot(with_seats(demo_snapshot("cust-1"), 5, version=4))

    sidecars = [await tiers.sidecar(upstream, ttl_seconds=-1) for _ in range(2)]
    for sidecar in sidecars:
        assert await sidecar.seat_limit("cust-1") == 5
        assert await sidecar.usage("cust-1") == 7
    raw = await tiers.raw()
    assert await raw.pttl(state_key(tiers.prefix, "cust-1", None)) == -1
    assert upstream.fetch_count == 0


async def test_positive_ttl_is_set_on_write_back(tiers: Tiers, upstream: InMemorySource) -> None:
    upstream.put(demo_snapshot("cust-1"))
    sidecar = await tiers.sidecar(upstream, ttl_seconds=600)
    assert await sidecar.seat_limit("cust-1") == 5
    raw = await tiers.raw()
    assert 0 < await raw.pttl(state_key(tiers.prefix, "cust-1", None)) <= 600_000


async def test_negative_ttl_write_back_never_expires(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1", resource_id="res-1"))
    sidecar = await tiers.sidecar(upstream, ttl_seconds=-1)
    response = await sidecar.stub.GetNumericEntitlement(
        pb.GetNumericEntitlementRequest(
            customer_id="cust-1", feature_id="seats", resource_id="res-1"
        )
    )
    assert response.entitlement.value == 5 and not response.is_fallback
    raw = await tiers.raw()
    assert await raw.pttl(state_key(tiers.prefix, "cust-1", "res-1")) == -1


async def test_expired_state_in_redis_is_refetched(tiers: Tiers, upstream: InMemorySource) -> None:
    upstream.put(demo_snapshot("cust-1"))
    fresh = upstream.put(demo_snapshot("cust-1"))
    # An older copy in Redis whose seats grant ran out an hour ago: upstream has recomputed it.
    stale = with_seats(demo_snapshot("cust-1"), 3, version=fresh.state.version - 1)
    ended = datetime.now(UTC) - timedelta(hours=1)
    seats = replace(stale.state.features["seats"], valid_until=ended)
    stale = replace(
        stale, state=replace(stale.state, features={**stale.state.features, "seats": seats})
    )
    outside = await tiers.store()
    await outside.apply_snapshot(stale)

    sidecar = await tiers.sidecar(upstream)
    assert await sidecar.seat_limit("cust-1") == 5
    assert upstream.fetch_count == 1
    stored = await outside.get("cust-1", None)
    assert stored is not None and stored.state.version == fresh.state.version


async def test_reload_goes_past_redis_to_upstream_and_repairs_redis(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(with_seats(demo_snapshot("cust-1"), 4, version=0))
    truth = upstream.put(with_seats(demo_snapshot("cust-1"), 5, version=0))
    # Redis holds an older copy that nothing announced (a persistent cache that lagged): reads
    # answer from it, and ReloadEntitlements is how a caller gets past it.
    outside = await tiers.store(publish=False)
    await outside.apply_snapshot(with_seats(truth, 3, version=truth.state.version - 1))
    sidecar = await tiers.sidecar(upstream)
    assert await sidecar.seat_limit("cust-1") == 3
    assert upstream.fetch_count == 0

    reply = await sidecar.stub.ReloadEntitlements(
        pb.ReloadEntitlementsRequest(customer_id="cust-1")
    )
    assert reply.entitled_entity_exists
    assert upstream.fetch_count == 1
    assert await sidecar.seat_limit("cust-1") == 5
    stored = await outside.get("cust-1", None)
    assert stored is not None and stored.state.version == truth.state.version

    # Upstream down: the reload fails (False) rather than vouching for the copy in Redis.
    upstream.failure = SourceUnavailable("down")
    reply = await sidecar.stub.ReloadEntitlements(
        pb.ReloadEntitlementsRequest(customer_id="cust-1")
    )
    assert not reply.entitled_entity_exists
