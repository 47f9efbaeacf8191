"""How the sidecar degrades, measured from the outside (issue "Degrade gracefully").

    python bench/degradation.py               # every scenario
    python bench/degradation.py --customers 500 --fuzz 2000

Scenarios, each run against real servers started here (an upstream in-process on SQLite, a
private redis-server), a real sidecar, and gRPC clients:

1. ``upstream-down``: a sidecar without the Redis tier answers N customers, then upstream
   stops; the same reads again: how many are fallbacks.
2. ``period-ended``: a Redis-tier sidecar, upstream unreachable, Redis holding customers whose
   monthly usage period ended an hour ago (their copy is past its valid-until): how many are
   fallbacks, and whether the usage rolled over to the new period (0).
3. ``fuzz``: hostile requests over every RPC (half random bytes, half well-formed messages with
   edge values): status codes seen.
4. ``redis-paused``: a Redis-tier sidecar with ``REDIS_TIMEOUT_MS=100`` reading customers it
   does not hold; the same reads with Redis answering (baseline) and with Redis stopped
   (SIGSTOP): latency per read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from google.protobuf.message_factory import GetMessageClass  # noqa: E402

from entitlements.redis.store import RedisStore  # noqa: E402
from sidecar.api.grpc_server import SERVICE  # noqa: E402
from sidecar.app import Sidecar  # noqa: E402
from sidecar.main import redis_store  # noqa: E402
from sidecar.observability import Metrics  # noqa: E402
from sidecar.pb import sidecar_pb2 as pb  # noqa: E402
from sidecar.pb import sidecar_pb2_grpc as pb_grpc  # noqa: E402
from sidecar.settings import Settings  # noqa: E402
from sidecar.source.http_upstream import HttpUpstreamSource  # noqa: E402
from sidecar.source.redis_tier import RedisTieredSource  # noqa: E402
from tests.builders import metered, snapshot, usage  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402
from upstream.server import UpstreamServer  # noqa: E402
from upstream.service import SubscriptionRequest  # noqa: E402
from upstream.settings import UpstreamSettings  # noqa: E402


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "port": 0,
        "http_port": 0,
        "http_bind_address": "127.0.0.1",
        "cache_max_bytes": 64 * 2**20,
        "upstream_timeout_seconds": 1.0,
        "upstream_retries": 0,
    }
    base.update(overrides)
    return Settings(**base)


async def upstream_down(customers: int, work: Path) -> dict[str, Any]:
    up_settings = UpstreamSettings(api_key="k", port=0, database=str(work / "up.db"))
    server = UpstreamServer(up_settings)
    await server.start()
    ids = [f"bench-{i}" for i in range(customers)]
    for cid in ids:
        server.upstream.provision_customer(cid, subscription=SubscriptionRequest(cid, "free"))
    source = HttpUpstreamSource(
        api_url=f"http://127.0.0.1:{server.port}", api_key="k", timeout=1.0, retries=0
    )
    async with (
        Sidecar(settings(), source) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
    ):
        stub = pb_grpc.SidecarServiceStub(channel)

        async def read_all() -> Counter[str]:
            seen: Counter[str] = Counter()
            for cid in ids:
                answer = await stub.GetMeteredEntitlement(
                    pb.GetMeteredEntitlementRequest(customer_id=cid, feature_id="api-calls")
                )
                seen["fallback" if answer.is_fallback else "held"] += 1
            return seen

        before = await read_all()
        await server.stop()
        started = time.perf_counter()
        after = await read_all()
        took = time.perf_counter() - started
    return {
        "customers": customers,
        "upstream up": dict(before),
        "upstream stopped": dict(after),
        "reads/s with upstream stopped": round(customers / took),
    }


async def _redis_tier_sidecar(
    redis: RedisServer, prefix: str, timeout_ms: int, api_url: str
) -> tuple[Sidecar, RedisTieredSource]:
    tier_settings = settings(
        redis_prefix=prefix,
        redis_host="127.0.0.1",
        redis_port=redis.port,
        redis_timeout_ms=timeout_ms,
        # A hot cache too small to hold anything: every read takes the Redis path.
        cache_max_bytes=1,
    )
    store, pubsub, owned = redis_store(replace(tier_settings, redis_keys_ttl_seconds=-1))
    metrics = Metrics()
    source = RedisTieredSource(
        store,
        HttpUpstreamSource(api_url=api_url, api_key="k", timeout=1.0, retries=0),
        pubsub_client=pubsub,
        metrics=metrics,
        owned_clients=owned,
    )
    sidecar = Sidecar(tier_settings, source, metrics=metrics)
    await sidecar.start()
    return sidecar, source


async def period_ended(customers: int, redis: RedisServer) -> dict[str, Any]:
    now = datetime.now(UTC)
    ended = now - timedelta(hours=1)
    feature = metered(
        "api-calls", 1000, usage_period_anchor=ended - timedelta(days=31), valid_until=ended
    )
    outside = RedisStore(aioredis.Redis(port=redis.port), prefix="period", ttl_seconds=-1)
    ids = [f"bench-{i}" for i in range(customers)]
    for cid in ids:
        snap = snapshot(
            cid,
            feature,
            feature_usage={"api-calls": usage(700, start=ended - timedelta(days=31), end=ended)},
        )
        await outside.apply_snapshot(replace(snap, state=replace(snap.state, version=1)))
    dead = f"http://127.0.0.1:{free_port()}"
    sidecar, _ = await _redis_tier_sidecar(redis, "period", 2000, dead)
    seen: Counter[str] = Counter()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
            stub = pb_grpc.SidecarServiceStub(channel)
            for cid in ids:
                answer = await stub.GetMeteredEntitlement(
                    pb.GetMeteredEntitlementRequest(customer_id=cid, feature_id="api-calls")
                )
                if answer.is_fallback:
                    seen["fallback"] += 1
                else:
                    seen[f"held, current_usage={answer.entitlement.current_usage:g}"] += 1
        stale = sidecar.metrics.registry.get_sample_value(
            "sidecar_stale_served_total", {"tier": "redis"}
        )
    finally:
        await sidecar.stop()
    return {"customers": customers, "answers": dict(seen), "stale served (redis)": stale}


HOSTILE_STRINGS = ["", "x" * 300, "cust-1", "\u0000", "é" * 10]
HOSTILE_NUMBERS = [0, -1, 2**31 - 1, -(2**31), 253402300800, 10**15, -62135596801]
HOSTILE_DOUBLES = [0.0, -1.0, float("nan"), float("inf"), -float("inf"), 1e308]


def _scalar(field: Any, rng: random.Random) -> Any:
    kind = field.type
    if kind == field.TYPE_STRING:
        return rng.choice(HOSTILE_STRINGS)
    if kind == field.TYPE_BOOL:
        return rng.random() < 0.5
    if kind in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        return rng.choice(HOSTILE_DOUBLES) if kind == field.TYPE_DOUBLE else 1.0
    if kind == field.TYPE_ENUM:
        return rng.choice([0, 1, 2, 99, -5])
    if kind in (field.TYPE_INT64, field.TYPE_SINT64, field.TYPE_SFIXED64):
        return rng.choice(HOSTILE_NUMBERS)
    if kind in (field.TYPE_INT32, field.TYPE_SINT32, field.TYPE_SFIXED32):
        return rng.choice([0, -1, 2**31 - 1, -(2**31), 2_000_000_000])
    return rng.choice([0, 1, 2**32 - 1])


def hostile(message: Any, rng: random.Random, depth: int = 0) -> None:
    for field in message.DESCRIPTOR.fields:
        if rng.random() < 0.3:
            continue
        kind = field.type
        repeated = field.is_repeated
        if kind == field.TYPE_MESSAGE:
            if depth > 2 or field.message_type.GetOptions().map_entry:
                continue
            target = getattr(message, field.name)
            child = target.add() if repeated else target
            if not repeated:
                child.SetInParent()
            hostile(child, rng, depth + 1)
            continue
        value = _scalar(field, rng)
        if repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)


async def fuzz(total: int) -> dict[str, Any]:
    from sidecar.source.memory import InMemorySource
    from tests.builders import demo_snapshot

    source = InMemorySource()
    source.put(demo_snapshot("cust-1"))
    rng = random.Random(1234)
    codes: Counter[str] = Counter()
    methods = list(SERVICE.methods)
    async with (
        Sidecar(settings(), source) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
    ):
        for i in range(total):
            method = methods[i % len(methods)]
            if i % 2:
                body = rng.randbytes(rng.randint(1, 64))
            else:
                message = GetMessageClass(method.input_type)()
                hostile(message, rng)
                body = message.SerializeToString()
            call = channel.unary_unary(
                f"/{SERVICE.full_name}/{method.name}",
                request_serializer=lambda raw: raw,
                response_deserializer=lambda raw: raw,
            )
            try:
                await call(body, timeout=10)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1
    return {"requests": total, "rpcs": len(methods), "status codes": dict(codes.most_common())}


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50 ms": round(statistics.median(ordered) * 1000, 2),
        "p99 ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
        "max ms": round(ordered[-1] * 1000, 2),
    }


async def redis_paused(reads: int, redis: RedisServer, work: Path) -> dict[str, Any]:
    up_settings = UpstreamSettings(api_key="k", port=0, database=str(work / "paused.db"))
    server = UpstreamServer(up_settings)
    await server.start()
    ids = [f"paused-{i}" for i in range(reads)]
    for cid in ids:
        server.upstream.provision_customer(cid, subscription=SubscriptionRequest(cid, "free"))
    sidecar, _ = await _redis_tier_sidecar(redis, "paused", 100, f"http://127.0.0.1:{server.port}")
    results: dict[str, Any] = {"REDIS_TIMEOUT_MS": 100, "reads": reads}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
            stub = pb_grpc.SidecarServiceStub(channel)

            async def timed() -> tuple[list[float], int]:
                samples, fallbacks = [], 0
                for cid in ids:
                    started = time.perf_counter()
                    answer = await stub.GetBooleanEntitlement(
                        pb.GetBooleanEntitlementRequest(customer_id=cid, feature_id="sso")
                    )
                    samples.append(time.perf_counter() - started)
                    fallbacks += answer.is_fallback
                return samples, fallbacks

            await timed()  # Redis now holds every customer: the baseline reads hit it
            base, base_fallbacks = await timed()
            assert redis.process is not None
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                paused, paused_fallbacks = await timed()
                breaker = sidecar.metrics.registry.get_sample_value("sidecar_redis_breaker_open")
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
        results["redis answering"] = {**_percentiles(base), "fallbacks": base_fallbacks}
        results["redis stopped"] = {
            **_percentiles(paused),
            "fallbacks": paused_fallbacks,
            "reads that waited a timeout": sum(s >= 0.09 for s in paused),
            "breaker open at the end": breaker,
        }
    finally:
        await sidecar.stop()
        await server.stop()
    return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--fuzz", type=int, default=24_000)
    parser.add_argument("--reads", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-degradation-"))
    with RedisServer() as redis:
        scenarios: list[tuple[str, Coroutine[Any, Any, dict[str, Any]]]] = [
            ("upstream-down", upstream_down(args.customers, work)),
            ("period-ended", period_ended(args.customers, redis)),
            ("fuzz", fuzz(args.fuzz)),
            ("redis-paused", redis_paused(args.reads, redis, work)),
        ]
        for name, run in scenarios:
            started = time.perf_counter()
            outcome = await run
            print(f"== {name} ({time.perf_counter() - started:.1f} s)")
            for key, value in outcome.items():
                print(f"   {key}: {value}")


if __name__ == "__main__":
    from entitlements.logs import configure_logging

    configure_logging("error", "console", service="bench")
    asyncio.run(main())
