"""RedisStore against a real three-master Redis Cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from entitlements.model.events import ChangeEvent, EventKind
from entitlements.model.state import UsageRecord
from entitlements.redis.invalidation import Invalidation
from entitlements.redis.keys import invalidation_channel, state_key
from entitlements.redis.packing import HiredisPackingConnection, use_hiredis_packing_cluster
from entitlements.redis.scripts import WRITE_SCRIPT
from entitlements.redis.store import ApplyResult, RedisStore
from persistent_cache.service import PersistentCacheService
from sidecar.app import Sidecar
from sidecar.main import _source as build_source
from sidecar.observability import Metrics
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from tests.builders import NOW, demo_snapshot
from tests.conftest import make_settings, wait_for
from tests.integration.persistent_cache.pc_support import (
    API_KEY,
    converged,
    provision,
    report,
    resyncs,
    running_upstream,
    service_settings,
)
from tests.integration.redis.cluster import LocalRedisCluster
from tests.integration.redis.support import next_message, subscribed, versioned
from tests.redis_server import RedisServer

COMMITTED = datetime(2026, 6, 15, 12, 0, 5, tzinfo=UTC)
CUSTOMERS = [f"cluster-cust-{i}" for i in range(60)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(3) as running:
        yield running


@pytest.fixture
async def cluster_client(cluster: LocalRedisCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    # Loads the slot map, which the tests consult to check where keys land.
    await client.initialize()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def cluster_store(cluster_client: RedisCluster, redis_prefix: str) -> RedisStore:
    return RedisStore(cluster_client, prefix=redis_prefix, ttl_seconds=600)


def owner(client: RedisCluster, key: str) -> ClusterNode:
    node = client.get_node_from_key(key)
    assert node is not None
    return node


def owners(client: RedisCluster, keys: list[str]) -> set[str]:
    return {owner(client, key).name for key in keys}


async def test_apply_and_get_across_slots(
    cluster_store: RedisStore, cluster_client: RedisCluster
) -> None:
    keys = [state_key(cluster_store.prefix, c, None) for c in CUSTOMERS]
    # The test only means something if the customers really live on different masters.
    assert len({key_slot(k.encode()) for k in keys}) > 30
    assert len(owners(cluster_client, keys)) == 3

    snapshots = {c: versioned(demo_snapshot(c, "res"), state=2) for c in CUSTOMERS}
    for snap in snapshots.values():
        assert await cluster_store.apply_snapshot(snap) == ApplyResult(4, 0)
    for customer, snap in snapshots.items():
        assert await cluster_store.get(customer, "res") == snap
        assert await cluster_store.apply_snapshot(versioned(snap, state=1)) == ApplyResult(0, 4)

    record = UsageRecord(current_usage=99, updated_at=NOW, version=5)
    result = await cluster_store.apply_usage(CUSTOMERS[7], "res", record, feature_id="api-calls")
    assert result == ApplyResult(1, 0)
    got = await cluster_store.get(CUSTOMERS[7], "res")
    assert got is not None
    assert got.feature_usage["api-calls"] == record


async def test_apply_events_batch_spanning_every_master(
    cluster_store: RedisStore, cluster_client: RedisCluster
) -> None:
    events: list[ChangeEvent] = []
    for seq, customer in enumerate(CUSTOMERS, start=1):
        snap = versioned(demo_snapshot(customer), state=1)
        events.append(
            ChangeEvent(EventKind.ENTITLEMENTS, seq, customer, None, 1, COMMITTED, snapshot=snap)
        )
    usage = UsageRecord(current_usage=3, updated_at=NOW, version=9)
    for seq, customer in enumerate(CUSTOMERS[:20], start=100):
        events.append(
            ChangeEvent(
                EventKind.USAGE,
                seq,
                customer,
                None,
                9,
                COMMITTED,
                currency_id="ai-credits",
                usage=usage,
            )
        )
    events.append(ChangeEvent(EventKind.DELETED, 500, CUSTOMERS[-1], None, 2, COMMITTED))
    # A replay of the first event at the very end: stale, wherever its slot lives.
    events.append(events[0])

    results = await cluster_store.apply_events(events)

    assert results == (
        [ApplyResult(4, 0)] * len(CUSTOMERS)
        + [ApplyResult(1, 0)] * 20
        + [ApplyResult(1, 0), ApplyResult(0, 4)]
    )
    for customer in CUSTOMERS[:20]:
        got = await cluster_store.get(customer, None)
        assert got is not None
        assert got.credit_usage["ai-credits"] == usage
    assert await cluster_store.get(CUSTOMERS[25], None) == versioned(
        demo_snapshot(CUSTOMERS[25]), state=1
    )
    assert await cluster_store.get(CUSTOMERS[-1], None) is None


async def apply_script_cached(client: RedisCluster) -> list[bool]:
    """Whether each master has the write script in its script cache."""
    found = []
    for node in client.get_primaries():
        exists = await client.execute_command("SCRIPT EXISTS", WRITE_SCRIPT.sha, target_nodes=node)
        found.append(bool(next(iter(exists))))
    return found


async def test_lost_script_cache_on_every_node_is_transparent(
    cluster_store: RedisStore, cluster_client: RedisCluster
) -> None:
    await cluster_store.apply_snapshot(versioned(demo_snapshot(CUSTOMERS[0]), state=1))
    await cluster_client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.ALL_NODES)
    assert await apply_script_cached(cluster_client) == [False, False, False]

    customers = CUSTOMERS[1:31]
    keys = [state_key(cluster_store.prefix, c, None) for c in customers]
    assert len(owners(cluster_client, keys)) == 3
    events = [
        ChangeEvent(
            EventKind.ENTITLEMENTS,
            seq,
            customer,
            None,
            1,
            COMMITTED,
            snapshot=versioned(demo_snapshot(customer), state=1),
        )
        for seq, customer in enumerate(customers, start=1)
    ]
    assert await cluster_store.apply_events(events) == [ApplyResult(4, 0)] * 30
    # Each master answered NOSCRIPT and got the script back through EVAL.
    assert await apply_script_cached(cluster_client) == [True, True, True]

    await cluster_client.execute_command("SCRIPT FLUSH", target_nodes=RedisCluster.ALL_NODES)
    snap = versioned(demo_snapshot(CUSTOMERS[40]), state=3)
    assert await cluster_store.apply_snapshot(snap) == ApplyResult(4, 0)
    assert await cluster_store.get(CUSTOMERS[40], None) == snap
    await cluster_store.unlock(CUSTOMERS[40], None, "nobody")


async def test_lock_epoch_and_ping(cluster_store: RedisStore) -> None:
    for customer in CUSTOMERS[:10]:
        assert await cluster_store.try_lock(customer, "r", "a", 10_000)
        assert not await cluster_store.try_lock(customer, "r", "b", 10_000)
        await cluster_store.unlock(customer, "r", "b")
        assert not await cluster_store.try_lock(customer, "r", "b", 10_000)
        await cluster_store.unlock(customer, "r", "a")
        assert await cluster_store.try_lock(customer, "r", "b", 10_000)

    assert await cluster_store.get_epoch() is None
    await cluster_store.set_epoch("e-1")
    assert await cluster_store.get_epoch() == "e-1"
    assert await cluster_store.ping() is True


async def test_invalidation_reaches_a_subscriber_on_another_node(
    cluster: LocalRedisCluster, cluster_store: RedisStore, cluster_client: RedisCluster
) -> None:
    # Pick a customer owned by a master other than the one the subscriber talks to.
    subscriber_port = cluster.ports[1]
    customer = next(
        c
        for c in CUSTOMERS
        if owner(cluster_client, state_key(cluster_store.prefix, c, None)).port != subscriber_port
    )
    plain = Redis(host="127.0.0.1", port=subscriber_port)
    try:
        async with subscribed(plain, invalidation_channel(cluster_store.prefix)) as pubsub:
            await cluster_store.apply_snapshot(
                versioned(demo_snapshot(customer), state=4), committed_at_ms=77
            )
            assert Invalidation.decode(await next_message(pubsub)) == Invalidation(
                customer, None, 4, 77
            )
    finally:
        await plain.aclose()


async def test_upstream_to_sidecar_through_the_cluster(
    cluster: LocalRedisCluster, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    """The whole topology on a cluster, each piece built as its entry point builds it: upstream
    streams to a plain Redis, the persistent cache reads it and writes the cluster, a sidecar
    with ``REDIS_CLUSTER=1`` reads the cluster and hears invalidations published on any node."""
    seed = cluster.ports[0]
    async with running_upstream(tmp_path, redis_server, redis_prefix) as up:
        cache_settings = service_settings(
            redis_prefix,
            redis_server,
            up,
            redis_port=seed,
            redis_cluster=True,
            events_redis_url=redis_server.url,
        )
        async with PersistentCacheService(cache_settings) as svc:
            await wait_for(lambda: resyncs(svc, "startup") == 1, what="startup resync")
            customers = [f"topology-{i}" for i in range(8)]
            provision(up, customers, plan="pro")
            await wait_for(lambda: converged(svc.store, up), timeout=15, what="cluster == upstream")

            settings = make_settings(
                api_url=f"http://127.0.0.1:{up.port}",
                api_key=API_KEY,
                redis_prefix=redis_prefix,
                redis_host="127.0.0.1",
                redis_port=seed,
                redis_cluster=True,
                redis_timeout_ms=2000,
            )
            metrics = Metrics()
            source = build_source(settings, metrics)
            assert source is not None
            async with (
                Sidecar(settings, source, metrics=metrics) as sidecar,
                grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
            ):
                stub = pb_grpc.SidecarServiceStub(channel)

                async def usage(customer: str) -> float:
                    reply = await stub.GetMeteredEntitlement(
                        pb.GetMeteredEntitlementRequest(
                            customer_id=customer, feature_id="api-calls"
                        )
                    )
                    assert not reply.is_fallback
                    return reply.entitlement.current_usage

                for customer in customers:
                    assert await usage(customer) == 0
                hits = metrics.registry.get_sample_value("sidecar_redis_hits_total") or 0
                assert hits == len(customers), "every first read must come from the cluster"
                # The keys live on every master, and the sidecar listens on the seed node only:
                # invalidations from the other masters must reach it too.
                keys = [state_key(redis_prefix, c, None) for c in customers]
                assert len(owners(svc.store._client, keys)) == 3  # type: ignore[arg-type]

                report(up, customers, value=3)
                for customer in customers:

                    async def sees_usage(customer: str = customer) -> bool:
                        return await usage(customer) == 3

                    await wait_for(sees_usage, what=f"{customer} sees the new usage")
                propagated = metrics.registry.get_sample_value("sidecar_propagation_seconds_count")
                assert propagated is not None and propagated >= len(customers)


async def test_cluster_clients_pack_with_hiredis_on_every_node(cluster: LocalRedisCluster) -> None:
    client = use_hiredis_packing_cluster(RedisCluster(host="127.0.0.1", port=cluster.ports[0]))
    try:
        keys = [f"packing-{n}" for n in range(40)]
        for key in keys:
            await client.set(key, key)
        assert [await client.get(key) for key in keys] == [k.encode() for k in keys]
        nodes = client.get_nodes()
        assert len(nodes) == 3
        assert {node.connection_class for node in nodes} == {HiredisPackingConnection}
    finally:
        await client.aclose()
