"""Sidecars and Redis-tier sources over real redis-server processes, with an in-memory upstream."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis

from entitlements.model.state import CustomerSnapshot
from entitlements.redis.store import RedisStore
from sidecar.app import Sidecar
from sidecar.main import redis_store
from sidecar.observability import Metrics
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.settings import Settings
from sidecar.source.memory import InMemorySource
from sidecar.source.redis_tier import RedisTieredSource
from tests.builders import numeric
from tests.conftest import AsyncStub, make_settings
from tests.redis_server import RedisServer

# Generous next to the production default (100 ms): a busy test machine must not turn a slow
# command into a fallback to upstream and make fetch counts flaky.
TEST_REDIS_TIMEOUT_MS = 2000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def with_seats(snapshot: CustomerSnapshot, seats: float, version: int) -> CustomerSnapshot:
    """The same customer with another seat limit, at ``version``."""
    features = {**snapshot.state.features, "seats": numeric("seats", seats)}
    return replace(snapshot, state=replace(snapshot.state, features=features, version=version))


def metric(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


class RunningSidecar:
    """A started sidecar over the Redis tier, and a stub to call it."""

    def __init__(self, sidecar: Sidecar, stub: AsyncStub, source: RedisTieredSource) -> None:
        self.sidecar = sidecar
        self.stub = stub
        self.source = source

    @property
    def metrics(self) -> Metrics:
        return self.sidecar.metrics

    async def seats(self, customer_id: str) -> pb.GetNumericEntitlementResponse:
        return await self.stub.GetNumericEntitlement(
            pb.GetNumericEntitlementRequest(customer_id=customer_id, feature_id="seats")
        )

    async def seat_limit(self, customer_id: str) -> float:
        response = await self.seats(customer_id)
        assert not response.is_fallback, "expected a real answer, got a fallback"
        return response.entitlement.value

    async def serves_seats(self, customer_id: str, limit: float) -> bool:
        """For wait_for: whether a read now answers ``limit`` seats."""
        return await self.seat_limit(customer_id) == limit

    async def usage(self, customer_id: str, feature_id: str = "api-calls") -> float:
        response = await self.stub.GetMeteredEntitlement(
            pb.GetMeteredEntitlementRequest(customer_id=customer_id, feature_id=feature_id)
        )
        assert not response.is_fallback
        return response.entitlement.current_usage


class Tiers:
    """Builds Redis-tier sources and sidecars on one Redis and prefix; closes them all."""

    def __init__(self, server: RedisServer, prefix: str, stack: contextlib.AsyncExitStack) -> None:
        self.server = server
        self.prefix = prefix
        self._stack = stack
        # Tests of a stalled Redis lower it, so each timeout it costs is short.
        self.timeout_ms = TEST_REDIS_TIMEOUT_MS

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_prefix": self.prefix,
            "redis_host": "127.0.0.1",
            "redis_port": self.server.port,
            "redis_timeout_ms": self.timeout_ms,
        }
        values.update(overrides)
        return make_settings(**values)

    def source(
        self,
        upstream: InMemorySource,
        *,
        metrics: Metrics | None = None,
        ttl_seconds: int = 3600,
        close: bool = True,
        **options: Any,
    ) -> RedisTieredSource:
        """A tier with clients of its own, built by ``sidecar.main``."""
        settings = self.settings(redis_keys_ttl_seconds=ttl_seconds)
        store, pubsub_client, owned = redis_store(settings)
        source = RedisTieredSource(
            store,
            upstream,
            pubsub_client=pubsub_client,
            metrics=metrics,
            owned_clients=owned,
            **options,
        )
        if close:
            self._stack.push_async_callback(source.aclose)
        return source

    async def sidecar(
        self, upstream: InMemorySource, *, ttl_seconds: int = 3600, **options: Any
    ) -> RunningSidecar:
        metrics = Metrics()
        # The sidecar closes its source when it stops.
        source = self.source(
            upstream, metrics=metrics, ttl_seconds=ttl_seconds, close=False, **options
        )
        sidecar = await self._stack.enter_async_context(
            Sidecar(self.settings(), source, metrics=metrics)
        )
        channel = await self._stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}")
        )
        return RunningSidecar(sidecar, pb_grpc.SidecarServiceStub(channel), source)

    async def store(self, *, ttl_seconds: int = 3600, publish: bool = True) -> RedisStore:
        """A store writing "from outside", as the persistent cache would."""
        client = aioredis.Redis(port=self.server.port, socket_timeout=5)
        self._stack.push_async_callback(client.aclose)
        return RedisStore(client, prefix=self.prefix, ttl_seconds=ttl_seconds, publish=publish)

    async def raw(self) -> aioredis.Redis:
        client = aioredis.Redis(port=self.server.port, socket_timeout=5, decode_responses=True)
        self._stack.push_async_callback(client.aclose)
        return client


@contextlib.asynccontextmanager
async def _tiers(server: RedisServer, prefix: str) -> AsyncIterator[Tiers]:
    async with contextlib.AsyncExitStack() as stack:
        yield Tiers(server, prefix, stack)


@pytest.fixture
async def tiers(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Tiers]:
    async with _tiers(redis_server, redis_prefix) as built:
        yield built


@pytest.fixture
async def own_tiers(own_redis: RedisServer, redis_prefix: str) -> AsyncIterator[Tiers]:
    """Tiers on a Redis of the test's own, which it may kill and restart."""
    async with _tiers(own_redis, redis_prefix) as built:
        yield built


@pytest.fixture
def upstream() -> InMemorySource:
    return InMemorySource()
