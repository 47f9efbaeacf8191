"""A Redis-tier read in-process, step by step: where its time goes after the round trip.

Each step is awaited directly (no gRPC) on a sidecar service wired as ``sidecar.main`` wires it,
over a private redis-server holding the benchmark fixture's customers, with a hot cache too
small to hold anything, so every call reads Redis. Steps are cumulative: the round trip alone
(through the read client and through redis-py), then the store's decode, the tier, the
service (sizing and the hot cache), and the serialized answer. Medians of ``--calls`` calls per
step per round; the lowest round's median is reported.

    python bench/redis_read_steps.py
    git archive <rev> | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    python bench/redis_read_steps.py --tree /tmp/base     # the same steps on another tree

A tree from before ``sidecar.main.redis_store`` is wired the way it was then (redis-py reads).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


async def measure(port: int, customers: int, calls: int, rounds: int) -> dict[str, float]:
    import _fixture as fx
    import redis.asyncio as aioredis

    from entitlements.redis.keys import state_key
    from entitlements.redis.store import RedisStore
    from sidecar import main as sidecar_main
    from sidecar.api.servicer import SidecarServicer
    from sidecar.cache.hot_cache import HotCache
    from sidecar.observability import Metrics
    from sidecar.pb import sidecar_pb2 as pb
    from sidecar.service.entitlements import EntitlementService
    from sidecar.source.memory import InMemorySource
    from sidecar.source.redis_tier import RedisTieredSource
    from tests.conftest import make_settings

    writer = aioredis.Redis(host="127.0.0.1", port=port)
    filler = RedisStore(writer, prefix="steps", ttl_seconds=-1, publish=False)
    for start in range(0, customers, 50):
        await asyncio.gather(
            *(
                filler.apply_snapshot(fx.build_snapshot(i))
                for i in range(start, min(customers, start + 50))
            )
        )
    settings = make_settings(
        redis_prefix="steps",
        redis_host="127.0.0.1",
        redis_port=port,
        redis_timeout_ms=2000,
        redis_keys_ttl_seconds=-1,
    )
    client, pubsub = sidecar_main.redis_clients(settings)
    reader: Any = None
    if hasattr(sidecar_main, "redis_store"):
        store, pubsub, owned = sidecar_main.redis_store(settings)
        reader = getattr(store, "_reader", None)
    else:
        store = RedisStore(client, prefix="steps", ttl_seconds=-1)
        owned = [client, pubsub]
    source = RedisTieredSource(store, InMemorySource(), pubsub_client=pubsub, owned_clients=owned)
    metrics = Metrics()
    service = EntitlementService(source=source, cache=HotCache(1), metrics=metrics)
    servicer = SidecarServicer(service, metrics, {})
    ids = [fx.customer_id(i) for i in range(customers)]
    keys = [state_key("steps", c, None) for c in ids]
    requests = [pb.GetEntitlementsStateV2Request(customer_id=c) for c in ids]
    steps: dict[str, Callable[[int], Awaitable[Any]]] = {}
    if reader is not None and reader is not client:
        steps["HGETALL alone (read client)"] = lambda i: reader.hgetall(keys[i])
    steps["HGETALL alone (redis-py)"] = lambda i: client.hgetall(keys[i])
    steps["+ decode (RedisStore.get)"] = lambda i: store.get(ids[i], None)
    steps["+ the tier (RedisTieredSource.fetch)"] = lambda i: source.fetch(ids[i], None)
    steps["+ sizing and the cache (service.snapshot)"] = lambda i: service.snapshot(ids[i], None)
    steps["+ the answer (servicer._list)"] = lambda i: servicer._list(
        "GetEntitlementsStateV2", requests[i], True
    )
    best: dict[str, float] = {}
    try:
        for _ in range(rounds):
            for name, step in steps.items():
                times = []
                for n in range(calls):
                    started = time.perf_counter_ns()
                    await step(n % customers)
                    times.append(time.perf_counter_ns() - started)
                median = statistics.median(times) / 1000
                best[name] = min(best.get(name, median), median)
    finally:
        await source.aclose()
        await client.aclose()
        await writer.aclose()
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=BENCH_DIR.parent, help="the tree to measure")
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    tree = args.tree.resolve()
    sys.path[:0] = [str(tree), str(tree / "bench")]
    import uvloop

    from tests.redis_server import RedisServer

    with RedisServer() as redis:
        best = uvloop.run(measure(redis.port, args.customers, args.calls, args.rounds))
    print(f"tree {tree}: {args.customers} customers, medians of {args.calls} calls, µs")
    for name, value in best.items():
        print(f"  {name:45s} {value:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
