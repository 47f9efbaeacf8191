"""Redis failures: reads keep answering without Redis, and the tier recovers on its own."""

from __future__ import annotations

import asyncio

import grpc

from entitlements.errors import SourceUnavailable
from sidecar.app import Sidecar
from sidecar.observability import Metrics
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import wait_for
from tests.integration.redis_tier.conftest import Tiers, metric, with_seats
from tests.redis_server import RedisServer


async def test_reads_survive_redis_down_and_use_it_again_when_back(
    own_redis: RedisServer, own_tiers: Tiers, upstream: InMemorySource
) -> None:
    for customer in ("cust-1", "cust-2", "cust-9"):
        upstream.put(demo_snapshot(customer))
    sidecar = await own_tiers.sidecar(upstream)
    assert await sidecar.seat_limit("cust-1") == 5

    own_redis.kill()
    # Not cached anywhere: answered by upstream, not an error and not a fallback.
    assert await sidecar.seat_limit("cust-2") == 5
    assert upstream.fetch_count == 2
    assert metric(sidecar.metrics, "sidecar_redis_client_errors_total") >= 1

    # Upstream down as well: fallback values, still no gRPC error.
    upstream.failure = SourceUnavailable("upstream down too")
    fallback = await sidecar.stub.GetBooleanEntitlement(
        pb.GetBooleanEntitlementRequest(customer_id="cust-3", feature_id="fb-flag")
    )
    assert fallback.is_fallback and fallback.has_access
    unknown = await sidecar.seats("cust-4")
    assert unknown.is_fallback and not unknown.has_access
    upstream.failure = None

    own_redis.start()
    # Redis came back empty; state only Redis has proves the reads go through it again.
    outside = await own_tiers.store()
    await outside.apply_snapshot(with_seats(demo_snapshot("cust-9"), 42, version=1_000))
    hits = metric(sidecar.metrics, "sidecar_redis_hits_total")
    await wait_for(
        lambda: sidecar.serves_seats("cust-9", 42), timeout=20, what="reads to use Redis again"
    )
    assert metric(sidecar.metrics, "sidecar_redis_hits_total") > hits
    # And the invalidation stream is back: an outside write reaches the hot cache.
    await outside.apply_snapshot(with_seats(demo_snapshot("cust-9"), 43, version=1_001))
    await wait_for(
        lambda: sidecar.serves_seats("cust-9", 43), timeout=20, what="invalidations again"
    )


async def test_lost_subscription_revalidates_hot_cache(
    own_tiers: Tiers, upstream: InMemorySource
) -> None:
    truth = upstream.put(demo_snapshot("cust-1"))
    sidecar = await own_tiers.sidecar(upstream)
    assert await sidecar.seat_limit("cust-1") == 5

    # A change that announces nothing: only a revalidation can bring it in.
    quiet = await own_tiers.store(publish=False)
    await quiet.apply_snapshot(with_seats(truth, 77, truth.state.version + 1))
    assert await sidecar.seat_limit("cust-1") == 5, "served from the hot cache"

    raw = await own_tiers.raw()
    assert await raw.client_kill_filter(_type="pubsub") >= 1
    await wait_for(
        lambda: sidecar.serves_seats("cust-1", 77), timeout=20, what="the hot cache to resync"
    )
    assert metric(sidecar.metrics, "sidecar_redis_client_errors_total") >= 1

    # Subscribed again: announced changes arrive as before.
    loud = await own_tiers.store()
    await loud.apply_snapshot(with_seats(truth, 78, truth.state.version + 2))
    await wait_for(lambda: sidecar.serves_seats("cust-1", 78), timeout=20, what="invalidations")


async def test_refetch_coordination_survives_a_killed_subscription(
    own_tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1"))
    upstream.put(demo_snapshot("cust-2"))
    source = own_tiers.source(upstream)
    assert (await source.fetch("cust-1", None)).state.customer_id == "cust-1"
    raw = await own_tiers.raw()
    await raw.client_kill_filter(_type="pubsub")
    # The shared refetch subscription died with it: the next miss either notices and fetches
    # alone or resubscribes; either way it answers, and the one after coordinates again.
    assert (await source.fetch("cust-2", None)).state.customer_id == "cust-2"
    await raw.delete(*await raw.keys(f"{own_tiers.prefix}:*"))
    assert (await source.fetch("cust-2", None)).state.customer_id == "cust-2"
    assert upstream.fetch_count == 3


async def test_starts_with_redis_down_and_gets_ready_when_it_comes(
    own_redis: RedisServer, own_tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1"))
    own_redis.kill()
    metrics = Metrics()
    app = Sidecar(
        own_tiers.settings(),
        own_tiers.source(upstream, metrics=metrics, close=False),
        metrics=metrics,
    )
    starting = asyncio.ensure_future(app.start())
    try:
        await wait_for(lambda: app.grpc_port != 0, what="the gRPC server to bind")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
            stub = pb_grpc.SidecarServiceStub(channel)
            # Not ready (no invalidations can reach it), yet reads answer from upstream.
            response = await stub.GetNumericEntitlement(
                pb.GetNumericEntitlementRequest(customer_id="cust-1", feature_id="seats")
            )
            assert response.entitlement.value == 5 and not response.is_fallback
            assert not app.is_ready()
        own_redis.start()
        await wait_for(app.is_ready, timeout=20, what="readiness once Redis is up")
        await starting
    finally:
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await app.stop()
