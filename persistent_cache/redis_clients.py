"""Redis connections built from the settings: the cache Redis and the event stream's Redis."""

from __future__ import annotations

from typing import Any, TypeAlias

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from entitlements.redis.packing import use_hiredis_packing, use_hiredis_packing_cluster
from persistent_cache.settings import Settings

RedisClient: TypeAlias = aioredis.Redis | RedisCluster

CONNECT_TIMEOUT_SECONDS = 2.0
# Every command but the blocking read answers in milliseconds; the read may legitimately take
# BLOCK_MS, so the socket timeout leaves that much room plus a margin for a slow server.
TIMEOUT_MARGIN_SECONDS = 5.0


def socket_timeout(settings: Settings) -> float:
    return settings.block_ms / 1000 + TIMEOUT_MARGIN_SECONDS


def cache_client(settings: Settings) -> RedisClient:
    options: dict[str, Any] = {
        "username": settings.redis_username or None,
        "password": settings.redis_password or None,
        "ssl": settings.redis_tls,
        "socket_timeout": socket_timeout(settings),
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
    }
    if settings.redis_cluster:
        cluster = RedisCluster(host=settings.redis_host, port=settings.redis_port, **options)
        return use_hiredis_packing_cluster(cluster)
    client = aioredis.Redis(
        host=settings.redis_host, port=settings.redis_port, db=settings.redis_db, **options
    )
    # Script calls with many arguments are most of what this service sends; pack them in C.
    return use_hiredis_packing(client)


def events_client(settings: Settings, cache: RedisClient) -> RedisClient:
    """The stream's Redis: its own connection when EVENTS_REDIS_URL is set, else the cache's."""
    if not settings.events_redis_url:
        return cache
    return use_hiredis_packing(
        aioredis.Redis.from_url(
            settings.events_redis_url,
            socket_timeout=socket_timeout(settings),
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        )
    )
