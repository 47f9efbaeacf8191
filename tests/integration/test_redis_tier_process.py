"""A sidecar process (``python -m sidecar.main``, on uvloop as deployed) reading through a Redis
that asks for a password and holds its keys in another database: once upstream is gone, every
read is Redis's answer, never a fallback. A read path that fails quietly would still answer here
(with fallbacks), so this counts where the answers came from."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sidecar.pb import sidecar_pb2 as pb
from tests.integration.processes import SidecarProcess, metric, started_upstream
from tests.redis_server import RedisServer

PASSWORD = "tier-password"
DB = 2


def fallbacks(port: int) -> float:
    """Fallback answers served, all methods together (the counter is labelled by method)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        lines = resp.read().decode().splitlines()
    return sum(
        float(line.split()[-1]) for line in lines if line.startswith("sidecar_fallbacks_total")
    )


@pytest.fixture
def locked_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    redis.Redis(port=server.port).config_set("requirepass", PASSWORD)
    try:
        yield server
    finally:
        server.stop()


def test_reads_come_from_redis_once_upstream_is_gone(
    tmp_path: Path, locked_redis: RedisServer
) -> None:
    upstream = started_upstream(tmp_path)
    sidecar = SidecarProcess(
        upstream,
        tmp_path / "sidecar.log",
        REDIS_ENVIRONMENT_PREFIX="process-tier",
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=str(locked_redis.port),
        REDIS_PASSWORD=PASSWORD,
        REDIS_DB=str(DB),
        # A hot cache that holds nothing: every read below goes to Redis.
        CACHE_MAX_SIZE_BYTES="1",
    )
    try:
        request = pb.GetEntitlementsStateV2Request(customer_id="acme")
        first = sidecar.stub.GetEntitlementsStateV2(request, timeout=10)
        assert first.entitlements  # fetched from upstream, and written to Redis
        stored = redis.Redis(port=locked_redis.port, password=PASSWORD, db=DB)
        assert any(b"acme" in key for key in stored.keys("process-tier*"))
        upstream.kill()
        hits = metric(sidecar.http_port, "sidecar_redis_hits_total")
        for _ in range(20):
            again = sidecar.stub.GetEntitlementsStateV2(request, timeout=10)
            assert again == first
        assert metric(sidecar.http_port, "sidecar_redis_hits_total") == hits + 20
        assert fallbacks(sidecar.http_port) == 0
    finally:
        sidecar.kill()
        upstream.kill()
