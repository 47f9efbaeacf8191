"""Upstream throughput: entitlement-state reads/s and usage writes/s over HTTP.

    python bench/upstream.py [--seconds 5] [--concurrency 16] [--customers 200]

Starts ``entitlement-upstream`` in its own process (fresh SQLite file, the example
catalog), provisions customers, then drives it from this process with aiohttp.
The baseline is ``GET /livez`` on the same server in the same run: the cost of
aiohttp + HTTP + the client alone, so the ratio isolates upstream's own work.

``server CPU us/req`` is the upstream process's user+system CPU time (all threads, from
``/proc/<pid>/stat``) over the phase divided by the requests it served: less sensitive to
other jobs on the host than req/s.

The last row probes ``GET /livez`` (one request at a time, its own connection) while
``--concurrency`` usage writers run: its latency is what a request that needs no database
waits for while upstream writes (a loop blocked by SQLite work shows up here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(base: str, deadline: float) -> None:
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            try:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("upstream did not become ready")


async def drive(
    name: str, seconds: float, concurrency: int, call: Callable[[int], Awaitable[None]]
) -> dict[str, float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker(worker_id: int) -> None:
        i = worker_id
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "name": name,  # type: ignore[dict-item]
        "requests": len(latencies),
        "per_second": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_upstream(port: int) -> subprocess.Popen[bytes]:
    database = Path(tempfile.mkdtemp()) / "bench.db"
    env = {
        **os.environ,
        "SERVER_API_KEY": KEY,
        "UPSTREAM_PORT": str(port),
        "UPSTREAM_DATABASE": str(database),
                "LOG_LEVEL": "error",
    }
    return subprocess.Popen([sys.executable, "-m", "upstream.main"], env=env)


async def run(args: argparse.Namespace, port: int, pid: int) -> list[dict[str, float]]:
    base = f"http://127.0.0.1:{port}"
    await wait_ready(base, time.monotonic() + 30)
    headers = {"X-API-KEY": KEY}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        for n in range(args.customers):
            body = {"id": f"c{n}", "subscription": {"planId": "pro"}}
            async with http.post(f"{base}/v1/customers", json=body) as resp:
                assert resp.status == 201, await resp.text()

        async def livez(_: int) -> None:
            async with http.get(f"{base}/livez") as resp:
                await resp.read()

        async def read_state(i: int) -> None:
            async with http.get(f"{base}/v1/customers/c{i % args.customers}/entitlements") as r:
                assert r.status == 200
                await r.read()

        async def write_usage(i: int) -> None:
            body = {
                "usages": [
                    {
                        "customerId": f"c{random.randrange(args.customers)}",
                        "featureId": "api-calls",
                        "value": 1,
                    }
                ]
            }
            async with http.post(f"{base}/v1/usage", data=json.dumps(body)) as r:
                assert r.status == 200, await r.text()
                await r.read()

        results = []
        for name, call in (
            ("baseline GET /livez", livez),
            ("GET entitlements", read_state),
            ("POST usage", write_usage),
        ):
            cpu = cpu_seconds(pid)
            result = await drive(name, args.seconds, args.concurrency, call)
            result["cpu_us"] = (cpu_seconds(pid) - cpu) / result["requests"] * 1e6
            results.append(result)

        async with aiohttp.ClientSession() as probe_http:

            async def probe(_: int) -> None:
                async with probe_http.get(f"{base}/livez") as resp:
                    await resp.read()

            writers = asyncio.create_task(
                drive("POST usage", args.seconds, args.concurrency, write_usage)
            )
            cpu = cpu_seconds(pid)
            probed = await drive("GET /livez beside POST usage", args.seconds, 1, probe)
            written = await writers
            probed["cpu_us"] = (cpu_seconds(pid) - cpu) / (
                probed["requests"] + written["requests"]
            ) * 1e6
            results.append(probed)
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--customers", type=int, default=200)
    args = parser.parse_args()
    port = free_port()
    server = start_upstream(port)
    try:
        results = asyncio.run(run(args, port, server.pid))
    finally:
        server.terminate()
        server.wait(timeout=30)
    baseline = results[0]["per_second"]
    print(
        f"| operation | req/s | p50 ms | p99 ms | vs baseline | server CPU us/req |"
        f"  (c={args.concurrency})"
    )
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['name']} | {r['per_second']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |"
            f" {r['per_second'] / baseline:.2f}x | {r['cpu_us']:.0f} |"
        )


if __name__ == "__main__":
    main()
