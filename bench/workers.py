"""One sidecar process against ``WORKERS=2``, each pinned, under the same load.

    python bench/workers.py                 # 3 alternating rounds, 5 s each
    python bench/workers.py --rounds 5 --duration 10

An upstream (SQLite, the demo catalog) with ``--customers`` customers, then a sidecar reading
through it, started as ``WORKERS=1`` pinned to one core and as ``WORKERS=2`` pinned to two
(``taskset``), alternately. The load: ``--clients`` grpc.aio client processes, each with
``--channels`` channels (the kernel spreads connections over the workers, so more channels
spread better) and ``--concurrency`` calls in flight per channel, asking
``GetMeteredEntitlement`` for random customers (memoized after the first pass, as hot reads
are). Reported per configuration: calls per second (median over rounds) and the server
processes' CPU per call, from /proc. On a 2-core machine the clients share the cores with the
sidecar, so the ratio understates what two workers give on a bigger node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, deadline: float = 60.0) -> None:
    end = time.monotonic() + deadline
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def post(url: str, body: object) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "X-API-KEY": KEY},
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def family(pid: int) -> list[int]:
    """``pid`` and its children (the workers of a supervisor)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    if children.exists():
        found += [int(c) for c in children.read_text().split()]
    return found


def client(
    port: int,
    customers: int,
    channels: int,
    concurrency: int,
    seconds: float,
    start_at: float,
    out: multiprocessing.Queue[int],
) -> None:
    import grpc

    sys.path.insert(0, str(ROOT))
    from sidecar.pb import sidecar_pb2 as pb
    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    async def run() -> int:
        rng = random.Random(os.getpid())
        opened = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
        # The aio flavour of the stub is typed only in the .pyi (see tests/conftest.py).
        stubs: list[Any] = [pb_grpc.SidecarServiceStub(c) for c in opened]
        requests = [
            pb.GetMeteredEntitlementRequest(customer_id=f"bench-{i}", feature_id="api-calls")
            for i in range(customers)
        ]
        done = 0
        await asyncio.sleep(max(start_at - time.time(), 0))
        end = time.monotonic() + seconds

        async def loop(stub: Any) -> None:
            nonlocal done
            while time.monotonic() < end:
                await stub.GetMeteredEntitlement(rng.choice(requests))
                done += 1

        await asyncio.gather(*(loop(s) for s in stubs for _ in range(concurrency)))
        for c in opened:
            await c.close(None)
        return done

    out.put(asyncio.run(run()))


def trial(workers: int, args: argparse.Namespace, api_url: str) -> tuple[float, float]:
    port = free_port()
    cores = ",".join(str(c) for c in range(workers))
    env = {
        **os.environ,
        "API_URL": api_url,
        "SERVER_API_KEY": KEY,
        "PORT": str(port),
        "HTTP_PORT": str(free_port()),
        "WORKERS": str(workers),
        "LOG_LEVEL": "error",
        "SPOOL_DIR": "",
    }
    server = subprocess.Popen(
        ["taskset", "-c", cores, sys.executable, "-m", "sidecar.main"], env=env, cwd=ROOT
    )
    try:
        wait_http(f"http://127.0.0.1:{env['HTTP_PORT']}/readyz")
        queue: multiprocessing.Queue[int] = multiprocessing.Queue()
        # Warm every worker's cache: many short connections land on all of them.
        warm = [
            multiprocessing.Process(
                target=client,
                args=(port, args.customers, 4, 4, 1.0, time.time(), queue),
            )
            for _ in range(args.clients)
        ]
        for p in warm:
            p.start()
        for p in warm:
            p.join()
            queue.get()
        pids = family(server.pid)
        start_at = time.time() + 1.0
        procs = [
            multiprocessing.Process(
                target=client,
                args=(
                    port,
                    args.customers,
                    args.channels,
                    args.concurrency,
                    args.duration,
                    start_at,
                    queue,
                ),
            )
            for _ in range(args.clients)
        ]
        for p in procs:
            p.start()
        time.sleep(max(start_at - time.time(), 0))
        cpu_before = cpu_seconds(pids)
        for p in procs:
            p.join()
        cpu = cpu_seconds(pids) - cpu_before
        calls = sum(queue.get() for _ in procs)
        return calls / args.duration, cpu / max(calls, 1) * 1e6
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    up_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "upstream.main"],
        env={
            **os.environ,
            "SERVER_API_KEY": KEY,
            "UPSTREAM_PORT": str(up_port),
            "UPSTREAM_DATABASE": str(work / "up.db"),
            "LOG_LEVEL": "error",
        },
        cwd=ROOT,
    )
    api_url = f"http://127.0.0.1:{up_port}"
    try:
        wait_http(f"{api_url}/livez")
        for i in range(args.customers):
            post(
                f"{api_url}/v1/customers", {"id": f"bench-{i}", "subscription": {"planId": "free"}}
            )
        results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for workers in (1, 2):
                results[workers].append(trial(workers, args, api_url))
        print(
            f"| workers (pinned cores) | calls/s (median of {args.rounds}) | server CPU µs/call |"
        )
        print("|---|---:|---:|")
        for workers, runs in results.items():
            rps = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"| {workers} | {rps:,.0f} | {cpu:.0f} |")
        one = statistics.median(r[0] for r in results[1])
        two = statistics.median(r[0] for r in results[2])
        print(f"\n2 workers / 1 worker: {two / one:.2f}x calls/s")
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(timeout=30)


if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    main()
