"""SPOOL_BACKEND=redis over a real redis-server: what one sidecar acknowledged while upstream
was down is shipped by another after the first is gone (a deleted pod loses nothing), exactly
once and in order; one shipper at a time under a lease that a dead holder lets lapse; the bound
covers both streams; Redis down means UNAVAILABLE, never a silent local copy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis

from entitlements.errors import ResourceExhausted, SourceUnavailable, SpoolUnavailable
from sidecar.app import Sidecar
from sidecar.model.usage import RawEvent, UsageReport
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.memory import InMemorySource
from sidecar.spool.redis_spool import RedisSpool
from tests.builders import demo_snapshot
from tests.conftest import make_settings, wait_for
from tests.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_server.url)
    yield connection
    await connection.aclose()


def event(i: int) -> RawEvent:
    return RawEvent("login", "c", f"e-{i}")


def usage(i: int) -> UsageReport:
    return UsageReport("c", "api-calls", float(i), idempotency_key=f"u-{i}")


async def test_a_dead_holders_lease_lapses_and_another_ships_from_the_head(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    first = RedisSpool(client, redis_prefix, 1 << 20, lease_ms=200, poll_seconds=0.05)
    second = RedisSpool(client, redis_prefix, 1 << 20, lease_ms=200, poll_seconds=0.05)
    await first.append([event(1), event(2)])
    await first.usage.append([usage(1)])
    assert (await first.peek(10))[0].item == event(1)  # first holds the lease
    assert await second.peek(10) == []  # ... so second does not ship
    # first dies without a goodbye (its lease is never renewed); second takes over.
    await wait_for(
        lambda: _peeks(second, 2), timeout=5, what="the lease to lapse and pass to the other"
    )
    batch = await second.peek(10)
    assert [s.item for s in batch] == [event(1), event(2)]
    await second.delete(batch)
    await second.delete(batch)  # deleting twice frees the bytes once
    assert (second.count, second.bytes) == (0, 0)
    assert [s.item for s in await second.usage.peek(10)] == [usage(1)]
    await second.usage.refresh()  # (not opened: no poller keeps the depth fresh)
    assert second.usage.bytes > 0 and second.held_bytes() == second.usage.bytes


async def _peeks(spool: RedisSpool, count: int) -> bool:
    return len(await spool.peek(10)) == count


async def test_the_bound_covers_both_streams_and_an_append_is_all_or_nothing(
    client: aioredis.Redis, redis_prefix: str
) -> None:
    spool = RedisSpool(client, redis_prefix, 400)
    await spool.usage.append([usage(i) for i in range(4)])
    with pytest.raises(ResourceExhausted, match="SPOOL_MAX_BYTES=400"):
        await spool.append([event(i) for i in range(10)])
    await spool.refresh()
    assert spool.count == 0 and await client.xlen(f"{redis_prefix}:{{spool}}:events") == 0


async def test_acknowledged_in_one_pod_shipped_by_another_once_and_in_order(
    redis_server: RedisServer, redis_prefix: str
) -> None:
    source = InMemorySource()
    source.put(demo_snapshot("c"))
    source.failure = SourceUnavailable("upstream down")
    settings = make_settings(usage_buffering=True, spool_dir="")
    gone = aioredis.Redis.from_url(redis_server.url)
    async with (
        Sidecar(settings, source, spool=RedisSpool(gone, redis_prefix, 1 << 20)) as first,
        grpc.aio.insecure_channel(f"127.0.0.1:{first.grpc_port}") as channel,
    ):
        stub = pb_grpc.SidecarServiceStub(channel)
        await stub.ReportEvents(
            pb.ReportEventsRequest(
                events=[
                    pb.Event(event_name="login", customer_id="c", idempotency_key=f"e-{i}")
                    for i in range(5)
                ]
            )
        )
        for i, (value, set_it) in enumerate([(2, False), (20, True), (3, False)]):
            behavior = pb.USAGE_UPDATE_BEHAVIOR_SET if set_it else pb.USAGE_UPDATE_BEHAVIOR_DELTA
            await stub.ReportUsage(
                pb.ReportUsageRequest(
                    customer_id="c",
                    feature_id="api-calls",
                    value=value,
                    idempotency_key=f"u-{i}",
                    update_behavior=behavior,
                )
            )
    await gone.aclose()  # the pod is deleted with everything it had

    source.failure = None
    survivor = aioredis.Redis.from_url(redis_server.url)
    try:
        async with Sidecar(
            settings, source, spool=RedisSpool(survivor, redis_prefix, 1 << 20)
        ) as second:
            spool = second.spool
            assert spool is not None
            await wait_for(
                lambda: spool.events == 0 and spool.usage.count == 0, timeout=15, what="drain"
            )
            assert [e.idempotency_key for e in source.events] == [f"e-{i}" for i in range(5)]
            held = source.get("c")
            assert held is not None
            assert held.feature_usage["api-calls"].current_usage == 23  # 7 + 2, SET 20, + 3
    finally:
        await survivor.aclose()


async def test_redis_down_is_unavailable_not_a_local_copy(
    own_redis: RedisServer, redis_prefix: str
) -> None:
    source = InMemorySource()
    connection = aioredis.Redis.from_url(own_redis.url, socket_timeout=1)
    try:
        async with (
            Sidecar(
                make_settings(spool_dir=""),
                source,
                spool=RedisSpool(connection, redis_prefix, 1 << 20),
            ) as sidecar,
            grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
        ):
            own_redis.kill()
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await pb_grpc.SidecarServiceStub(channel).ReportEvents(
                    pb.ReportEventsRequest(
                        events=[pb.Event(event_name="x", customer_id="c", idempotency_key="k")]
                    )
                )
            assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
            assert source.events == []
            spool = sidecar.spool
            assert spool is not None
            with pytest.raises(SpoolUnavailable):
                await spool.append([event(1)])
    finally:
        await connection.aclose()
