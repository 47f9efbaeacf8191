"""Redis settings: Stigg's names, defaults, validation, and whether the tier is wired in."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from sidecar.main import _source, redis_clients
from sidecar.observability import Metrics
from sidecar.settings import Settings, SettingsError
from sidecar.source.http_upstream import HttpUpstreamSource
from sidecar.source.redis_tier import RedisTieredSource
from tests.integration.redis_tier.conftest import Tiers

BASE = {"SERVER_API_KEY": "k", "CACHE_MAX_SIZE_BYTES": "1048576"}


def test_defaults_follow_stigg() -> None:
    settings = Settings.from_env(BASE)
    assert not settings.redis_enabled
    assert (settings.redis_host, settings.redis_port, settings.redis_db) == ("localhost", 6379, 0)
    assert settings.redis_keys_ttl_seconds == 604_800
    assert settings.redis_timeout_ms == 100
    assert not settings.redis_tls and not settings.redis_cluster


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            **BASE,
            "REDIS_ENVIRONMENT_PREFIX": "prod",
            "REDIS_HOST": "redis.internal",
            "REDIS_PORT": "6380",
            "REDIS_DB": "3",
            "REDIS_USERNAME": "sidecar",
            "REDIS_PASSWORD": "s3cret",
            "REDIS_TLS": "1",
            "REDIS_KEYS_TTL_IN_SECS": "-1",
            "REDIS_TIMEOUT_MS": "250",
        }
    )
    assert settings.redis_enabled and settings.redis_prefix == "prod"
    assert (settings.redis_host, settings.redis_port, settings.redis_db) == (
        "redis.internal",
        6380,
        3,
    )
    assert settings.redis_tls and settings.redis_username == "sidecar"
    assert settings.redis_keys_ttl_seconds == -1
    assert settings.redis_timeout_ms == 250
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("REDIS_KEYS_TTL_IN_SECS", "0"),
        ("REDIS_KEYS_TTL_IN_SECS", "a week"),
        ("REDIS_KEYS_TTL_IN_SECS", "1.5"),
        ("REDIS_KEYS_TTL_IN_SECS", "99999999999999"),
        ("REDIS_PORT", "0"),
        ("REDIS_PORT", "redis"),
        ("REDIS_DB", "-1"),
        ("REDIS_TLS", "maybe"),
        ("REDIS_CLUSTER", "sometimes"),
        ("REDIS_TIMEOUT_MS", "0"),
        ("REDIS_TIMEOUT_MS", "fast"),
    ],
)
def test_each_bad_value_is_named(env: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "REDIS_ENVIRONMENT_PREFIX": "p", env: value})
    assert any(p.startswith(f"{env}:") for p in err.value.problems), err.value.problems


def test_cluster_needs_database_zero() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(
            {**BASE, "REDIS_ENVIRONMENT_PREFIX": "p", "REDIS_CLUSTER": "1", "REDIS_DB": "2"}
        )
    assert [p.split(":")[0] for p in err.value.problems] == ["REDIS_DB"]


async def test_prefix_switches_the_tier_on() -> None:
    without = _source(Settings.from_env(BASE), Metrics())
    assert isinstance(without, HttpUpstreamSource)
    await without.aclose()

    with_prefix = _source(Settings.from_env({**BASE, "REDIS_ENVIRONMENT_PREFIX": "p"}), Metrics())
    assert isinstance(with_prefix, RedisTieredSource)
    # Nothing connects before first use: closing an unused tier touches no Redis.
    await with_prefix.aclose()

    assert (
        _source(
            Settings.from_env({**BASE, "OFFLINE": "1", "REDIS_ENVIRONMENT_PREFIX": "p"}), Metrics()
        )
        is None
    )


async def test_cluster_setting_builds_a_cluster_client() -> None:
    settings = Settings.from_env({**BASE, "REDIS_ENVIRONMENT_PREFIX": "p", "REDIS_CLUSTER": "1"})
    client, pubsub_client = redis_clients(settings)
    assert isinstance(client, RedisCluster)
    await client.aclose()
    await pubsub_client.aclose()


async def test_more_concurrent_commands_than_connections_wait_for_one(tiers: Tiers) -> None:
    # redis-py's default pool raises "Too many connections" past its cap, which the tier
    # would count as Redis failing; the sidecar's pool makes them wait their turn instead.
    settings = tiers.settings(redis_max_connections=2, redis_timeout_ms=5000)
    client, pubsub_client = redis_clients(settings)
    admin = Redis(port=tiers.server.port)
    try:
        await client.set("k", "v")
        before = (await admin.info("clients"))["connected_clients"]
        answers = await asyncio.gather(*(client.get("k") for _ in range(50)))
        assert answers == [b"v"] * 50
        # The pool held one connection before; it may have opened one more, not 49.
        assert (await admin.info("clients"))["connected_clients"] <= before + 1
    finally:
        await client.aclose()
        await pubsub_client.aclose()
        await admin.aclose()


def test_max_connections_is_validated() -> None:
    assert Settings.from_env(BASE).redis_max_connections == 64
    with pytest.raises(SettingsError) as err:
        Settings.from_env({**BASE, "REDIS_ENVIRONMENT_PREFIX": "p", "REDIS_MAX_CONNECTIONS": "0"})
    assert [p.split(":")[0] for p in err.value.problems] == ["REDIS_MAX_CONNECTIONS"]
