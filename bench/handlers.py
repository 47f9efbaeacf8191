"""Handler cost in-process: a memoized single-feature answer next to an evaluated one.

    python bench/handlers.py              # 5 alternating rounds
    python bench/handlers.py --rounds 9

No gRPC and no network: the servicer's handler is awaited directly, so what is timed is
validation, the hot-cache lookup, and then either the memo lookup or the evaluation,
conversion and serialization. Both sides run the same requests (GetMeteredEntitlement and
GetEntitlement over ``--customers`` customers and every feature of the 20-entitlement plan of
``_fixture.py``), alternately, round after round: "memoized" with the servicer as shipped (the
memo warm after one pass), "evaluated" with memoization switched off (MAX_VIEWS = 0). The
ratio memoized / evaluated is what the memo saves per call on a hit; the latency benchmark
measures the whole RPC.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(BENCH_DIR))

import _fixture as fx  # noqa: E402

import sidecar.service.entitlements as entitlements  # noqa: E402
from sidecar.api.servicer import SidecarServicer  # noqa: E402
from sidecar.cache.hot_cache import HotCache  # noqa: E402
from sidecar.observability import Metrics  # noqa: E402
from sidecar.pb import sidecar_pb2 as pb  # noqa: E402
from sidecar.service.entitlements import CacheEntry, EntitlementService  # noqa: E402
from sidecar.source.base import Resync  # noqa: E402
from sidecar.source.memory import InMemorySource  # noqa: E402

SHIPPED_MAX_VIEWS = entitlements.MAX_VIEWS


def requests(customers: int) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k in range(customers):
        cid = fx.customer_id(k)
        for fid in fx.METERED_IDS:
            options = pb.MeteredEntitlementOptions(requested_usage=1.0)
            out.append(
                (
                    "GetMeteredEntitlement",
                    pb.GetMeteredEntitlementRequest(
                        customer_id=cid, feature_id=fid, options=options
                    ),
                )
            )
        for fid in fx.ALL_FEATURE_IDS:
            out.append(
                ("GetEntitlement", pb.GetEntitlementRequest(customer_id=cid, feature_id=fid))
            )
    return out


async def per_call_us(max_views: int, customers: int, passes: int) -> float:
    entitlements.MAX_VIEWS = max_views
    source = InMemorySource()
    now = datetime.now(UTC)
    for k in range(customers):
        source.put(fx.build_snapshot(k, now))
    metrics = Metrics()
    service = EntitlementService(source=source, cache=HotCache[CacheEntry](2**30), metrics=metrics)
    service.apply(Resync())  # the change stream is live: entries are trusted
    servicer = SidecarServicer(service, metrics, {})
    calls = [(getattr(servicer, method), request) for method, request in requests(customers)]
    for handler, request in calls:  # fills the hot cache, and the memo when it is on
        await handler(request, None)
    started = time.perf_counter()
    for _ in range(passes):
        for handler, request in calls:
            await handler(request, None)
    return (time.perf_counter() - started) / (passes * len(calls)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    memoized: list[float] = []
    evaluated: list[float] = []
    for round_ in range(args.rounds):
        order = [(SHIPPED_MAX_VIEWS, memoized), (0, evaluated)]
        if round_ % 2:
            order.reverse()
        for max_views, into in order:
            into.append(asyncio.run(per_call_us(max_views, args.customers, args.passes)))
    hit, full = statistics.median(memoized), statistics.median(evaluated)
    print(f"{args.customers} customers x 26 questions, {args.rounds} rounds (median):")
    print(f"  memoized  {hit:6.1f} us/call")
    print(f"  evaluated {full:6.1f} us/call")
    print(f"  memoized / evaluated = {hit / full:.2f}")


if __name__ == "__main__":
    main()
