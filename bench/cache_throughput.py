"""Persistent cache consumer throughput: applied change events/s for ONE consumer process.

    python bench/cache_throughput.py --quick          # 20k events, ~30 s
    python bench/cache_throughput.py                  # 100k events (the issue's setting)
    python bench/cache_throughput.py --profile        # same, consumer under cProfile

What it does, all in one run against one private ``redis-server`` (tests/redis_server.py):

1. pre-fills upstream's change stream ``{prefix}:changes`` with ``--events`` entries shaped
   exactly like ``upstream.events.publishers.RedisStreamPublisher`` writes them
   (``entitlements.redis.stream_entry.encode_entry``: ``seq``, ``envelope``, ``r0..``; or with
   ``--layout legacy`` the old single ``event`` field, decoded through the model), with
   pipelined XADD. Mix: 30%
   ``entitlements.updated`` full snapshots (the 20-entitlement plan of ``bench/_fixture.py``,
   6 usage records each), 70% ``usage.updated`` records, spread over ``--keys`` (10k)
   (customer, resource) keys. Every event carries a fresh, increasing version, so every write
   is a real write, not a stale no-op.
2. baseline: ``redis-benchmark -q -t set -n 200000 -P 16`` and ``-P 1`` on the same server;
3. sets the epoch key (so the watchdog does not ask upstream for a resync), starts ONE
   ``python -m persistent_cache.main`` process (the shipped entry point, uvloop, default
   ``BATCH_SIZE`` unless ``--batch-size``) and polls ``XINFO GROUPS`` every 20 ms until the
   group's ``pending`` and ``lag`` are both 0.

Reported: events/s measured from the first poll that saw progress to the poll that saw
pending+lag = 0 (process start-up excluded; the start-up time is printed too), the ratio to
redis-benchmark SET ops/s, the consumer's CPU us per event (utime+stime from /proc) and
redis-server's CPU us per event over the same window. Target (issue): >= 20k events/s/process.

``--profile`` runs the consumer as ``python -m cProfile -o ... -m persistent_cache.main`` and
prints the top functions by own time and by cumulative time (the profiler itself slows the
consumer ~1.5-2x, so take throughput from a run without it). Results go to
``bench/results/persistent_cache.json`` with the command line that produced them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pstats
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# Run as a script: the repository root goes first so the project's packages and the
# test helpers (tests.redis_server) import, and no bench module shadows a package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(BENCH_DIR))

import _fixture as fx  # noqa: E402
import redis  # noqa: E402

from entitlements.model.events import ChangeEvent, EventKind, encode_event  # noqa: E402
from entitlements.model.state import CustomerSnapshot, UsageRecord  # noqa: E402
from entitlements.redis.keys import change_stream, epoch_key, state_key  # noqa: E402
from entitlements.redis.stream_entry import encode_entry, legacy_entry  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

PREFIX = "bench"
GROUP = "persistent-cache"
TARGET_EVENTS_PER_SECOND = 20_000
RESULTS = BENCH_DIR / "results" / "persistent_cache.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# ---------------------------------------------------------------------------------- events


def build_events(count: int, keys: int, seed: int = 7) -> list[bytes]:
    """``count`` encoded events: 30% full snapshots, 70% usage records, over ``keys`` keys."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    period_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    period_end = period_start + timedelta(days=31)
    # One snapshot per key, built lazily; each snapshot event re-stamps its state version.
    snapshots: dict[int, CustomerSnapshot] = {}
    payloads: list[bytes] = []
    for seq in range(1, count + 1):
        k = rng.randrange(keys)
        customer = fx.customer_id(k)
        committed = now + timedelta(microseconds=seq)
        if rng.random() < 0.3:
            base = snapshots.get(k)
            if base is None:
                base = snapshots[k] = fx.build_snapshot(k, now)
            snapshot = replace(base, state=replace(base.state, version=seq))
            event = ChangeEvent(
                EventKind.ENTITLEMENTS, seq, customer, None, seq, committed, snapshot=snapshot
            )
        else:
            record = UsageRecord(
                current_usage=float(rng.randrange(1, 100_000)),
                period_start=period_start,
                period_end=period_end,
                updated_at=committed,
                version=seq,
            )
            event = ChangeEvent(
                EventKind.USAGE,
                seq,
                customer,
                None,
                seq,
                committed,
                feature_id=fx.METERED_IDS[seq % len(fx.METERED_IDS)],
                usage=record,
            )
        payloads.append(encode_event(event))
    return payloads


def prefill(client: redis.Redis, payloads: list[bytes], layout: str, chunk: int = 2000) -> float:
    stream = change_stream(PREFIX)
    encode = encode_entry if layout == "envelope" else legacy_entry
    started = time.perf_counter()
    for first in range(0, len(payloads), chunk):
        pipe = client.pipeline(transaction=False)
        for offset, payload in enumerate(payloads[first : first + chunk]):
            pipe.xadd(stream, encode(first + offset + 1, payload))  # type: ignore[arg-type]
        pipe.execute()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------- baseline


def redis_benchmark_set(port: int, pipeline: int, requests: int) -> float:
    binary = shutil.which("redis-benchmark")
    if binary is None:
        raise SystemExit("redis-benchmark is not on PATH")
    out = subprocess.run(
        [binary, "-p", str(port), "-q", "-t", "set", "-n", str(requests), "-P", str(pipeline)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # -q prints progress lines separated by \r; the last "SET: N requests per second" wins.
    found = re.findall(r"SET: ([\d.]+) requests per second", out)
    if not found:
        raise SystemExit(f"cannot parse redis-benchmark output: {out!r}")
    return float(found[-1])


# ---------------------------------------------------------------------------------- consumer


def group_state(client: redis.Redis) -> tuple[int, int, int]:
    """(entries_read, pending, lag) of the group; before it exists: (0, 0, -1)."""
    try:
        groups = client.xinfo_groups(change_stream(PREFIX))
    except redis.ResponseError:
        return 0, 0, -1
    for group in groups:
        name = group["name"]
        if (name.decode() if isinstance(name, bytes) else name) == GROUP:
            lag = group.get("lag")
            return (
                int(group.get("entries-read") or 0),
                int(group["pending"]),
                int(-1 if lag is None else lag),
            )
    return 0, 0, -1


def start_consumer(
    port: int, batch_size: int | None, profile_to: Path | None, extra_env: dict[str, str]
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(port),
        "REDIS_ENVIRONMENT_PREFIX": PREFIX,
        "SERVER_API_KEY": "bench-key",
        "CONSUMER_NAME": "bench-consumer-1",
        "HTTP_PORT": str(free_port()),
        "HTTP_BIND_ADDRESS": "127.0.0.1",
        "API_URL": f"http://127.0.0.1:{free_port()}",
        "LOG_LEVEL": "warn",
        "LOG_FORMAT": "json",
        "PYTHONPATH": str(ROOT),
    }
    env.update(extra_env)
    if batch_size is not None:
        env["BATCH_SIZE"] = str(batch_size)
    args = [sys.executable]
    if profile_to is not None:
        args += ["-m", "cProfile", "-o", str(profile_to)]
    args += ["-m", "persistent_cache.main"]
    return subprocess.Popen(args, cwd=ROOT, env=env)


def consume(
    client: redis.Redis,
    server_pids: list[int],
    total: int,
    batch_size: int | None,
    profile_to: Path | None,
    cache_port: int,
    extra_env: dict[str, str],
) -> dict[str, float]:
    def servers_cpu() -> float:
        return sum(cpu_seconds(pid) for pid in server_pids)

    spawned = time.perf_counter()
    proc = start_consumer(cache_port, batch_size, profile_to, extra_env)
    try:
        first_seen: tuple[float, int, float, float] | None = None
        deadline = spawned + 600
        while True:
            now = time.perf_counter()
            if now > deadline:
                raise SystemExit("consumer did not catch up within 600 s")
            if proc.poll() is not None:
                raise SystemExit(f"consumer exited early with {proc.returncode}")
            read, pending, lag = group_state(client)
            done = total - lag - pending if lag >= 0 else 0
            if first_seen is None and read > 0:
                first_seen = (now, done, cpu_seconds(proc.pid), servers_cpu())
            if lag == 0 and pending == 0 and read >= total:
                finished = (now, cpu_seconds(proc.pid), servers_cpu())
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert first_seen is not None
    t0, done0, consumer_cpu0, server_cpu0 = first_seen
    t1, consumer_cpu1, server_cpu1 = finished
    events = total - done0
    seconds = t1 - t0
    return {
        "startup_seconds": t0 - spawned,
        "measured_events": events,
        "seconds": seconds,
        "events_per_second": events / seconds,
        "consumer_cpu_us_per_event": (consumer_cpu1 - consumer_cpu0) / events * 1e6,
        "redis_cpu_us_per_event": (server_cpu1 - server_cpu0) / events * 1e6,
        "wall_us_per_event": seconds / events * 1e6,
    }


def verify(client: Any, keys: int) -> int:
    """How many of the keys hold a state hash (every key gets a snapshot with enough events)."""
    pipe = client.pipeline(transaction=False)
    for k in range(keys):
        pipe.exists(state_key(PREFIX, fx.customer_id(k), None))
    return sum(int(x) for x in pipe.execute())


def print_profile(path: Path, top: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs()
    out.write("\n=== top by own time (tottime) ===\n")
    stats.sort_stats("tottime").print_stats(top)
    out.write("\n=== top by cumulative time ===\n")
    stats.sort_stats("cumulative").print_stats(top)
    text = out.getvalue()
    print(text)
    return text


# ---------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=None, help="BATCH_SIZE (default: 500)")
    parser.add_argument("--bench-requests", type=int, default=200_000)
    parser.add_argument("--quick", action="store_true", help="20k events, 100k SET requests")
    parser.add_argument("--profile", action="store_true", help="run the consumer under cProfile")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="cache on a local 3-master Redis Cluster (the stream stays on a plain server)",
    )
    parser.add_argument(
        "--layout",
        choices=("envelope", "legacy"),
        default="envelope",
        help="stream entry layout: what upstream publishes (envelope) or the old single field",
    )
    args = parser.parse_args()
    if args.quick:
        args.events = min(args.events, 20_000)
        args.bench_requests = min(args.bench_requests, 100_000)

    t = time.perf_counter()
    payloads = build_events(args.events, args.keys)
    encode_seconds = time.perf_counter() - t
    mean_bytes = sum(map(len, payloads)) / len(payloads)
    print(f"built {len(payloads)} events in {encode_seconds:.1f}s, mean {mean_bytes:.0f} B/event")

    profile_to = Path(tempfile.mkdtemp()) / "consumer.prof" if args.profile else None
    with RedisServer() as server, contextlib.ExitStack() as stack:
        assert server.process is not None
        client = redis.Redis(port=server.port)
        xadd_seconds = prefill(client, payloads, args.layout)
        print(f"XADD prefill: {xadd_seconds:.1f}s ({len(payloads) / xadd_seconds:,.0f} entries/s)")
        set_p16 = redis_benchmark_set(server.port, 16, args.bench_requests)
        set_p1 = redis_benchmark_set(server.port, 1, args.bench_requests)
        client.delete("key:__rand_int__")
        pids = [server.process.pid]
        cache: Any = client
        cache_port = server.port
        extra_env: dict[str, str] = {}
        if args.cluster:
            # The stream stays on the plain server (upstream's EVENTS_REDIS_URL); the cache is
            # a local 3-master cluster, and redis CPU is counted over all four servers.
            from redis.cluster import RedisCluster

            from tests.integration.redis.cluster import LocalRedisCluster

            nodes = stack.enter_context(LocalRedisCluster(3))
            pids += [node.process.pid for node in nodes.servers if node.process is not None]
            cache_port = nodes.ports[0]
            cache = stack.enter_context(RedisCluster(host="127.0.0.1", port=cache_port))
            extra_env = {"REDIS_CLUSTER": "1", "EVENTS_REDIS_URL": server.url}
        cache.set(epoch_key(PREFIX), "bench")
        result = consume(
            client, pids, len(payloads), args.batch_size, profile_to, cache_port, extra_env
        )
        hashes = verify(cache, args.keys)
        client.close()

    eps = result["events_per_second"]
    where = "cache on a 3-master cluster" if args.cluster else "1 process"
    rows = [
        (f"persistent_cache, {where}", eps, ""),
        ("redis-benchmark SET -P 16", set_p16, f"{eps / set_p16:.3f}"),
        ("redis-benchmark SET -P 1", set_p1, f"{eps / set_p1:.3f}"),
    ]
    print()
    print("| what | ops/s | persistent_cache / this |")
    print("|---|---:|---:|")
    for name, value, ratio in rows:
        print(f"| {name} | {value:,.0f} | {ratio} |")
    print()
    print(
        f"events measured {result['measured_events']:,.0f} in {result['seconds']:.2f}s "
        f"(consumer start-up {result['startup_seconds']:.2f}s excluded); "
        f"wall {result['wall_us_per_event']:.1f} us/event, "
        f"consumer CPU {result['consumer_cpu_us_per_event']:.1f} us/event, "
        f"redis-server CPU {result['redis_cpu_us_per_event']:.1f} us/event; "
        f"{hashes}/{args.keys} cache keys written"
    )
    verdict = "MEETS" if eps >= TARGET_EVENTS_PER_SECOND else "MISSES"
    note = " (under cProfile: slowed by the profiler)" if args.profile else ""
    print(f"target >= {TARGET_EVENTS_PER_SECOND:,} events/s: {verdict}{note}")

    profile_text = ""
    if profile_to is not None:
        profile_text = print_profile(profile_to, args.top)
        kept = RESULTS.parent / "persistent_cache_consumer.pstats"
        shutil.copy(profile_to, kept)
        print(f"profile kept in {kept}")

    RESULTS.parent.mkdir(exist_ok=True)
    record: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "events": len(payloads),
        "keys": args.keys,
        "mean_event_bytes": mean_bytes,
        "batch_size": args.batch_size or 500,
        "layout": args.layout,
        "cluster": args.cluster,
        "profiled": args.profile,
        "xadd_prefill_per_second": len(payloads) / xadd_seconds,
        "redis_benchmark_set_p16": set_p16,
        "redis_benchmark_set_p1": set_p1,
        **result,
        "ratio_to_set_p16": eps / set_p16,
        "ratio_to_set_p1": eps / set_p1,
        "state_hashes": hashes,
    }
    if profile_text:
        record["profile_top"] = profile_text
    out = RESULTS.with_name("persistent_cache_profile.json") if args.profile else RESULTS
    if args.cluster:
        out = out.with_name(out.stem + "_cluster.json")
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
