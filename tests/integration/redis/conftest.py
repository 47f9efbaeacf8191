"""Fixtures for the Redis store tests: an async client and a store on the session server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from entitlements.redis.store import RedisStore
from tests.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    connection = Redis(host="127.0.0.1", port=redis_server.port)
    try:
        yield connection
    finally:
        await connection.aclose()


@pytest.fixture
def store(client: Redis, redis_prefix: str) -> RedisStore:
    return RedisStore(client, prefix=redis_prefix, ttl_seconds=3600)
