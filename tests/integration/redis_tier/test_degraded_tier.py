"""A Redis tier that is slow or holds only expired data still gives the best answer held."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from entitlements.errors import SourceUnavailable
from sidecar.main import redis_clients
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import wait_for
from tests.integration.redis_tier.conftest import Tiers, metric, with_seats
from tests.redis_server import RedisServer


async def test_an_expired_copy_in_redis_is_served_when_upstream_fails(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    # Upstream's truth is newer than what Redis holds, but upstream cannot be reached.
    fresh = upstream.put(with_seats(demo_snapshot("cust-1"), 5, version=0))
    stale = with_seats(demo_snapshot("cust-1"), 3, version=fresh.state.version - 1)
    ended = datetime.now(UTC) - timedelta(hours=1)
    seats = replace(stale.state.features["seats"], valid_until=ended)
    stale = replace(
        stale, state=replace(stale.state, features={**stale.state.features, "seats": seats})
    )
    await (await tiers.store()).apply_snapshot(stale)
    upstream.failure = SourceUnavailable("upstream is down")

    sidecar = await tiers.sidecar(upstream)
    answer = await sidecar.seats("cust-1")
    assert not answer.is_fallback and answer.entitlement.value == 3
    registry = sidecar.metrics.registry
    assert registry.get_sample_value("sidecar_stale_served_total", {"tier": "redis"}) == 1
    # Upstream answering again replaces it.
    upstream.failure = None
    await wait_for(lambda: sidecar.serves_seats("cust-1", 5), what="the refetch")


async def test_a_stalled_redis_opens_the_breaker_and_reads_stop_paying_for_it(
    own_redis: RedisServer, own_tiers: Tiers, upstream: InMemorySource
) -> None:
    for n in range(10):
        upstream.put(demo_snapshot(f"cust-{n}"))
    own_tiers.timeout_ms = 200
    sidecar = await own_tiers.sidecar(upstream)
    store = sidecar.source._store
    calls = 0
    real_get = store.get

    async def counted_get(customer_id: str, resource_id: str | None) -> object:
        nonlocal calls
        calls += 1
        return await real_get(customer_id, resource_id)

    store.get = counted_get  # type: ignore[method-assign, assignment]
    assert own_redis.process is not None
    os.kill(own_redis.process.pid, signal.SIGSTOP)
    try:
        n = 0
        while metric(sidecar.metrics, "sidecar_redis_breaker_open") == 0:
            assert n < 6, "the breaker did not open"
            # Every read still answers, from upstream, after at most one Redis timeout.
            assert await sidecar.seat_limit(f"cust-{n}") == 5
            n += 1
        before = calls
        for m in range(n, 10):
            answer = await sidecar.seats(f"cust-{m}")
            assert not answer.is_fallback and answer.entitlement.value == 5
        assert calls == before, "reads asked Redis while the breaker was open"
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
    await wait_for(
        lambda: metric(sidecar.metrics, "sidecar_redis_breaker_open") == 0,
        timeout=20,
        what="the probe to close the breaker",
    )
    outside = await own_tiers.store()
    await outside.apply_snapshot(with_seats(demo_snapshot("cust-42"), 42, version=1_000))
    assert await sidecar.seat_limit("cust-42") == 42  # only Redis has it
    assert calls > before


def test_a_timed_out_command_is_not_retried(tiers: Tiers) -> None:
    """One Redis timeout per read at most: only a dead pooled connection is retried."""
    client, _ = redis_clients(tiers.settings())
    assert isinstance(client, Redis)
    retry = client.get_retry()
    assert retry is not None
    assert retry.get_retries() == 1
    assert set(retry._supported_errors) == {RedisConnectionError}
