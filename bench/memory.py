"""What the hot cache's byte bound is worth in real memory.

(a) per customer: insert ``--sample`` customers (20 entitlements each) through
    ``EntitlementService.snapshot`` into an unbounded cache and compare what
    the cache *charges* per entry (``bytes_used / len``) with the *real* RSS
    growth per entry (``/proc/self/statm``), plus the tracemalloc view on a
    smaller sample to separate object bytes from allocator overhead.
(b) streaming: bound the cache with ``CACHE_MAX_SIZE_BYTES`` (64 MiB unless
    set) and stream ``--customers`` distinct customers (1,000,000 by default)
    through it, from a source that builds each snapshot on the fly and keeps
    nothing, sampling RSS as it goes. Exits 1 when the RSS growth over the
    pre-stream baseline exceeds the bound plus ``--overhead-mib`` (64 MiB), so
    CI can run it on demand.

Each part runs in a fresh (spawned) interpreter so one cannot inherit the
other's heap. By default snapshots are produced the way a real source produces
them: decoded from the canonical JSON wire format (``decode_snapshot``), so
every string and datetime is a fresh object; ``--objects built`` constructs
them directly instead (fewer distinct objects, faster).

    python bench/memory.py --quick
    python bench/memory.py                       # 100k sample, 1M streamed
    CACHE_MAX_SIZE_BYTES=33554432 python bench/memory.py --customers 200000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import _fixture as fx  # noqa: E402

MiB = 2**20
PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_CACHE_BYTES = 64 * MiB


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    """VmHWM: the kernel's high-water mark of this process's RSS."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class GeneratingSource:
    """An InMemorySource look-alike whose fetch makes a fresh snapshot and keeps nothing."""

    def __init__(self, objects: str) -> None:
        from entitlements.model.state import decode_snapshot, encode_snapshot
        from sidecar.source.memory import InMemorySource

        self._inner = InMemorySource()  # for the rest of the protocol (changes, writes)
        self._objects = objects
        self._decode = decode_snapshot
        self._template_id = fx.customer_id(0).encode()
        self._template = encode_snapshot(fx.build_snapshot(0))
        self.fetch_count = 0

    def make(self, customer_id: str) -> Any:
        if self._objects == "built":
            return fx.build_snapshot(int(customer_id.rsplit("-", 1)[1]))
        payload = self._template.replace(b'"%s"' % self._template_id, b'"%s"' % customer_id.encode())
        return self._decode(payload)

    async def fetch(self, customer_id: str, resource_id: str | None) -> Any:
        self.fetch_count += 1
        return self.make(customer_id)

    async def reload(self, customer_id: str, resource_id: str | None) -> Any:
        return await self.fetch(customer_id, resource_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _service(cache_bytes: int, objects: str) -> tuple[Any, Any, GeneratingSource]:
    from sidecar.cache.hot_cache import HotCache
    from sidecar.observability import Metrics
    from sidecar.service.entitlements import EntitlementService
    from sidecar.source.base import Resync

    source = GeneratingSource(objects)
    cache: HotCache[Any] = HotCache(cache_bytes)
    service = EntitlementService(source=source, cache=cache, metrics=Metrics())
    service.apply(Resync())  # the change stream is live: entries are trusted
    return service, cache, source


async def _fill(service: Any, start: int, stop: int) -> None:
    snapshot = service.snapshot
    for i in range(start, stop):
        await snapshot(fx.customer_id(i), None)


# ------------------------------------------------------------------ (a) per customer


def per_customer(conn: Connection, n: int, traced_n: int, objects: str) -> None:
    import tracemalloc

    from sidecar.cache.hot_cache import key_overhead
    from sidecar.cache.sizing import deep_size

    warm = 2000
    service, cache, source = _service(2**62, objects)
    asyncio.run(_fill(service, 0, warm))  # first-use allocations, code paths, interned names
    gc.collect()
    used0, len0 = cache.bytes_used, len(cache)
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    asyncio.run(_fill(service, warm, warm + n))
    elapsed = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    inserted = len(cache) - len0
    charged = (cache.bytes_used - used0) / inserted
    real = (rss1 - rss0) / inserted
    sample = source.make(fx.customer_id(1))
    result: dict[str, Any] = {
        "customers": inserted,
        "objects": objects,
        "charged_bytes_per_customer": charged,
        "charged_bytes_per_customer_whole_cache": cache.bytes_used / len(cache),
        "deep_size_of_one_snapshot": deep_size(sample),
        "key_overhead_charge": key_overhead((fx.customer_id(1), None)),
        "rss_before": rss0,
        "rss_after": rss1,
        "rss_bytes_per_customer": real,
        "ratio_real_to_charged": real / charged,
        "fill_seconds": elapsed,
        "fill_us_per_customer": elapsed / inserted * 1e6,
    }
    # tracemalloc on a fresh cache: Python-level bytes still allocated per
    # customer, i.e. RSS growth minus allocator/arena overhead.
    del service, cache, source
    gc.collect()
    service, _, _ = _service(2**62, objects)
    asyncio.run(_fill(service, 0, warm))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    asyncio.run(_fill(service, warm, warm + traced_n))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    result["traced_customers"] = traced_n
    result["traced_bytes_per_customer"] = (after - before) / traced_n
    result["ratio_traced_to_charged"] = result["traced_bytes_per_customer"] / charged
    conn.send(result)


# ------------------------------------------------------------------ (b) streaming


def streaming(conn: Connection, n: int, cache_bytes: int, every: int, objects: str) -> None:
    service, cache, source = _service(cache_bytes, objects)
    # Full collections walk every tracked object the cache holds: record their pauses.
    gc_runs = [0, 0, 0]
    gc_max = [0.0, 0.0, 0.0]
    gc_total = [0.0, 0.0, 0.0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        gen, pause = info["generation"], time.perf_counter() - started[0]
        gc_runs[gen] += 1
        gc_total[gen] += pause
        gc_max[gen] = max(gc_max[gen], pause)

    async def run() -> dict[str, Any]:
        # One customer first so every code path has allocated what it keeps for good.
        await service.snapshot(fx.customer_id(n + 1), None)
        cache.clear()
        gc.collect()
        baseline = rss_bytes()
        samples: list[dict[str, Any]] = [{"customers": 0, "rss": baseline, "cache_entries": 0, "cache_bytes": 0}]
        t0 = time.perf_counter()
        snapshot = service.snapshot
        gc.callbacks.append(on_gc)
        for start in range(0, n, every):
            stop = min(n, start + every)
            for i in range(start, stop):
                await snapshot(fx.customer_id(i), None)
            samples.append({"customers": stop, "rss": rss_bytes(), "cache_entries": len(cache),
                            "cache_bytes": cache.bytes_used,
                            "elapsed_s": time.perf_counter() - t0})
            s = samples[-1]
            print(f"  streamed {stop:>9,}: RSS {s['rss'] / MiB:8.1f} MiB "
                  f"(+{(s['rss'] - baseline) / MiB:6.1f}), cache {s['cache_entries']:,} entries / "
                  f"{s['cache_bytes'] / MiB:.1f} MiB charged", flush=True)
        elapsed = time.perf_counter() - t0
        gc.callbacks.remove(on_gc)
        gc.collect()
        tracked = len(gc.get_objects())
        end_rss = rss_bytes()
        return {
            "baseline_rss": baseline,
            "samples": samples,
            "max_sampled_rss": max(s["rss"] for s in samples),
            "peak_rss_vmhwm": peak_rss_bytes(),
            "end_rss_after_gc": end_rss,
            "cache_entries_end": len(cache),
            "cache_bytes_used_end": cache.bytes_used,
            "evictions": cache.stats.evictions,
            "rejections": cache.stats.rejections,
            "fetches": source.fetch_count,
            "gc_runs_per_gen": gc_runs,
            "gc_max_pause_ms_per_gen": [x * 1e3 for x in gc_max],
            "gc_total_ms_per_gen": [x * 1e3 for x in gc_total],
            "gc_tracked_objects_end": tracked,
            "elapsed_s": elapsed,
            "us_per_customer": elapsed / n * 1e6,
        }

    conn.send(asyncio.run(run()))


def _in_child(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        proc.join()
        raise SystemExit(f"{target.__name__} died with exit code {proc.exitcode}") from None
    proc.join()
    return result  # type: ignore[no-any-return]


def _cache_bytes_from_env() -> int:
    """CACHE_MAX_SIZE_BYTES, validated by the sidecar's own parser for that variable."""
    from sidecar.settings import SPECS

    raw = os.environ.get("CACHE_MAX_SIZE_BYTES", str(DEFAULT_CACHE_BYTES))
    spec = next(s for s in SPECS if s.env == "CACHE_MAX_SIZE_BYTES")
    value = spec.parse(raw)
    assert isinstance(value, int)
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k streamed, 20k sampled")
    parser.add_argument("--customers", type=int, help="customers streamed in (b) (default 1,000,000)")
    parser.add_argument("--sample", type=int, help="customers inserted in (a) (default 100,000)")
    parser.add_argument("--traced", type=int, help="customers inserted under tracemalloc in (a) (default 20,000)")
    parser.add_argument("--rss-every", type=int, help="RSS sample interval in (b) (default 50,000)")
    parser.add_argument("--overhead-mib", type=float, default=64.0,
                        help="fixed allowance on top of the cache bound before (b) fails (default 64)")
    parser.add_argument("--objects", choices=("decoded", "built"), default="decoded")
    parser.add_argument("--skip", choices=("a", "b"), action="append", default=[])
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "memory.json")
    args = parser.parse_args(argv)
    customers = args.customers or (100_000 if args.quick else 1_000_000)
    sample = min(args.sample or (20_000 if args.quick else 100_000), customers)
    traced = min(args.traced or (5_000 if args.quick else 20_000), sample)
    every = args.rss_every or min(50_000, max(1, customers // 20))
    cache_bytes = _cache_bytes_from_env()
    overhead = int(args.overhead_mib * MiB)

    report: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "env": {"CACHE_MAX_SIZE_BYTES": os.environ.get("CACHE_MAX_SIZE_BYTES")},
        "objects": args.objects,
        "entitlements_per_customer": fx.ENTITLEMENTS_PER_CUSTOMER,
        "host": {"python": platform.python_version(), "cpus": os.cpu_count()},
    }
    lines = [f"Command: `{report['command']}`", ""]
    if "a" not in args.skip:
        print(f"(a) inserting {sample:,} customers into an unbounded cache ({args.objects} snapshots)...",
              flush=True)
        a = _in_child(per_customer, sample, traced, args.objects)
        report["per_customer"] = a
        lines += [
            f"### (a) bytes per cached customer ({a['customers']:,} customers x "
            f"{fx.ENTITLEMENTS_PER_CUSTOMER} entitlements, {args.objects} snapshots)",
            "",
            "| charged by cache (B) | real RSS growth (B) | real / charged | tracemalloc (B, "
            f"{a['traced_customers']:,} customers) | traced / charged | deep_size (B) | key+entry charge (B) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
            f"| {a['charged_bytes_per_customer']:,.0f} | {a['rss_bytes_per_customer']:,.0f} "
            f"| {a['ratio_real_to_charged']:.2f} | {a['traced_bytes_per_customer']:,.0f} "
            f"| {a['ratio_traced_to_charged']:.2f} | {a['deep_size_of_one_snapshot']:,} "
            f"| {a['key_overhead_charge']} |",
            "",
        ]
    status = 0
    if "b" not in args.skip:
        print(f"(b) streaming {customers:,} customers through a {cache_bytes / MiB:.1f} MiB cache "
              f"(RSS every {every:,})...", flush=True)
        b = _in_child(streaming, customers, cache_bytes, every, args.objects)
        peak = max(b["max_sampled_rss"], b["peak_rss_vmhwm"])
        growth = peak - b["baseline_rss"]
        limit = cache_bytes + overhead
        b.update({
            "cache_max_bytes": cache_bytes,
            "overhead_allowance_bytes": overhead,
            "peak_growth_bytes": growth,
            "peak_growth_over_bound": growth / cache_bytes,
            "steady_state_rss_per_entry": (b["end_rss_after_gc"] - b["baseline_rss"]) / b["cache_entries_end"],
            "charged_per_entry_end": b["cache_bytes_used_end"] / b["cache_entries_end"],
            "within_bound_plus_overhead": growth <= limit,
        })
        b["steady_state_real_to_charged"] = b["steady_state_rss_per_entry"] / b["charged_per_entry_end"]
        report["streaming"] = b
        lines += [
            f"### (b) streaming {customers:,} distinct customers, CACHE_MAX_SIZE_BYTES = "
            f"{cache_bytes:,} ({cache_bytes / MiB:.1f} MiB)",
            "",
            "| baseline RSS | max sampled RSS | peak RSS (VmHWM) | peak - baseline | / bound | "
            "limit (bound + overhead) | entries held | charged / entry | real RSS / entry | real / charged | evictions | us / customer |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {b['baseline_rss'] / MiB:.1f} MiB | {b['max_sampled_rss'] / MiB:.1f} MiB "
            f"| {b['peak_rss_vmhwm'] / MiB:.1f} MiB | {growth / MiB:.1f} MiB | {growth / cache_bytes:.2f}x "
            f"| {limit / MiB:.1f} MiB | {b['cache_entries_end']:,} | {b['charged_per_entry_end']:,.0f} B "
            f"| {b['steady_state_rss_per_entry']:,.0f} B | {b['steady_state_real_to_charged']:.2f} "
            f"| {b['evictions']:,} | {b['us_per_customer']:.0f} |",
            "",
            f"Garbage collector while streaming: {b['gc_runs_per_gen'][2]:,} full (gen2) collections, "
            f"longest {b['gc_max_pause_ms_per_gen'][2]:.0f} ms, {b['gc_total_ms_per_gen'][2] / 1e3:.1f} s in total "
            f"({b['gc_tracked_objects_end']:,} GC-tracked objects at the end); gen0+1: "
            f"{b['gc_runs_per_gen'][0] + b['gc_runs_per_gen'][1]:,} runs, longest "
            f"{max(b['gc_max_pause_ms_per_gen'][:2]):.1f} ms.",
            "",
            "PASS: RSS growth stayed within the bound plus the fixed overhead."
            if b["within_bound_plus_overhead"]
            else f"FAIL: RSS grew {growth / MiB:.1f} MiB, more than the {cache_bytes / MiB:.1f} MiB bound "
                 f"+ {overhead / MiB:.0f} MiB overhead.",
        ]
        if not b["within_bound_plus_overhead"]:
            status = 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print()
    print("\n".join(lines))
    print(f"\nJSON written to {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
