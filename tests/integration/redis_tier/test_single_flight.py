"""Cross-process single-flight: one upstream fetch per Redis miss, however many processes miss."""

from __future__ import annotations

import asyncio

import pytest

from entitlements.errors import SourceUnavailable
from entitlements.redis.keys import lock_key
from sidecar.observability import Metrics
from sidecar.pb import sidecar_pb2 as pb
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import wait_for
from tests.integration.redis_tier.conftest import Tiers, metric

PROCESSES = 3
CALLERS = 50


async def test_concurrent_misses_across_processes_make_one_fetch(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    truth = upstream.put(demo_snapshot("cust-1"))
    metrics = [Metrics() for _ in range(PROCESSES)]
    # Separate clients and connections each, as separate processes would have; calling the
    # sources directly leaves out the service's in-process single-flight on purpose.
    sources = [tiers.source(upstream, metrics=m) for m in metrics]
    upstream.gate = asyncio.Event()
    calls = [
        asyncio.ensure_future(source.fetch("cust-1", None))
        for source in sources
        for _ in range(CALLERS)
    ]

    def all_waiting() -> bool:
        waits = sum(metric(m, "sidecar_refetch_lock_waits_total") for m in metrics)
        return upstream.fetch_count == 1 and waits == PROCESSES * CALLERS - 1

    await wait_for(all_waiting, timeout=15, what="one leader and every other caller waiting")
    upstream.gate.set()
    results = await asyncio.gather(*calls)

    assert upstream.fetch_count == 1
    assert all(r.state.version == truth.state.version for r in results)
    assert all(r.state.features["seats"].usage_limit == 5 for r in results)
    assert sum(metric(m, "sidecar_redis_client_errors_total") for m in metrics) == 0


async def test_concurrent_grpc_reads_on_several_sidecars_make_one_fetch(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1"))
    sidecars = [await tiers.sidecar(upstream) for _ in range(PROCESSES)]
    upstream.gate = asyncio.Event()
    request = pb.GetBooleanEntitlementRequest(customer_id="cust-1", feature_id="sso")
    calls = [
        asyncio.ensure_future(s.stub.GetBooleanEntitlement(request))
        for s in sidecars
        for _ in range(CALLERS)
    ]

    def waiting() -> bool:
        waits = sum(metric(s.metrics, "sidecar_refetch_lock_waits_total") for s in sidecars)
        return upstream.fetch_count == 1 and waits == PROCESSES - 1

    await wait_for(waiting, timeout=15, what="one leader, the other sidecars waiting")
    upstream.gate.set()
    results = await asyncio.gather(*calls)
    assert all(r.has_access and not r.is_fallback for r in results)
    assert upstream.fetch_count == 1


async def test_failed_leader_lets_waiters_fetch_themselves(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1"))
    metrics = [Metrics(), Metrics()]
    leader, follower = (tiers.source(upstream, metrics=m) for m in metrics)
    upstream.gate = asyncio.Event()
    upstream.failure = SourceUnavailable("upstream down")
    first = asyncio.ensure_future(leader.fetch("cust-1", None))
    await wait_for(lambda: upstream.fetch_count == 1, what="the leader's fetch")
    second = asyncio.ensure_future(follower.fetch("cust-1", None))
    await wait_for(
        lambda: metric(metrics[1], "sidecar_refetch_lock_waits_total") == 1, what="the waiter"
    )
    upstream.gate.set()
    with pytest.raises(SourceUnavailable):
        await first
    # The leader published its error: the waiter tried upstream itself instead of waiting on.
    with pytest.raises(SourceUnavailable):
        await second
    assert upstream.fetch_count == 2
    raw = await tiers.raw()
    assert await raw.exists(lock_key(tiers.prefix, "cust-1", None)) == 0, "lock released"


async def test_waiter_of_a_vanished_leader_fetches_after_its_timeout(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1"))
    # A lock held by a leader that died without publishing.
    outside = await tiers.store()
    assert await outside.try_lock("cust-1", None, "crashed-leader", 60_000)
    waiter = tiers.source(upstream, wait_timeout=0.3)
    snapshot = await waiter.fetch("cust-1", None)
    assert snapshot.state.features["seats"].usage_limit == 5
    assert upstream.fetch_count == 1
    stored = await outside.get("cust-1", None)
    assert stored is not None, "the waiter wrote its own fetch back"
