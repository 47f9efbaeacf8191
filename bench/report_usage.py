"""ReportUsage through the sidecar against a direct ``POST /v1/usage`` to upstream.

    python bench/report_usage.py                                    # c=1 and c=16, this tree
    python bench/report_usage.py --baseline-tree /tmp/report-base   # interleaved with another
    python bench/report_usage.py --callgrind [--baseline-tree DIR]  # + instructions per report
    python bench/report_usage.py --profile                          # cProfile of the sidecar

Processes: one ``entitlement-upstream`` (this tree's, fresh SQLite file, ``--customers``
customers on the ``pro`` plan) for the whole run; per trial one ``entitlement-sidecar``
(``python -m sidecar.main`` of the tree measured, default settings: no Redis, no usage
buffering, the change stream on) started fresh, its hot cache warmed with one read per
customer; the load generator is this process (uvloop), ``--concurrency`` tasks.

Trials, each ``--warmup`` then ``--duration`` seconds:

* ``direct``: ``POST /v1/usage`` to upstream with aiohttp (one keep-alive session), one report
  per call with an idempotency key, as the sidecar forwards it;
* ``report:<tree>``: ``ReportUsage`` through the sidecar of ``<tree>`` over grpc.aio, without
  an idempotency key (the sidecar adds one): same upstream work per call as ``direct``;
* ``read:<tree>``: ``GetMeteredEntitlement`` (hot, memoized) through the same sidecar, for
  the CPU of a read.

Each report is a DELTA of 1 on ``api-calls`` for customer ``i % customers``. Recorded per trial:
calls/s, p50/p99 latency (client side), and the CPU per call of the sidecar and of upstream
(utime + stime of the process, all threads, from ``/proc/<pid>/stat``, over the measured
window). The sidecar's CPU includes everything a report costs it: the gRPC call, the POST to
upstream, the write-back, and the change upstream then streams back for it. Trials are
interleaved (direct, tree, baseline, ...; the order reversed every other round) so drift on a
shared host lands on every side; the medians over ``--rounds`` are reported.

``--callgrind`` counts instructions per report in-process, under ``valgrind --tool=callgrind``
(repeatable on a loaded host, wall clock is not), for each tree, against the same upstream
process (which valgrind does not see):

* ``handler``: ``SidecarServicer.ReportUsage`` awaited directly (no gRPC), the source's change
  stream off: validation, conversion, the POST and its answer, the write-back;
* ``handler+stream``: the same with the change stream on; the region ends once the service
  applied the change upstream streamed back for every report;
* ``grpc+stream``: the whole sidecar as deployed (``sidecar.app.Sidecar``: grpc.aio server,
  change stream), driven by a client process valgrind does not see; ``read`` is a hot
  ``GetMeteredEntitlement`` through the same server, for comparison.

Counters are zeroed right before and dumped right after each region (markers: ``os.getppid``
and ``os.getpgrp``), so imports, start-up and warm-up are excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
KEY = "bench-key"
FEATURE = "api-calls"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of the whole process (all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{what} did not become ready")


def post(base: str, path: str, body: object) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"X-API-KEY": KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


class Upstream:
    """This tree's upstream on a fresh SQLite file, with ``customers`` customers on ``pro``."""

    def __init__(self, customers: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.customers = customers
        database = Path(tempfile.mkdtemp(prefix="bench-report-")) / "upstream.db"
        env = {
            **os.environ,
            "SERVER_API_KEY": KEY,
            "UPSTREAM_PORT": str(self.port),
            "UPSTREAM_DATABASE": str(database),
            "LOG_LEVEL": "error",
            "PYTHONPATH": str(ROOT),
        }
        self.proc = subprocess.Popen([sys.executable, "-m", "upstream.main"], env=env, cwd=ROOT)
        wait_http(f"{self.url}/livez", self.proc, "upstream")
        for n in range(customers):
            post(self.url, "/v1/customers", {"id": f"c{n}", "subscription": {"planId": "pro"}})

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def customer(i: int, customers: int) -> str:
    return f"c{i % customers}"


# ------------------------------------------------------------------------ wall clock / CPU


class SidecarProcess:
    def __init__(self, tree: Path, upstream: Upstream) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        env = {
            **os.environ,
            "PORT": str(self.grpc_port),
            "HTTP_PORT": str(self.http_port),
            "SERVER_API_KEY": KEY,
            "API_URL": upstream.url,
            "LOG_LEVEL": "warn",
            "PYTHONPATH": str(tree),
        }
        self.proc = subprocess.Popen([sys.executable, "-m", "sidecar.main"], env=env, cwd=tree)
        wait_http(f"http://127.0.0.1:{self.http_port}/readyz", self.proc, f"sidecar ({tree})")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


async def _drive(
    call: Any, concurrency: int, warmup: float, duration: float, pids: dict[str, int]
) -> dict[str, Any]:
    latencies: list[float] = []
    counter = iter(range(10**12))
    state = {"measuring": False, "stop": False, "done": 0}

    async def worker() -> None:
        perf = time.perf_counter
        while not state["stop"]:
            i = next(counter)
            started = perf()
            await call(i)
            if state["measuring"]:
                latencies.append(perf() - started)
                state["done"] += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client0 = time.process_time()
    state["measuring"] = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    state["measuring"] = False
    elapsed = time.perf_counter() - started
    cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_cpu = time.process_time() - client0
    state["stop"] = True
    await asyncio.gather(*tasks)
    calls = state["done"]
    latencies.sort()
    out = {
        "calls": calls,
        "per_second": calls / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "client_cpu_us": client_cpu / calls * 1e6,
    }
    for name in pids:
        user = cpu1[name][0] - cpu0[name][0]
        system = cpu1[name][1] - cpu0[name][1]
        out[f"{name}_cpu_us"] = (user + system) / calls * 1e6
        out[f"{name}_sys_us"] = system / calls * 1e6
    return out


async def direct_trial(args: argparse.Namespace, upstream: Upstream) -> dict[str, Any]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"X-API-KEY": KEY, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers, connector=connector) as http:
        url = f"{upstream.url}/v1/usage"

        async def call(i: int) -> None:
            body = {
                "usages": [
                    {
                        "customerId": customer(i, args.customers),
                        "featureId": FEATURE,
                        "value": 1,
                        "updateBehavior": "DELTA",
                        "idempotencyKey": f"direct-{uuid.uuid4()}",
                    }
                ]
            }
            async with http.post(url, data=json.dumps(body)) as resp:
                payload = await resp.read()
                if resp.status != 200:
                    raise SystemExit(f"upstream answered {resp.status}: {payload!r}")
                json.loads(payload)

        return await _drive(
            call, args.concurrency, args.warmup, args.duration, {"upstream": upstream.proc.pid}
        )


async def sidecar_trial(
    args: argparse.Namespace, upstream: Upstream, sidecar: SidecarProcess, kind: str
) -> dict[str, Any]:
    import grpc

    from sidecar.pb import sidecar_pb2 as pb
    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        stub = pb_grpc.SidecarServiceStub(channel)
        for n in range(args.customers):  # the hot cache holds every customer
            await stub.GetMeteredEntitlement(
                pb.GetMeteredEntitlementRequest(customer_id=f"c{n}", feature_id=FEATURE)
            )
        if kind == "report":
            requests = [
                pb.ReportUsageRequest(
                    customer_id=customer(i, args.customers), feature_id=FEATURE, value=1
                )
                for i in range(args.customers)
            ]

            async def call(i: int) -> None:
                await stub.ReportUsage(requests[i % len(requests)], timeout=10)

        else:
            reads = [
                pb.GetMeteredEntitlementRequest(
                    customer_id=customer(i, args.customers), feature_id=FEATURE
                )
                for i in range(args.customers)
            ]

            async def call(i: int) -> None:
                await stub.GetMeteredEntitlement(reads[i % len(reads)], timeout=10)

        pids = {"sidecar": sidecar.proc.pid, "upstream": upstream.proc.pid}
        return await _drive(call, args.concurrency, args.warmup, args.duration, pids)


def wall_clock(args: argparse.Namespace, trees: dict[str, Path]) -> dict[str, Any]:
    import uvloop

    upstream = Upstream(args.customers)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for concurrency in args.concurrency_levels:
            args.concurrency = concurrency
            per = results.setdefault(str(concurrency), {})
            for round_ in range(args.rounds):
                order: list[tuple[str, Path | None]] = [("direct", None)]
                order += list(trees.items())
                if round_ % 2:
                    order.reverse()
                for name, tree in order:
                    if tree is None:
                        trial = uvloop.run(direct_trial(args, upstream))
                        per.setdefault("direct", []).append(trial)
                        print(f"c={concurrency} round {round_} direct: {_brief(trial)}", flush=True)
                        continue
                    sidecar = SidecarProcess(tree, upstream)
                    try:
                        for kind in args.kinds:
                            trial = uvloop.run(sidecar_trial(args, upstream, sidecar, kind))
                            per.setdefault(f"{kind}:{name}", []).append(trial)
                            print(
                                f"c={concurrency} round {round_} {kind}:{name}: {_brief(trial)}",
                                flush=True,
                            )
                    finally:
                        sidecar.stop()
    finally:
        upstream.stop()
    return results


def _brief(trial: dict[str, Any]) -> str:
    parts = [f"{trial['per_second']:.0f}/s", f"p50 {trial['p50_ms']:.2f} ms"]
    if "sidecar_cpu_us" in trial:
        parts.append(
            f"sidecar {trial['sidecar_cpu_us']:.0f} µs (system {trial['sidecar_sys_us']:.0f})"
        )
    parts.append(f"upstream {trial['upstream_cpu_us']:.0f} µs")
    return ", ".join(parts)


def render_wall(results: dict[str, Any]) -> str:
    lines = []
    for concurrency, per in results.items():
        direct = statistics.median(t["per_second"] for t in per["direct"])
        lines.append(f"\nc={concurrency}")
        lines.append(
            "| trial | calls/s (median) | vs direct | p50 ms | p99 ms | sidecar CPU µs/call "
            "| upstream CPU µs/call |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for name, trials in per.items():

            def med(field: str, trials: list[dict[str, Any]] = trials) -> float:
                values = [t[field] for t in trials if field in t]
                return statistics.median(values) if values else float("nan")

            rate = med("per_second")
            lines.append(
                f"| {name} | {rate:.0f} | {rate / direct:.2f} | {med('p50_ms'):.2f} "
                f"| {med('p99_ms'):.2f} | {med('sidecar_cpu_us'):.0f} "
                f"| {med('upstream_cpu_us'):.0f} |"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------------------- callgrind


def _import_tree(tree: Path) -> None:
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (BENCH_DIR, ROOT)]
    sys.path.insert(0, str(tree))


def _region_start() -> None:
    os.getppid()


def _region_end() -> None:
    os.getpgrp()


class _Context:
    """What the servicer asks of a grpc.aio context: no deadline, abort raises."""

    def time_remaining(self) -> float | None:
        return None

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


async def _handler_regions(
    upstream_url: str, customers: int, calls: int, stream: bool
) -> list[dict[str, Any]]:
    from sidecar.api.servicer import SidecarServicer
    from sidecar.cache.hot_cache import HotCache
    from sidecar.observability import Metrics
    from sidecar.pb import sidecar_pb2 as pb
    from sidecar.service.entitlements import EntitlementService
    from sidecar.source.base import UsageChanged
    from sidecar.source.http_upstream import HttpUpstreamSource

    metrics = Metrics()
    source = HttpUpstreamSource(api_url=upstream_url, api_key=KEY, stream=stream)
    service = EntitlementService(
        source=source, cache=HotCache(2**30), metrics=metrics, coherent=stream
    )
    applied = {"usage": 0, "target": -1}
    reached = asyncio.Event()
    apply = service.apply

    def counting_apply(change: Any) -> None:
        apply(change)
        if isinstance(change, UsageChanged):
            applied["usage"] += 1
            if applied["usage"] == applied["target"]:
                reached.set()

    service.apply = counting_apply  # type: ignore[method-assign]
    service.start()
    await service.synced.wait()
    servicer = SidecarServicer(service, metrics, {})
    context: Any = _Context()
    for n in range(customers):
        await servicer.GetMeteredEntitlement(
            pb.GetMeteredEntitlementRequest(customer_id=f"c{n}", feature_id=FEATURE), context
        )
    requests = [
        pb.ReportUsageRequest(customer_id=customer(i, customers), feature_id=FEATURE, value=1)
        for i in range(calls)
    ]

    async def run(batch: list[Any]) -> None:
        if stream:
            reached.clear()
            applied["target"] = applied["usage"] + len(batch)
        for request in batch:
            await servicer.ReportUsage(request, context)
        if stream:
            await reached.wait()

    await run(requests[: max(customers, 20)])  # warm: pooled connection, code paths
    _region_start()
    await run(requests)
    _region_end()
    await service.aclose()
    name = "handler+stream" if stream else "handler"
    return [{"part": name, "calls": calls}]


_CLIENT = r"""
import asyncio, sys
import grpc
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc

async def main(port, customers, calls, kind):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SidecarServiceStub(channel)
        if kind == "report":
            reqs = [pb.ReportUsageRequest(customer_id=f"c{i % customers}", feature_id="api-calls",
                                          value=1) for i in range(calls)]
            call = stub.ReportUsage
        else:
            reqs = [pb.GetMeteredEntitlementRequest(customer_id=f"c{i % customers}",
                                                    feature_id="api-calls") for i in range(calls)]
            call = stub.GetMeteredEntitlement
        for request in reqs[: max(customers, 20)]:
            await call(request)
        print("ready", flush=True)
        sys.stdin.readline()
        for request in reqs:
            await call(request)
        print("done", flush=True)

asyncio.run(main(*map(int, sys.argv[1:4]), sys.argv[4]))
"""


async def _grpc_regions(upstream_url: str, customers: int, calls: int) -> list[dict[str, Any]]:
    from sidecar.app import Sidecar
    from sidecar.settings import Settings
    from sidecar.source.base import UsageChanged
    from sidecar.source.http_upstream import HttpUpstreamSource

    settings = Settings(
        port=0, http_port=0, http_bind_address="127.0.0.1", api_url=upstream_url, api_key=KEY
    )
    source = HttpUpstreamSource(api_url=upstream_url, api_key=KEY)
    regions = []
    async with Sidecar(settings, source) as app:
        service = app.service
        applied = {"usage": 0, "target": -1}
        reached = asyncio.Event()
        apply = service.apply

        def counting_apply(change: Any) -> None:
            apply(change)
            if isinstance(change, UsageChanged):
                applied["usage"] += 1
                if applied["usage"] == applied["target"]:
                    reached.set()

        service.apply = counting_apply  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        for kind in ("report", "read"):
            warm = max(customers, 20)
            # The client runs natively (valgrind does not follow it: no --trace-children).
            client = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                _CLIENT,
                str(app.grpc_port),
                str(customers),
                str(calls),
                kind,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": sys.path[0]},
            )
            assert client.stdin is not None
            assert client.stdout is not None
            if kind == "report":
                applied["target"] = applied["usage"] + warm
                reached.clear()
            assert (await client.stdout.readline()).strip() == b"ready"
            if kind == "report":
                await reached.wait()  # the warm-up's changes are applied
                applied["target"] = applied["usage"] + calls
                reached.clear()
            _region_start()
            client.stdin.write(b"go\n")
            await client.stdin.drain()
            assert (await client.stdout.readline()).strip() == b"done"
            if kind == "report":
                await reached.wait()
            _region_end()
            await client.wait()
            regions.append({"part": f"grpc+stream {kind}", "calls": calls})
        del loop
    return regions


def callgrind_child(tree: Path, upstream_url: str, customers: int, calls: int, plan: Path) -> None:
    _import_tree(tree)
    import uvloop

    from entitlements.logs import configure_logging

    configure_logging("warn", "json", service="bench-report-usage")
    regions: list[dict[str, Any]] = []
    regions += uvloop.run(_handler_regions(upstream_url, customers, calls, stream=False))
    regions += uvloop.run(_handler_regions(upstream_url, customers, calls, stream=True))
    regions += uvloop.run(_grpc_regions(upstream_url, customers, calls))
    plan.write_text(json.dumps(regions))


def callgrind(tree: Path, upstream: Upstream, calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-report-cg-") as tmp:
        out_file = Path(tmp) / "cg.out"
        plan = Path(tmp) / "regions.json"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--zero-before=os_getppid",
            "--dump-before=os_getpgrp",
            f"--callgrind-out-file={out_file}",
            sys.executable,
            str(Path(__file__).resolve()),
            "--callgrind-child",
            str(tree),
            "--upstream-url",
            upstream.url,
            "--customers",
            str(upstream.customers),
            "--calls",
            str(calls),
            "--regions",
            str(plan),
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        regions = json.loads(plan.read_text())
        out = {}
        for part, region in enumerate(regions, start=1):
            text = Path(f"{out_file}.{part}").read_text()
            match = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            assert match, f"no totals in dump {part}"
            out[region["part"]] = int(match.group(1)) / region["calls"]
    return out


def render_callgrind(report: dict[str, dict[str, float]]) -> str:
    names = list(report)
    parts = list(next(iter(report.values())))
    header = "| instructions per call | " + " | ".join(names)
    if len(names) == 2:
        header += " | ratio"
    lines = ["", header + " |", "|" + "---|" * (header.count("|"))]
    for part in parts:
        cells = [f"{report[name][part] / 1000:,.0f} k" for name in names]
        if len(names) == 2:
            cells.append(f"{report[names[0]][part] / report[names[1]][part]:.2f}")
        lines.append(f"| {part} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- profile


def profile(args: argparse.Namespace, upstream: Upstream) -> str:
    """cProfile of the in-process handler with the change stream on (see ``handler+stream``)."""
    import cProfile
    import io
    import pstats

    import uvloop

    _import_tree(ROOT)
    from entitlements.logs import configure_logging

    configure_logging("warn", "json", service="bench-report-usage")
    profiler = cProfile.Profile()
    global _region_start, _region_end
    _region_start, _region_end = profiler.enable, profiler.disable
    uvloop.run(_handler_regions(upstream.url, upstream.customers, args.calls, stream=True))
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(50)
    stats.sort_stats("tottime").print_stats(40)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=20)
    parser.add_argument("--concurrency-levels", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--kinds", nargs="+", default=["report", "read"])
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, measured alike")
    parser.add_argument("--callgrind", action="store_true", help="also count instructions")
    parser.add_argument("--calls", type=int, default=500, help="reports per callgrind region")
    parser.add_argument("--skip-wall", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the handler, then exit")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "report_usage.json")
    parser.add_argument("--callgrind-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-url", help=argparse.SUPPRESS)
    parser.add_argument("--regions", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.callgrind_child is not None:
        callgrind_child(
            args.callgrind_child, args.upstream_url, args.customers, args.calls, args.regions
        )
        return
    if args.profile:
        upstream = Upstream(args.customers)
        try:
            print(profile(args, upstream))
        finally:
            upstream.stop()
        return
    trees = {"this": ROOT}
    if args.baseline_tree is not None:
        trees["baseline"] = args.baseline_tree.resolve()
    report: dict[str, Any] = {"command": sys.argv, "trees": {k: str(v) for k, v in trees.items()}}
    if not args.skip_wall:
        report["wall"] = wall_clock(args, trees)
    if args.callgrind:
        upstream = Upstream(args.customers)
        try:
            report["callgrind"] = {
                name: callgrind(tree, upstream, args.calls) for name, tree in trees.items()
            }
        finally:
            upstream.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if "wall" in report:
        print(render_wall(report["wall"]))
    if "callgrind" in report:
        print(render_callgrind(report["callgrind"]))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
