"""Hot-read latency and throughput of the sidecar against a no-op gRPC baseline.

Three kinds of process, all started with ``spawn``:

* the real sidecar (``sidecar.app.Sidecar`` on uvloop) over an InMemorySource
  holding N customers with 20 entitlements each, its hot cache pre-warmed with
  one read per customer;
* a no-op grpc.aio server (uvloop, same server options) implementing the same
  SidecarService methods, answering every call with pre-serialized bytes (the
  sidecar's own answers, so the same size), without any evaluation or
  serialization;
* a load generator of several grpc.aio client processes.

For every (method, concurrency) the two servers are measured alternately,
(sidecar, baseline) then (baseline, sidecar), over several rounds so machine
drift hits both equally, and the report gives sidecar/baseline ratios.

    python bench/latency.py --quick          # ~1 minute smoke run
    python bench/latency.py                  # the full run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing as mp
import os
import platform
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import _fixture as fx  # noqa: E402

SIDECAR = "sidecar"
BASELINE = "baseline"
SERVERS = (SIDECAR, BASELINE)
METHODS = ("GetEntitlement", "GetMeteredEntitlement", "GetEntitlementsStateV2")
TARGET_LATENCY_RATIO = 1.25
TARGET_THROUGHPUT_RATIO = 0.8
REQUESTS_PER_WORKER = 8192
SIZE_SAMPLES = 256  # responses per trial whose serialized size the client records
MAX_MESSAGE_BYTES = 4 * 2**20
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


def _pin(cpus: list[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def _quiet_logging() -> None:
    from entitlements.logs import configure_logging

    configure_logging("warn", "json", service="bench-latency")


# --------------------------------------------------------------------- requests


def build_requests(method: str, n_customers: int, seed: int, count: int) -> list[Any]:
    """A fixed, seeded request mix spread over many distinct customers."""
    from sidecar.pb import sidecar_pb2 as pb

    rng = random.Random(seed)
    out: list[Any] = []
    for k in range(count):
        cid = fx.customer_id(rng.randrange(n_customers))
        if method == "GetEntitlement":
            # Cycle through all 20 features: 5 boolean, 5 numeric, 6 metered, 4 enum.
            fid = fx.ALL_FEATURE_IDS[k % len(fx.ALL_FEATURE_IDS)]
            out.append(pb.GetEntitlementRequest(customer_id=cid, feature_id=fid))
        elif method == "GetMeteredEntitlement":
            fid = fx.METERED_IDS[k % len(fx.METERED_IDS)]
            out.append(
                pb.GetMeteredEntitlementRequest(
                    customer_id=cid,
                    feature_id=fid,
                    options=pb.MeteredEntitlementOptions(requested_usage=1.0),
                )
            )
        elif method == "GetEntitlementsStateV2":
            out.append(pb.GetEntitlementsStateV2Request(customer_id=cid))
        else:
            raise ValueError(method)
    return out


def reference_responses() -> dict[str, dict[str, bytes]]:
    """The real sidecar's answers for customer 0, evaluated in-process once.

    Keyed by method then feature id ("" for the list call); the baseline
    replays them so its responses have exactly the sidecar's serialized size.
    """
    from sidecar.api.servicer import SidecarServicer
    from sidecar.cache.hot_cache import HotCache
    from sidecar.observability import Metrics
    from sidecar.service.entitlements import EntitlementService
    from sidecar.source.base import Resync
    from sidecar.source.memory import InMemorySource

    async def run() -> dict[str, dict[str, bytes]]:
        source = InMemorySource()
        source.put(fx.build_snapshot(0))
        metrics = Metrics()
        service = EntitlementService(source=source, cache=HotCache(2**30), metrics=metrics)
        service.apply(Resync())  # the change stream is live: entries are trusted
        servicer = SidecarServicer(service, metrics, {})
        out: dict[str, dict[str, bytes]] = {m: {} for m in METHODS}
        for method in METHODS:
            count = {"GetEntitlement": 20, "GetMeteredEntitlement": 6}.get(method, 1)
            for request in build_requests(method, 1, 0, count):
                response = await getattr(servicer, method)(request, None)
                key = getattr(request, "feature_id", "")
                # The servicer may answer with bytes it memoized (passed straight to the wire).
                out[method][key] = (
                    response if isinstance(response, bytes) else response.SerializeToString()
                )
        return out

    return asyncio.run(run())


# ---------------------------------------------------------------------- servers


class GcWatch:
    """Counts collector runs and their pauses per generation (gc.callbacks).

    ``snapshot`` returns cumulative counts and pause totals, and the longest
    pause per generation *since the previous snapshot*.
    """

    def __init__(self) -> None:
        import gc

        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.interval_max_s = [0.0, 0.0, 0.0]
        self._started = 0.0
        self.tracked_at_start = len(gc.get_objects())
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        gen = info["generation"]
        pause = time.perf_counter() - self._started
        self.count[gen] += 1
        self.total_s[gen] += pause
        self.interval_max_s[gen] = max(self.interval_max_s[gen], pause)

    def snapshot(self) -> dict[str, Any]:
        out = {"gc_count": list(self.count), "gc_total_s": list(self.total_s),
               "gc_max_s": list(self.interval_max_s), "gc_tracked_at_start": self.tracked_at_start}
        self.interval_max_s = [0.0, 0.0, 0.0]
        return out


def _control_thread(conn: Connection, handlers: dict[str, Any], on_stop: Any) -> None:
    """Answers the coordinator from a thread so the event loop only serves RPCs."""
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            on_stop()
            return
        if cmd == "stop":
            on_stop()
            return
        conn.send(handlers[cmd]())


def run_sidecar(conn: Connection, n_customers: int, cache_bytes: int, cpus: list[int] | None,
                profile_path: str | None = None) -> None:
    _pin(cpus)
    import uvloop

    _quiet_logging()
    from sidecar.app import Sidecar
    from sidecar.settings import Settings
    from sidecar.source.memory import InMemorySource

    async def main() -> None:
        source = InMemorySource()
        for i in range(n_customers):
            source.put(fx.build_snapshot(i))
        settings = Settings(port=0, http_port=0, http_bind_address="127.0.0.1",
                            cache_max_bytes=cache_bytes)
        async with Sidecar(settings, source) as app:
            started = time.perf_counter()
            for i in range(n_customers):
                await app.service.snapshot(fx.customer_id(i), None)
            warm_s = time.perf_counter() - started
            import gc

            gc.collect()  # both servers start measuring from a collected heap
            gcw = GcWatch()
            cache = app.cache
            if len(cache) != n_customers:
                raise SystemExit(f"cache holds {len(cache)} of {n_customers} customers: raise cache_bytes")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            registry = app.metrics.registry

            def handler_time(method: str) -> tuple[float, float]:
                # The sidecar's own per-method histogram: time inside the handler.
                labels = {"method": method}
                total = registry.get_sample_value("sidecar_grpc_request_duration_seconds_sum", labels)
                count = registry.get_sample_value("sidecar_grpc_request_duration_seconds_count", labels)
                return (total or 0.0, count or 0.0)

            def stats() -> dict[str, Any]:
                s = cache.stats
                return {"entries": len(cache), "bytes_used": cache.bytes_used, "hits": s.hits,
                        "misses": s.misses, "evictions": s.evictions,
                        "handler": {m: handler_time(m) for m in METHODS}, **gcw.snapshot()}

            conn.send({"port": app.grpc_port, "pid": os.getpid(), "warm_seconds": warm_s,
                       "fetches": source.fetch_count, **stats()})
            handlers: dict[str, Any] = {"stats": stats}
            if profile_path:
                import cProfile
                import io
                import pstats

                profiler = cProfile.Profile()

                def toggle(on: bool) -> bool:
                    # cProfile hooks the calling thread: switch it on the loop's thread.
                    loop.call_soon_threadsafe(profiler.enable if on else profiler.disable)
                    return on

                def dump() -> str:
                    profiler.dump_stats(profile_path)
                    out = io.StringIO()
                    st = pstats.Stats(profile_path, stream=out).strip_dirs()
                    st.sort_stats("tottime").print_stats(30)
                    st.sort_stats("cumulative").print_stats(30)
                    return out.getvalue()

                handlers.update(profile_on=lambda: toggle(True), profile_off=lambda: toggle(False),
                                profile_dump=dump)
            threading.Thread(
                target=_control_thread,
                args=(conn, handlers, lambda: loop.call_soon_threadsafe(stop.set)),
                daemon=True,
            ).start()
            await stop.wait()

    uvloop.run(main())


def run_baseline(conn: Connection, responses: dict[str, dict[str, bytes]], cpus: list[int] | None) -> None:
    _pin(cpus)
    import grpc
    import uvloop

    from sidecar.api.grpc_server import sidecar_handler
    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    class NoopServicer(pb_grpc.SidecarServiceServicer):
        """Same service, same response bytes, zero work: the floor grpc.aio allows.

        Answers with the pre-serialized bytes, registered through the sidecar's own handler
        table (requests parsed the same way, bytes passed to the wire as they are), as the
        sidecar answers a memoized read. Serializing a message per call here would cost more
        than the sidecar's memoized handler and flatter every ratio.
        """

        def __init__(self) -> None:
            self.entitlement = responses["GetEntitlement"]
            self.metered = responses["GetMeteredEntitlement"]
            self.state = responses["GetEntitlementsStateV2"][""]

        async def GetEntitlement(self, request: Any, context: Any) -> Any:  # noqa: N802
            return self.entitlement[request.feature_id]

        async def GetMeteredEntitlement(self, request: Any, context: Any) -> Any:  # noqa: N802
            return self.metered[request.feature_id]

        async def GetEntitlementsStateV2(self, request: Any, context: Any) -> Any:  # noqa: N802
            return self.state

    async def main() -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((sidecar_handler(NoopServicer()),))  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        import gc

        gc.collect()
        gcw = GcWatch()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        conn.send({"port": port, "pid": os.getpid()})
        threading.Thread(
            target=_control_thread,
            args=(conn, {"stats": gcw.snapshot}, lambda: loop.call_soon_threadsafe(stop.set)),
            daemon=True,
        ).start()
        await stop.wait()
        await server.stop(0)

    uvloop.run(main())


def warm_over_grpc(port: int, n_customers: int, methods: list[str], concurrency: int = 32) -> float:
    """One read per customer per measured method, through the sidecar's gRPC API.

    The service-level warm-up fills the hot cache; this also fills whatever the
    read handlers memoize per cached snapshot (e.g. serialized entitlement
    lists), so every measured call is a hot read.
    """
    import grpc

    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    async def run() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SidecarServiceStub(channel)
            for method in methods:
                call = getattr(stub, method)
                reqs = build_requests(method, 1, 0, 1)[0]
                todo = iter(range(n_customers))

                async def worker(call: Any = call, template: Any = reqs, todo: Any = todo) -> None:
                    for i in todo:
                        req = type(template)()
                        req.CopyFrom(template)
                        req.customer_id = fx.customer_id(i)
                        await call(req)

                await asyncio.gather(*(worker() for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(run())
    return time.perf_counter() - started


# ----------------------------------------------------------------------- client


def run_client(  # noqa: C901 - one process's whole life, kept in one place
    conn: Connection, ports: dict[str, int], n_customers: int, worker: int, cpus: list[int] | None
) -> None:
    _pin(cpus)
    import grpc
    import uvloop

    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    channels = {s: grpc.aio.insecure_channel(f"127.0.0.1:{p}", options=options) for s, p in ports.items()}
    stubs = {s: pb_grpc.SidecarServiceStub(c) for s, c in channels.items()}
    requests = {m: build_requests(m, n_customers, 1000 + worker, REQUESTS_PER_WORKER) for m in METHODS}

    async def trial(server: str, method: str, tasks: int, t_start: int, warmup_ns: int,
                    duration_ns: int, offset: int) -> dict[str, Any]:
        call = getattr(stubs[server], method)
        reqs = requests[method]
        n_reqs = len(reqs)
        m_start = t_start + warmup_ns
        m_end = m_start + duration_ns
        latencies: list[int] = []
        sizes: list[int] = []
        counters = {"done_in_window": 0, "total": 0, "errors": 0}
        clock = time.perf_counter_ns

        async def one(k: int) -> None:
            idx = offset + k * (n_reqs // max(tasks, 1))
            record = latencies.append
            done = 0
            total = 0
            while True:
                t0 = clock()
                if t0 >= m_end:
                    break
                try:
                    response = await call(reqs[idx % n_reqs])
                except grpc.aio.AioRpcError:
                    counters["errors"] += 1
                    continue
                t1 = clock()
                idx += 1
                total += 1
                if t0 >= m_start:
                    record(t1 - t0)
                    if len(sizes) < SIZE_SAMPLES:
                        sizes.append(response.ByteSize())
                if m_start <= t1 < m_end:
                    done += 1
            counters["done_in_window"] += done
            counters["total"] += total

        delay = (t_start - clock()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        cpu0 = time.process_time()
        wall0 = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(tasks)))
        cpu = time.process_time() - cpu0
        wall = time.perf_counter() - wall0
        return {"latencies_ns": latencies, "sizes": sizes, "cpu_util": cpu / wall, **counters}

    async def warm() -> None:
        for server in SERVERS:
            for method in METHODS:
                for req in requests[method][:50]:
                    await getattr(stubs[server], method)(req)

    loop.run_until_complete(warm())
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            break
        _, kwargs = cmd
        conn.send(loop.run_until_complete(trial(**kwargs)))
    for c in channels.values():
        loop.run_until_complete(c.close(None))


# ------------------------------------------------------------------ coordinator


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return math.nan
    rank = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return float(sorted_values[rank])


@dataclass
class Cell:
    """Everything measured for one (server, method, concurrency) over all rounds."""

    latencies_ns: list[int] = field(default_factory=list)
    window_s: float = 0.0
    done: int = 0
    total: int = 0
    errors: int = 0
    server_cpu_s: float = 0.0
    client_cpu_util: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    rounds: list[dict[str, float]] = field(default_factory=list)
    handler_s: float = 0.0
    handler_calls: float = 0.0
    gc_count: list[int] = field(default_factory=lambda: [0, 0, 0])
    gc_total_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gc_max_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ns)
        return {
            "samples": len(lat),
            "p50_us": percentile(lat, 0.50) / 1e3,
            "p99_us": percentile(lat, 0.99) / 1e3,
            "p999_us": percentile(lat, 0.999) / 1e3,
            "mean_us": (sum(lat) / len(lat) / 1e3) if lat else math.nan,
            "throughput_rps": self.done / self.window_s if self.window_s else math.nan,
            "server_cpu_us_per_req": self.server_cpu_s / self.total * 1e6 if self.total else math.nan,
            "client_cpu_util": statistics.mean(self.client_cpu_util) if self.client_cpu_util else math.nan,
            "response_bytes_mean": statistics.mean(self.sizes) if self.sizes else math.nan,
            "errors": self.errors,
            "handler_us_mean": self.handler_s / self.handler_calls * 1e6 if self.handler_calls else None,
            "gc_collections_per_gen": self.gc_count,
            "gc_total_ms_per_gen": [x * 1e3 for x in self.gc_total_s],
            "gc_max_pause_ms_per_gen": [x * 1e3 for x in self.gc_max_s],
            "rounds": self.rounds,
        }


def _round_stats(latencies: list[int], done: int, window_s: float) -> dict[str, float]:
    lat = sorted(latencies)
    return {"p50_us": percentile(lat, 0.5) / 1e3, "p99_us": percentile(lat, 0.99) / 1e3,
            "throughput_rps": done / window_s}


def _split(concurrency: int, workers: int) -> list[int]:
    used = min(concurrency, workers)
    base, extra = divmod(concurrency, used)
    return [base + (1 if i < extra else 0) for i in range(used)]


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def main(argv: list[str] | None = None) -> int:  # noqa: C901
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small, short smoke run")
    parser.add_argument("--duration", type=float, help="measured seconds per trial (default 4, quick 1)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds before each trial (default 1, quick 0.3)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--customers", type=int, help="distinct customers (default 20000, quick 2000)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16, 64], help="comma-separated, default 1,16,64")
    parser.add_argument("--methods", type=lambda s: s.split(","), default=list(METHODS))
    parser.add_argument("--client-procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--pin", action="store_true",
                        help="pin servers to CPU 0 and clients to the other CPUs")
    parser.add_argument("--cache-bytes", type=int, default=2**30)
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "latency.json")
    parser.add_argument("--profile", type=Path, metavar="PSTATS",
                        help="run cProfile in the sidecar process during its trials and write pstats "
                             "here (inflates the sidecar's numbers: ratios from such a run are not valid)")
    args = parser.parse_args(argv)
    duration = args.duration or (1.0 if args.quick else 4.0)
    warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0)
    rounds = args.rounds or (2 if args.quick else 3)
    customers = args.customers or (2000 if args.quick else 20000)
    server_cpus = client_cpus = None
    if args.pin and (os.cpu_count() or 1) >= 2:
        server_cpus = [0]
        client_cpus = list(range(1, os.cpu_count() or 2))

    ctx = mp.get_context("spawn")
    t_begin = time.perf_counter()
    print(f"building reference responses; starting servers ({customers} customers)...", flush=True)
    responses = reference_responses()

    side_conn, side_child = ctx.Pipe()
    profile_path = str(args.profile.resolve()) if args.profile else None
    if args.profile:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
    side = ctx.Process(target=run_sidecar, daemon=True,
                       args=(side_child, customers, args.cache_bytes, server_cpus, profile_path))
    side.start()
    base_conn, base_child = ctx.Pipe()
    base = ctx.Process(target=run_baseline, args=(base_child, responses, server_cpus), daemon=True)
    base.start()
    if not side_conn.poll(600):
        raise SystemExit("sidecar did not start")
    side_info = side_conn.recv()
    base_info = base_conn.recv()
    ports = {SIDECAR: side_info["port"], BASELINE: base_info["port"]}
    pids = {SIDECAR: side_info["pid"], BASELINE: base_info["pid"]}
    print(f"sidecar ready: port {ports[SIDECAR]}, {side_info['entries']} cached customers, "
          f"{side_info['bytes_used'] / 2**20:.1f} MiB charged, warmed in {side_info['warm_seconds']:.1f}s; "
          f"baseline port {ports[BASELINE]}", flush=True)

    grpc_warm_s = warm_over_grpc(ports[SIDECAR], customers, args.methods)
    print(f"one gRPC read per customer per method issued in {grpc_warm_s:.1f}s", flush=True)

    clients: list[tuple[Any, Connection]] = []
    for w in range(args.client_procs):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=run_client, args=(child, ports, customers, w, client_cpus), daemon=True)
        proc.start()
        clients.append((proc, parent))
    for _, conn in clients:
        assert conn.recv() == "ready"
    stats_before = _ask(side_conn, "stats")
    controls = {SIDECAR: side_conn, BASELINE: base_conn}

    cells: dict[tuple[str, str, int], Cell] = {}
    trial_no = 0
    n_trials = rounds * len(args.methods) * len(args.concurrency) * 2
    for rnd in range(rounds):
        for cell_no, (method, conc) in enumerate(
            (m, c) for m in args.methods for c in args.concurrency
        ):
            # Alternate who goes first between neighbouring cells and, for the
            # same cell, between rounds (ABBA), so in-pair drift cancels too.
            order = SERVERS if (rnd + cell_no) % 2 == 0 else SERVERS[::-1]
            for server in order:
                trial_no += 1
                cell = cells.setdefault((server, method, conc), Cell())
                profiling = args.profile is not None and server == SIDECAR
                if profiling:
                    _ask(side_conn, "profile_on")
                res = _run_trial(clients, server, method, conc, warmup, duration, pids[server], rnd,
                                 controls[server])
                if profiling:
                    _ask(side_conn, "profile_off")
                cell.latencies_ns.extend(res["latencies_ns"])
                cell.window_s += duration
                cell.done += res["done"]
                cell.total += res["total"]
                cell.errors += res["errors"]
                cell.server_cpu_s += res["server_cpu_s"]
                cell.client_cpu_util.append(res["client_cpu_util"])
                cell.sizes.extend(res["sizes"])
                cell.handler_s += res["handler_s"]
                cell.handler_calls += res["handler_calls"]
                for gen in range(3):
                    cell.gc_count[gen] += res["gc_count"][gen]
                    cell.gc_total_s[gen] += res["gc_total_s"][gen]
                    cell.gc_max_s[gen] = max(cell.gc_max_s[gen], res["gc_max_s"][gen])
                cell.rounds.append(_round_stats(res["latencies_ns"], res["done"], duration))
                last = cell.rounds[-1]
                print(f"[{trial_no:3d}/{n_trials}] round {rnd} {method:24s} c={conc:<3d} {server:8s} "
                      f"p50={last['p50_us']:8.1f}us p99={last['p99_us']:8.1f}us "
                      f"{last['throughput_rps']:8.0f} rps", flush=True)

    stats_after = _ask(side_conn, "stats")
    profile_text = _ask(side_conn, "profile_dump") if args.profile else None
    for _, conn in clients:
        conn.send(("stop", None))
    for proc, _ in clients:  # channels closed before the servers go away: no GOAWAY noise
        proc.join(10)
    for conn in (side_conn, base_conn):
        conn.send("stop")
    side.join(15)
    base.join(15)

    report = _report(args, cells, customers, duration, warmup, rounds, side_info, stats_before,
                     stats_after, time.perf_counter() - t_begin, responses)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, allow_nan=True))
    print()
    print(render_markdown(report))
    print(f"\nJSON written to {args.out}")
    if profile_text:
        print(f"\ncProfile of the sidecar process during its trials (pstats: {args.profile}); "
              "the ratios above are inflated by the profiler and not valid:\n")
        print(profile_text)
    return 0


def _ask(conn: Connection, cmd: str) -> Any:
    conn.send(cmd)
    return conn.recv()


def _run_trial(clients: list[tuple[Any, Connection]], server: str, method: str, conc: int,
               warmup: float, duration: float, server_pid: int, rnd: int,
               control: Connection) -> dict[str, Any]:
    split = _split(conc, len(clients))
    gc0 = _ask(control, "stats")
    t_start = time.perf_counter_ns() + 200_000_000
    cpu0 = cpu_seconds(server_pid)
    for w, tasks in enumerate(split):
        kwargs = {"server": server, "method": method, "tasks": tasks, "t_start": t_start,
                  "warmup_ns": int(warmup * 1e9), "duration_ns": int(duration * 1e9),
                  "offset": 977 * rnd}
        clients[w][1].send(("run", kwargs))
    parts = [clients[w][1].recv() for w in range(len(split))]
    server_cpu = cpu_seconds(server_pid) - cpu0
    gc1 = _ask(control, "stats")
    return {
        "gc_count": [b - a for a, b in zip(gc0["gc_count"], gc1["gc_count"], strict=True)],
        "gc_total_s": [b - a for a, b in zip(gc0["gc_total_s"], gc1["gc_total_s"], strict=True)],
        "gc_max_s": gc1["gc_max_s"],
        "handler_s": (gc1["handler"][method][0] - gc0["handler"][method][0]) if "handler" in gc1 else 0.0,
        "handler_calls": (gc1["handler"][method][1] - gc0["handler"][method][1]) if "handler" in gc1 else 0.0,
        "latencies_ns": [x for p in parts for x in p["latencies_ns"]],
        "sizes": [x for p in parts for x in p["sizes"]],
        "done": sum(p["done_in_window"] for p in parts),
        "total": sum(p["total"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "server_cpu_s": server_cpu,
        "client_cpu_util": sum(p["cpu_util"] for p in parts),
    }


def _report(args: argparse.Namespace, cells: dict[tuple[str, str, int], Cell], customers: int,
            duration: float, warmup: float, rounds: int, side_info: dict[str, Any],
            before: dict[str, Any], after: dict[str, Any], elapsed: float,
            responses: dict[str, dict[str, bytes]]) -> dict[str, Any]:
    rows = []
    for method in args.methods:
        for conc in args.concurrency:
            s = cells[(SIDECAR, method, conc)].summary()
            b = cells[(BASELINE, method, conc)].summary()
            ratios = {
                "p50": _ratio(s["p50_us"], b["p50_us"]),
                "p99": _ratio(s["p99_us"], b["p99_us"]),
                "p999": _ratio(s["p999_us"], b["p999_us"]),
                "throughput": _ratio(s["throughput_rps"], b["throughput_rps"]),
                "server_cpu_per_req": _ratio(s["server_cpu_us_per_req"], b["server_cpu_us_per_req"]),
            }
            per_round = [
                {k: _ratio(sr[k], br[k]) for k in ("p50_us", "p99_us", "throughput_rps")}
                for sr, br in zip(s["rounds"], b["rounds"], strict=True)
            ]
            rows.append({
                "method": method,
                "concurrency": conc,
                "sidecar": s,
                "baseline": b,
                "ratio": ratios,
                "ratio_per_round": per_round,
                "meets_target": {
                    "p50": ratios["p50"] <= TARGET_LATENCY_RATIO,
                    "p99": ratios["p99"] <= TARGET_LATENCY_RATIO,
                    "throughput": ratios["throughput"] >= TARGET_THROUGHPUT_RATIO,
                },
            })
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "customers": customers, "entitlements_per_customer": fx.ENTITLEMENTS_PER_CUSTOMER,
            "duration_s": duration, "warmup_s": warmup, "rounds": rounds,
            "concurrency": args.concurrency, "client_procs": args.client_procs, "pin": args.pin,
            "profiled": args.profile is not None,
        },
        "targets": {"latency_ratio_max": TARGET_LATENCY_RATIO,
                    "throughput_ratio_min": TARGET_THROUGHPUT_RATIO},
        "reference_response_bytes": {m: {k: len(v) for k, v in r.items()} for m, r in responses.items()},
        "sidecar_cache": {
            "entries": side_info["entries"], "bytes_used": side_info["bytes_used"],
            "source_fetches_during_warm": side_info["fetches"],
            "gc_tracked_objects": side_info["gc_tracked_at_start"],
            "hits_during_run": after["hits"] - before["hits"],
            "misses_during_run": after["misses"] - before["misses"],
            "evictions_during_run": after["evictions"] - before["evictions"],
        },
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "loadavg_at_end": os.getloadavg()},
        "elapsed_s": elapsed,
        "results": rows,
    }


def _fmt(x: float, digits: int = 0) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def render_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    cache = report["sidecar_cache"]
    lines = [
        f"Command: `{report['command']}`",
        f"{cfg['customers']} customers x {cfg['entitlements_per_customer']} entitlements, "
        f"{cfg['rounds']} interleaved rounds x {cfg['duration_s']}s per trial "
        f"(+{cfg['warmup_s']}s warm-up), {cfg['client_procs']} client processes, pin={cfg['pin']}. "
        f"Hot cache during the run: {cache['hits_during_run']} hits, {cache['misses_during_run']} misses.",
        "",
        "| method | conc | sidecar p50 / p99 / p999 (us) | baseline p50 / p99 / p999 (us) "
        "| sidecar rps | baseline rps | p50 x | p99 x | rps x | srv CPU us/req (s / b) | resp B (s / b) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        s, b, r, ok = row["sidecar"], row["baseline"], row["ratio"], row["meets_target"]

        def mark(key: str, value: float, ok: dict[str, bool] = ok) -> str:
            return f"{value:.2f}" + ("" if ok[key] else " **miss**")

        lines.append(
            f"| {row['method']} | {row['concurrency']} "
            f"| {_fmt(s['p50_us'])} / {_fmt(s['p99_us'])} / {_fmt(s['p999_us'])} "
            f"| {_fmt(b['p50_us'])} / {_fmt(b['p99_us'])} / {_fmt(b['p999_us'])} "
            f"| {_fmt(s['throughput_rps'])} | {_fmt(b['throughput_rps'])} "
            f"| {mark('p50', r['p50'])} | {mark('p99', r['p99'])} | {mark('throughput', r['throughput'])} "
            f"| {_fmt(s['server_cpu_us_per_req'])} / {_fmt(b['server_cpu_us_per_req'])} "
            f"| {_fmt(s['response_bytes_mean'], 1)} / {_fmt(b['response_bytes_mean'], 1)} |"
        )
    lines += [
        "",
        "Inside the servers during the trials: the sidecar's own handler time (its "
        "`sidecar_grpc_request_duration_seconds` histogram), the extra server CPU per call over the "
        "baseline, and garbage-collector runs (sidecar heap: "
        f"{cache['gc_tracked_objects']:,} GC-tracked objects):",
        "",
        "| method | conc | sidecar handler mean (us) | server CPU delta (us/req) "
        "| sidecar gen2 runs / total ms / max ms | sidecar gen0+1 runs "
        "| baseline gen2 runs / total ms / max ms | baseline gen0+1 runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        s, b = row["sidecar"], row["baseline"]

        def gc_cells(x: dict[str, Any]) -> str:
            n, tot, mx = x["gc_collections_per_gen"], x["gc_total_ms_per_gen"], x["gc_max_pause_ms_per_gen"]
            return f"{n[2]} / {tot[2]:.0f} / {mx[2]:.0f} | {n[0] + n[1]:,}"

        handler = s["handler_us_mean"]
        delta = s["server_cpu_us_per_req"] - b["server_cpu_us_per_req"]
        lines.append(
            f"| {row['method']} | {row['concurrency']} | {_fmt(handler, 1) if handler else 'n/a'} "
            f"| {_fmt(delta)} | {gc_cells(s)} | {gc_cells(b)} |"
        )
    lines.append("")
    lines.append(
        f"Targets: p50 and p99 <= {report['targets']['latency_ratio_max']}x baseline, "
        f"throughput >= {report['targets']['throughput_ratio_min']}x baseline. "
        "Ratios are sidecar/baseline over all rounds pooled; per-round ratios are in the JSON."
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
