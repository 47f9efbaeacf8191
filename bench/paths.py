"""The sidecar's non-hot paths against their floors, measured from the outside.

Three paths, each through a real sidecar process (``python -m sidecar.main``, configured by
its environment like a deployment) and beside a floor measured in the same run:

1. **redis-tier**: a sidecar with the Redis tier (``REDIS_ENVIRONMENT_PREFIX``) and a hot
   cache too small to hold anything (``CACHE_MAX_SIZE_BYTES=1``), over a private
   redis-server that already holds every customer (written with
   ``RedisStore.apply_snapshot``): every ``GetEntitlementsStateV2`` and ``GetEntitlement``
   is one ``HGETALL``, a decode and an evaluation. Its upstream is a dead port, so a read
   Redis could not answer would show up as a fallback. Floors: the no-op gRPC server of
   ``latency.py`` (pre-serialized answers of the same size) and raw redis-py asyncio
   ``HGETALL`` of the same keys. Target: sidecar p50 <= no-op p50 + 2 x HGETALL p50.
2. **upstream-miss**: a sidecar without Redis, hot cache too small to hold anything, over
   an upstream process (``python -m upstream.main``, demo catalog, customers on the pro
   plan with usage): every ``GetEntitlementsStateV2`` is an HTTP fetch of
   ``GET /v1/customers/{id}/entitlements``. Floor: that same GET sent directly to upstream.
   Target: p50 <= 1.3 x direct, throughput >= 0.8 x direct.
3. **report-usage**: ``ReportUsage`` through a sidecar with default settings (no buffering,
   the push channel on, its hot cache holding every customer) against ``POST /v1/usage`` of
   the body the sidecar sends (one DELTA report with a fresh idempotency key). Target:
   throughput >= 0.9 x direct. The same sidecar's hot ``GetEntitlementsStateV2`` is measured
   beside them, for its server CPU per call. Upstream pushes every report's usage change to
   the subscribed sidecar in both arms (the sidecar's CPU during the direct arm is that
   share), and fsyncs every report twice (the commit, then the relay marking its change event
   published), so this path is bound by the disk: see ``--upstream-db-dir``.

Every trial: all client tasks start at one instant, run ``--warmup`` seconds unmeasured,
then ``--duration`` seconds measured (latency of calls started in the window, throughput of
calls completed in it). Arms of one cell are never loaded at the same time; their order
rotates between cells and rounds, and percentiles pool all rounds. Server CPU per call is
each process's utime+stime (``/proc/<pid>/stat``) over the trial divided by calls served.
Clients are ``--client-procs`` spawned processes on uvloop (grpc.aio, redis-py asyncio,
aiohttp); every arm of a path uses the same seeded customer sequence.

    python bench/paths.py --quick        # ~1.5 minutes
    python bench/paths.py                # ~5 minutes
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# bench/upstream.py would shadow the upstream package: the repository root goes first instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
sys.path.insert(0, str(ROOT))

from bench import _fixture as fx  # noqa: E402
from bench.latency import _ratio, _split, cpu_seconds, percentile  # noqa: E402
from tests.redis_server import RedisServer, free_port  # noqa: E402

KEY = "bench-key"
PREFIX = "bench"
USAGE_FEATURE = "api-calls"
PLAN = "pro"
REQUESTS_PER_WORKER = 8192
SIZE_SAMPLES = 64
MAX_MESSAGE_BYTES = 4 * 2**20
NOOP_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]

# Paths (rows of the table).
REDIS_TIER = "redis-tier"
UPSTREAM_MISS = "upstream-miss"
REPORT_USAGE = "report-usage"
PATHS = (REDIS_TIER, UPSTREAM_MISS, REPORT_USAGE)

# What a client sends.
OP_STATE = "GetEntitlementsStateV2"
OP_ENTITLEMENT = "GetEntitlement"
OP_REPORT = "ReportUsage"
OP_HGETALL = "HGETALL"
OP_GET = "GET entitlements"
OP_POST = "POST usage"

TARGET_MISS_P50 = 1.3
TARGET_MISS_RPS = 0.8
TARGET_USAGE_RPS = 0.9
HGETALL_BUDGET = 2.0

# Sidecar counters read from /metrics around each of its trials (summed over labels).
WATCHED = (
    "sidecar_redis_hits_total",
    "sidecar_redis_misses_total",
    "sidecar_source_fetch_duration_seconds_count",
    "sidecar_cache_hits_total",
    "sidecar_cache_misses_total",
    "sidecar_fallbacks_total",
    "sidecar_network_request_errors_total",
    "sidecar_grpc_request_duration_seconds_sum",
    "sidecar_grpc_request_duration_seconds_count",
)


# ------------------------------------------------------------------------- helpers


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def scrape(http_port: int) -> dict[str, float]:
    """The watched sidecar counters, each summed over its labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = dict.fromkeys(WATCHED, 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in out:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def redis_commands(port: int) -> dict[str, float]:
    """Calls per command the server has answered (``INFO commandstats``), INFO itself left out."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {f"redis_cmd_{name.removeprefix('cmdstat_')}": float(value["calls"])
            for name, value in stats.items() if name != "cmdstat_info"}


def usage_body(customer_id: str) -> bytes:
    """What the sidecar's http_upstream source posts for one ReportUsage without a key."""
    report = {
        "customerId": customer_id,
        "featureId": USAGE_FEATURE,
        "value": 1.0,
        "updateBehavior": "DELTA",
        "idempotencyKey": f"sidecar-{uuid.uuid4()}",
    }
    return json.dumps({"usages": [report]}, separators=(",", ":")).encode()


# ----------------------------------------------------------------------- processes


class Service:
    """A service as its own process (``python -m module``), stderr kept in a log file."""

    def __init__(self, name: str, module: str, env: dict[str, str], work: Path,
                 profile: Path | None = None, drop: frozenset[str] = frozenset()) -> None:
        self.name = name
        self.log = work / f"{name}.log"
        command = [sys.executable]
        if profile is not None:
            command += ["-m", "cProfile", "-o", str(profile)]
        command += ["-m", module]
        inherited = {k: v for k, v in os.environ.items() if k not in drop}
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                command, cwd=ROOT, env={**inherited, "LOG_FORMAT": "json", **env},
                stdout=subprocess.DEVNULL, stderr=sink,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while http_status(url) != 200:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} not ready after {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.05)

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def complaints(self) -> int:
        """Lines the process logged at warning or above (LOG_LEVEL=warn: every line)."""
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if line.strip())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_sidecar(name: str, work: Path, api_url: str, profile: Path | None,
                  **env: str) -> tuple[Service, int, int]:
    """A sidecar with its default settings but for ``env``: none of its settings is inherited
    from this process's environment."""
    from sidecar.settings import SPECS

    grpc_port, http_port = free_port(), free_port()
    service = Service(name, "sidecar.main", {
        "PORT": str(grpc_port),
        "HTTP_PORT": str(http_port),
        "HTTP_BIND_ADDRESS": "127.0.0.1",
        "SERVER_API_KEY": KEY,
        "API_URL": api_url,
        "SPOOL_DIR": str(work / f"spool-{name}"),
        "LOG_LEVEL": "warn",
        **env,
    }, work, profile, drop=frozenset(spec.env for spec in SPECS))
    service.wait_ready(f"http://127.0.0.1:{http_port}/readyz")
    return service, grpc_port, http_port


def start_upstream(work: Path, db_dir: Path) -> tuple[Service, str]:
    port = free_port()
    service = Service("upstream", "upstream.main", {
        "SERVER_API_KEY": KEY,
        "UPSTREAM_PORT": str(port),
        "UPSTREAM_DATABASE": str(db_dir / f"bench-paths-{os.getpid()}.db"),
        "LOG_LEVEL": "warn",
    }, work)
    url = f"http://127.0.0.1:{port}"
    service.wait_ready(f"{url}/livez")
    return service, url


def upstream_customer(i: int) -> str:
    return f"bench-{i:06d}"


async def provision(url: str, n: int) -> None:
    """n customers on the pro plan, each with usage on the reported feature."""
    import aiohttp

    headers = {"X-API-KEY": KEY}
    async with aiohttp.ClientSession(headers=headers) as http:
        todo = iter(range(n))

        async def one() -> None:
            for i in todo:
                body = {"id": upstream_customer(i), "subscription": {"planId": PLAN}}
                async with http.post(f"{url}/v1/customers", json=body) as resp:
                    if resp.status != 201:
                        raise SystemExit(f"provisioning failed: {resp.status} {await resp.text()}")

        await asyncio.gather(*(one() for _ in range(8)))
        for start in range(0, n, 100):
            usages = [{"customerId": upstream_customer(i), "featureId": USAGE_FEATURE,
                       "value": 1 + i % 50} for i in range(start, min(n, start + 100))]
            async with http.post(f"{url}/v1/usage", json={"usages": usages}) as resp:
                if resp.status != 200:
                    raise SystemExit(f"usage failed: {resp.status} {await resp.text()}")


async def fill_redis(port: int, n: int) -> None:
    """Every fixture customer's state and usage, as the persistent cache would write it."""
    import redis.asyncio as aioredis

    from entitlements.redis.store import RedisStore

    client = aioredis.Redis(host="127.0.0.1", port=port)
    store = RedisStore(client, prefix=PREFIX, ttl_seconds=-1, publish=False)
    try:
        for start in range(0, n, 64):
            await asyncio.gather(*(store.apply_snapshot(fx.build_snapshot(i))
                                   for i in range(start, min(n, start + 64))))
    finally:
        await client.aclose()


def reference_responses() -> dict[str, dict[str, bytes]]:
    """The real sidecar's answers for fixture customer 0, evaluated in-process once.

    Keyed by method then feature id ("" for the list call); the no-op server replays them,
    so its answers have the size of the sidecar's for every fixture customer.
    """
    from sidecar.api.servicer import SidecarServicer
    from sidecar.cache.hot_cache import HotCache
    from sidecar.observability import Metrics
    from sidecar.pb import sidecar_pb2 as pb
    from sidecar.service.entitlements import EntitlementService
    from sidecar.source.base import Resync
    from sidecar.source.memory import InMemorySource

    async def run() -> dict[str, dict[str, bytes]]:
        source = InMemorySource()
        source.put(fx.build_snapshot(0))
        metrics = Metrics()
        service = EntitlementService(source=source, cache=HotCache(2**30), metrics=metrics)
        service.apply(Resync())
        servicer = SidecarServicer(service, metrics, {})
        cid = fx.customer_id(0)
        requests: list[tuple[str, str, Any]] = [
            (OP_STATE, "", pb.GetEntitlementsStateV2Request(customer_id=cid))]
        requests += [(OP_ENTITLEMENT, f, pb.GetEntitlementRequest(customer_id=cid, feature_id=f))
                     for f in fx.ALL_FEATURE_IDS]
        out: dict[str, dict[str, bytes]] = {OP_STATE: {}, OP_ENTITLEMENT: {}}
        for method, key, request in requests:
            response = await getattr(servicer, method)(request, None)
            out[method][key] = response if isinstance(response, bytes) else response.SerializeToString()
        return out

    return asyncio.run(run())


def run_noop(conn: Connection, responses: dict[str, dict[str, bytes]],  # noqa: C901 - one server's life
             redis_port: int | None = None, upstream_url: str | None = None) -> None:
    """The no-op server of latency.py: the same service, pre-serialized answers, no work.

    With ``redis_port`` or ``upstream_url`` it is a *relay* floor instead: each call first awaits
    the request the sidecar's path makes (one ``HGETALL`` of the customer's hash through a
    redis-py asyncio client pooled like the sidecar's; the ``GET`` of the customer's state or
    the ``POST`` of one usage report through an aiohttp session, as the sidecar's upstream
    source sends them), throws the reply away, and answers with its pre-serialized bytes. No
    grpc.aio server that makes that request per call can cost less.
    """
    import aiohttp
    import grpc
    import redis.asyncio as aioredis
    import uvloop

    from entitlements.logs import configure_logging
    from entitlements.redis.keys import state_key
    from sidecar.api.grpc_server import sidecar_handler
    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    configure_logging("warn", "json", service="bench-paths")
    entitlement = responses[OP_ENTITLEMENT]
    state = responses[OP_STATE][""]
    client: Any = None
    session: Any = None

    async def read(customer_id: str) -> None:
        if client is not None:
            await client.hgetall(state_key(PREFIX, customer_id, None))
        elif session is not None:
            async with session.get(f"{upstream_url}/v1/customers/{customer_id}/entitlements") as resp:
                await resp.read()

    class NoopServicer(pb_grpc.SidecarServiceServicer):
        async def GetEntitlement(self, request: Any, context: Any) -> Any:  # noqa: N802
            await read(request.customer_id)
            return entitlement[request.feature_id]

        async def GetEntitlementsStateV2(self, request: Any, context: Any) -> Any:  # noqa: N802
            await read(request.customer_id)
            return state

        async def ReportUsage(self, request: Any, context: Any) -> Any:  # noqa: N802
            if session is not None:
                async with session.post(f"{upstream_url}/v1/usage", data=usage_body(request.customer_id),
                                        headers={"Content-Type": "application/json"}) as resp:
                    await resp.read()
            return b""

    async def main() -> None:
        nonlocal client, session
        if redis_port is not None:
            pool = aioredis.BlockingConnectionPool(host="127.0.0.1", port=redis_port,
                                                   max_connections=64)
            client = aioredis.Redis.from_pool(pool)
        if upstream_url is not None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100),
                                            headers={"X-API-KEY": KEY, "Accept": "application/json"})
        server = grpc.aio.server(options=NOOP_OPTIONS)
        server.add_generic_rpc_handlers((sidecar_handler(NoopServicer()),))  # type: ignore[abstract]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        conn.send({"port": port, "pid": os.getpid()})

        def wait_stop() -> None:
            with suppress(EOFError):
                conn.recv()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_stop, daemon=True).start()
        await stop.wait()
        await server.stop(0)
        if client is not None:
            await client.aclose()
        if session is not None:
            await session.close()

    uvloop.run(main())


# -------------------------------------------------------------------------- client


@dataclass(frozen=True)
class Target:
    """Something a client connects to: ``kind`` is grpc, redis or http."""

    kind: str
    port: int = 0
    url: str = ""


def _grpc_requests(op: str, ids: list[str]) -> list[Any]:
    from sidecar.pb import sidecar_pb2 as pb

    if op == OP_STATE:
        return [pb.GetEntitlementsStateV2Request(customer_id=c) for c in ids]
    if op == OP_ENTITLEMENT:
        # Cycles through all 20 features: 5 boolean, 5 numeric, 6 metered, 4 enum.
        feats = fx.ALL_FEATURE_IDS
        return [pb.GetEntitlementRequest(customer_id=c, feature_id=feats[k % len(feats)])
                for k, c in enumerate(ids)]
    if op == OP_REPORT:
        return [pb.ReportUsageRequest(customer_id=c, feature_id=USAGE_FEATURE, value=1.0)
                for c in ids]
    raise ValueError(op)


Call = Callable[[int], Awaitable[Any]]


def _indexed(method: Callable[[Any], Awaitable[Any]], args: list[Any], i: int) -> Awaitable[Any]:
    return method(args[i % len(args)])


def _message_size(response: Any) -> int:
    return int(response.ByteSize())


def _hash_size(response: dict[bytes, bytes]) -> int:
    return sum(len(k) + len(v) for k, v in response.items())


class Clients:
    """One client process's connections and the calls it can make, by (target, op)."""

    def __init__(self, targets: dict[str, Target], ops: dict[str, list[str]], ids: list[str]) -> None:
        import aiohttp
        import grpc
        import redis.asyncio as aioredis

        from entitlements.redis.keys import state_key
        from sidecar.pb import sidecar_pb2_grpc as pb_grpc

        self.closers: list[Callable[[], Awaitable[Any]]] = []
        self.calls: dict[tuple[str, str], Call] = {}
        self.sizes: dict[tuple[str, str], Callable[[Any], int]] = {}
        for name, target in targets.items():
            for op in ops.get(name, []):
                key = (name, op)
                if target.kind == "grpc":
                    channel = grpc.aio.insecure_channel(
                        f"127.0.0.1:{target.port}",
                        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
                    self.closers.append(partial(channel.close, None))
                    method = getattr(pb_grpc.SidecarServiceStub(channel), op)
                    self.calls[key] = partial(_indexed, method, _grpc_requests(op, ids))
                    self.sizes[key] = _message_size
                elif target.kind == "redis":
                    client = aioredis.Redis(host="127.0.0.1", port=target.port)
                    self.closers.append(client.aclose)
                    keys = [state_key(PREFIX, c, None) for c in ids]
                    self.calls[key] = partial(_indexed, client.hgetall, keys)
                    self.sizes[key] = _hash_size
                else:
                    session = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=100),
                        headers={"X-API-KEY": KEY, "Accept": "application/json"})
                    self.closers.append(session.close)
                    self.calls[key] = self._http_call(session, target.url, op, ids)
                    self.sizes[key] = len

    @staticmethod
    def _http_call(session: Any, base: str, op: str, ids: list[str]) -> Call:
        n = len(ids)
        if op == OP_GET:
            urls = [f"{base}/v1/customers/{c}/entitlements" for c in ids]

            async def get(i: int) -> bytes:
                async with session.get(urls[i % n]) as resp:
                    body: bytes = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"GET {resp.status}")
                    return body

            return get
        if op == OP_POST:
            url = f"{base}/v1/usage"
            headers = {"Content-Type": "application/json"}

            async def post(i: int) -> bytes:
                data = usage_body(ids[i % n])
                async with session.post(url, data=data, headers=headers) as resp:
                    body: bytes = await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"POST {resp.status}")
                    return body

            return post
        raise ValueError(op)

    async def close(self) -> None:
        for close in self.closers:
            await close()


async def _trial(clients: Clients, target: str, op: str, tasks: int, t_start: int,
                 warmup_ns: int, duration_ns: int, offset: int, n_reqs: int) -> dict[str, Any]:
    call = clients.calls[(target, op)]
    size_of = clients.sizes[(target, op)]
    m_start = t_start + warmup_ns
    m_end = m_start + duration_ns
    latencies: list[int] = []
    sizes: list[int] = []
    counters = {"done_in_window": 0, "total": 0, "errors": 0}
    clock = time.perf_counter_ns
    error_kinds: dict[str, int] = {}

    async def one(k: int) -> None:
        idx = offset + k * (n_reqs // max(tasks, 1))
        record = latencies.append
        done = total = 0
        while True:
            t0 = clock()
            if t0 >= m_end:
                break
            try:
                response = await call(idx)
            except Exception as exc:  # counted; the trial goes on
                counters["errors"] += 1
                kind = type(exc).__name__
                error_kinds[kind] = error_kinds.get(kind, 0) + 1
                idx += 1
                await asyncio.sleep(0.001)
                continue
            t1 = clock()
            idx += 1
            total += 1
            if t0 >= m_start:
                record(t1 - t0)
                if len(sizes) < SIZE_SAMPLES:
                    sizes.append(size_of(response))
            if m_start <= t1 < m_end:
                done += 1
        counters["done_in_window"] += done
        counters["total"] += total

    delay = (t_start - clock()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(tasks)))
    cpu_util = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    return {"latencies_ns": latencies, "sizes": sizes, "cpu_util": cpu_util,
            "error_kinds": error_kinds, **counters}


def run_client(conn: Connection, targets: dict[str, Target], ops: dict[str, list[str]],
               customers: list[str], worker: int) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    rng = random.Random(1000 + worker)
    # One seeded customer sequence, the same for every arm.
    ids = [customers[rng.randrange(len(customers))] for _ in range(REQUESTS_PER_WORKER)]

    async def connect() -> Clients:
        # Built on the running loop (aiohttp's connector needs one), then warmed.
        clients = Clients(targets, ops, ids)
        for call in clients.calls.values():
            for i in range(20):
                await call(i)
        return clients

    clients = loop.run_until_complete(connect())
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            break
        conn.send(loop.run_until_complete(_trial(clients, n_reqs=len(ids), **cmd[1])))
    loop.run_until_complete(clients.close())


# --------------------------------------------------------------------- coordinator


@dataclass(frozen=True)
class Arm:
    name: str
    target: str
    op: str
    #: The process whose CPU per call is this arm's "server CPU".
    server: str


@dataclass(frozen=True)
class CellSpec:
    path: str
    method: str
    conc: int
    sidecar: Arm
    floors: tuple[Arm, ...]
    #: Measured in the same rotation, reported, not compared.
    extras: tuple[Arm, ...] = ()

    @property
    def arms(self) -> tuple[Arm, ...]:
        return (self.sidecar, *self.floors, *self.extras)


@dataclass
class Tally:
    """Everything measured for one arm of one cell over all rounds."""

    latencies_ns: list[int] = field(default_factory=list)
    window_s: float = 0.0
    done: int = 0
    total: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    client_cpu_util: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    rounds: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def add(self, res: dict[str, Any], duration: float) -> None:
        lat = res["latencies_ns"]
        self.latencies_ns.extend(lat)
        self.window_s += duration
        self.done += res["done"]
        self.total += res["total"]
        self.errors += res["errors"]
        for kind, count in res["error_kinds"].items():
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + count
        for proc, seconds in res["cpu_s"].items():
            self.cpu_s[proc] = self.cpu_s.get(proc, 0.0) + seconds
        for name, value in res["metrics"].items():
            self.metrics[name] = self.metrics.get(name, 0.0) + value
        self.client_cpu_util.append(res["client_cpu_util"])
        self.sizes.extend(res["sizes"])
        ordered = sorted(lat)
        self.rounds.append({"p50_us": percentile(ordered, 0.5) / 1e3,
                            "p99_us": percentile(ordered, 0.99) / 1e3,
                            "throughput_rps": res["done"] / duration})

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ns)
        per_call = {p: s / self.total * 1e6 if self.total else math.nan for p, s in self.cpu_s.items()}
        return {
            "samples": len(lat),
            "p50_us": percentile(lat, 0.50) / 1e3,
            "p99_us": percentile(lat, 0.99) / 1e3,
            "p999_us": percentile(lat, 0.999) / 1e3,
            "mean_us": (sum(lat) / len(lat) / 1e3) if lat else math.nan,
            "throughput_rps": self.done / self.window_s if self.window_s else math.nan,
            "calls": self.total,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "cpu_us_per_call": per_call,
            "client_cpu_util": statistics.mean(self.client_cpu_util) if self.client_cpu_util else math.nan,
            "response_bytes_mean": statistics.mean(self.sizes) if self.sizes else math.nan,
            "sidecar_metrics": self.metrics,
            "rounds": self.rounds,
        }


@dataclass
class Bench:
    """What a path's trials need: client processes, the measured pids, the sidecar's port."""

    clients: list[tuple[Any, Connection]]
    pids: dict[str, int]
    sidecar_http_port: int
    warmup: float
    duration: float
    #: When set, the Redis commands each sidecar trial caused are counted too.
    redis_port: int | None = None

    def counters(self) -> dict[str, float]:
        out = scrape(self.sidecar_http_port)
        if self.redis_port is not None:
            out.update(redis_commands(self.redis_port))
        return out

    def trial(self, arm: Arm, conc: int, rnd: int) -> dict[str, Any]:
        split = _split(conc, len(self.clients))
        scraping = arm.target == "sidecar"
        before = self.counters() if scraping else {}
        t_start = time.perf_counter_ns() + 200_000_000
        cpu0 = {p: cpu_seconds(pid) for p, pid in self.pids.items()}
        for w, tasks in enumerate(split):
            kwargs = {"target": arm.target, "op": arm.op, "tasks": tasks, "t_start": t_start,
                      "warmup_ns": int(self.warmup * 1e9), "duration_ns": int(self.duration * 1e9),
                      "offset": 977 * rnd}
            self.clients[w][1].send(("run", kwargs))
        parts = [self.clients[w][1].recv() for w in range(len(split))]
        cpu = {p: cpu_seconds(pid) - cpu0[p] for p, pid in self.pids.items()}
        after = self.counters() if scraping else {}
        kinds: dict[str, int] = {}
        for p in parts:
            for kind, count in p["error_kinds"].items():
                kinds[kind] = kinds.get(kind, 0) + count
        return {
            "latencies_ns": [x for p in parts for x in p["latencies_ns"]],
            "sizes": [x for p in parts for x in p["sizes"]],
            "done": sum(p["done_in_window"] for p in parts),
            "total": sum(p["total"] for p in parts),
            "errors": sum(p["errors"] for p in parts),
            "error_kinds": kinds,
            "cpu_s": cpu,
            "client_cpu_util": sum(p["cpu_util"] for p in parts),
            "metrics": {k: after[k] - before.get(k, 0.0) for k in after},
        }


@contextmanager
def client_processes(ctx: Any, n: int, targets: dict[str, Target], ops: dict[str, list[str]],
                     customers: list[str]) -> Iterator[list[tuple[Any, Connection]]]:
    procs: list[tuple[Any, Connection]] = []
    try:
        for w in range(n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=run_client, args=(child, targets, ops, customers, w),
                               daemon=True)
            proc.start()
            procs.append((proc, parent))
        for proc, conn in procs:
            if not conn.poll(120):
                raise SystemExit(f"client process {proc.pid} did not get ready")
            try:
                conn.recv()
            except EOFError:
                raise SystemExit(f"client process {proc.pid} failed (traceback above)") from None
        yield procs
    finally:
        for proc, conn in procs:
            if proc.is_alive():
                with suppress(BrokenPipeError, OSError):
                    conn.send(("stop", None))
        for proc, _ in procs:
            proc.join(15)
            if proc.is_alive():
                proc.terminate()


def run_cells(bench: Bench, cells: list[CellSpec], rounds: int,
              tallies: dict[tuple[str, str, int, str], Tally], counter: list[int], n_trials: int) -> None:
    for rnd in range(rounds):
        for cell_no, cell in enumerate(cells):
            arms = cell.arms
            # Rotate who goes first between neighbouring cells and between rounds, so slow
            # drift lands on every arm.
            turn = (rnd + cell_no) % len(arms)
            for arm in arms[turn:] + arms[:turn]:
                counter[0] += 1
                res = bench.trial(arm, cell.conc, rnd)
                tally = tallies.setdefault((cell.path, cell.method, cell.conc, arm.name), Tally())
                tally.add(res, bench.duration)
                last = tally.rounds[-1]
                errors = f" errors={res['errors']}" if res["errors"] else ""
                print(f"[{counter[0]:3d}/{n_trials}] round {rnd} {cell.path:13s} {cell.method:22s} "
                      f"c={cell.conc:<3d} {arm.name:17s} p50={last['p50_us']:8.0f}us "
                      f"p99={last['p99_us']:8.0f}us {last['throughput_rps']:7.0f} rps{errors}",
                      flush=True)


def plan_cells(paths: list[str], concurrency: list[int]) -> list[CellSpec]:
    cells: list[CellSpec] = []
    for path in paths:
        for conc in concurrency:
            if path == REDIS_TIER:
                for method in (OP_STATE, OP_ENTITLEMENT):
                    cells.append(CellSpec(
                        path, method, conc, Arm("sidecar", "sidecar", method, "sidecar"),
                        (Arm("no-op", "noop", method, "noop"),
                         Arm("HGETALL", "redis", OP_HGETALL, "redis"),
                         Arm("no-op + HGETALL", "relay", method, "relay"))))
            elif path == UPSTREAM_MISS:
                cells.append(CellSpec(
                    path, OP_STATE, conc, Arm("sidecar", "sidecar", OP_STATE, "sidecar"),
                    (Arm("direct GET", "upstream", OP_GET, "upstream"),
                     Arm("no-op + GET", "relay", OP_STATE, "relay"))))
            else:
                cells.append(CellSpec(
                    path, OP_REPORT, conc, Arm("sidecar", "sidecar", OP_REPORT, "sidecar"),
                    (Arm("direct POST", "upstream", OP_POST, "upstream"),
                     Arm("no-op + POST", "relay", OP_REPORT, "relay")),
                    (Arm("sidecar hot read", "sidecar", OP_STATE, "sidecar"),)))
    return cells


def _ops(cells: list[CellSpec]) -> dict[str, list[str]]:
    ops: dict[str, list[str]] = {}
    for cell in cells:
        for arm in cell.arms:
            if arm.op not in ops.setdefault(arm.target, []):
                ops[arm.target].append(arm.op)
    return ops


def _check_sidecar(port: int, customer: str, entitlements: int | None) -> int:
    """One read through the sidecar before measuring: the answer must be the customer's state."""
    import grpc

    from sidecar.pb import sidecar_pb2 as pb
    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SidecarServiceStub(channel)
        answer = stub.GetEntitlementsStateV2(pb.GetEntitlementsStateV2Request(customer_id=customer))
    count = len(answer.entitlements)
    if answer.HasField("access_denied_reason") or (entitlements is not None and count != entitlements):
        raise SystemExit(f"unexpected answer for {customer}: {answer}")
    return count


def _warm_hot_cache(port: int, customers: list[str]) -> None:
    import grpc

    from sidecar.pb import sidecar_pb2 as pb
    from sidecar.pb import sidecar_pb2_grpc as pb_grpc

    async def run() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.SidecarServiceStub(channel)
            todo = iter(customers)

            async def worker() -> None:
                for cid in todo:
                    await stub.GetEntitlementsStateV2(pb.GetEntitlementsStateV2Request(customer_id=cid))

            await asyncio.gather(*(worker() for _ in range(16)))

    asyncio.run(run())


@dataclass
class Run:
    """One invocation's settings and shared state."""

    args: argparse.Namespace
    ctx: Any
    work: Path
    warmup: float
    duration: float
    rounds: int
    customers: int
    upstream_customers: int
    tallies: dict[tuple[str, str, int, str], Tally] = field(default_factory=dict)
    counter: list[int] = field(default_factory=lambda: [0])
    n_trials: int = 0
    setup: dict[str, Any] = field(default_factory=dict)
    upstream: tuple[Service, str] | None = None

    def profile(self, name: str) -> Path | None:
        if self.args.profile is None:
            return None
        path: Path = self.args.profile / f"{name}.pstats"
        return path

    def measure(self, cells: list[CellSpec], targets: dict[str, Target], customers: list[str],
                pids: dict[str, int], sidecar_http_port: int, redis_port: int | None = None) -> None:
        with client_processes(self.ctx, self.args.client_procs, targets, _ops(cells),
                              customers) as clients:
            bench = Bench(clients, pids, sidecar_http_port, self.warmup, self.duration, redis_port)
            run_cells(bench, cells, self.rounds, self.tallies, self.counter, self.n_trials)

    def redis_tier(self, cells: list[CellSpec]) -> None:
        started = time.perf_counter()
        with RedisServer() as redis:
            asyncio.run(fill_redis(redis.port, self.customers))
            filled = time.perf_counter() - started
            responses = reference_responses()
            noop_conn, child = self.ctx.Pipe()
            noop = self.ctx.Process(target=run_noop, args=(child, responses), daemon=True)
            noop.start()
            noop_info = noop_conn.recv()
            relay_conn, child = self.ctx.Pipe()
            relay = self.ctx.Process(target=run_noop, args=(child, responses, redis.port),
                                     daemon=True)
            relay.start()
            relay_info = relay_conn.recv()
            dead = f"http://127.0.0.1:{free_port()}"
            sidecar, grpc_port, http_port = start_sidecar(
                "sidecar-redis", self.work, dead, self.profile("sidecar-redis"),
                REDIS_ENVIRONMENT_PREFIX=PREFIX, REDIS_HOST="127.0.0.1",
                REDIS_PORT=str(redis.port), CACHE_MAX_SIZE_BYTES="1")
            try:
                _check_sidecar(grpc_port, fx.customer_id(0), fx.ENTITLEMENTS_PER_CUSTOMER)
                assert redis.process is not None
                self.setup[REDIS_TIER] = {
                    "customers": self.customers, "redis_fill_s": filled,
                    "reference_response_bytes": {m: {k: len(v) for k, v in r.items()}
                                                 for m, r in responses.items()},
                }
                print(f"{REDIS_TIER}: {self.customers} customers in Redis ({filled:.1f}s); "
                      f"sidecar on {grpc_port}, no-op on {noop_info['port']}", flush=True)
                targets = {"sidecar": Target("grpc", grpc_port), "noop": Target("grpc", noop_info["port"]),
                           "relay": Target("grpc", relay_info["port"]),
                           "redis": Target("redis", redis.port)}
                pids = {"sidecar": sidecar.pid, "noop": noop_info["pid"], "redis": redis.process.pid,
                        "relay": relay_info["pid"]}
                ids = [fx.customer_id(i) for i in range(self.customers)]
                self.measure(cells, targets, ids, pids, http_port, redis.port)
            finally:
                sidecar.stop()
                noop_conn.send("stop")
                relay_conn.send("stop")
                noop.join(10)
                relay.join(10)
                self.setup.setdefault(REDIS_TIER, {})["sidecar_log_lines"] = sidecar.complaints()

    def start_upstream(self) -> tuple[Service, str]:
        if self.upstream is None:
            started = time.perf_counter()
            service, url = start_upstream(self.work, self.args.upstream_db_dir or self.work)
            asyncio.run(provision(url, self.upstream_customers))
            took = time.perf_counter() - started
            print(f"upstream on {url}: {self.upstream_customers} customers on the {PLAN} plan "
                  f"provisioned in {took:.1f}s", flush=True)
            self.setup["upstream"] = {"customers": self.upstream_customers, "plan": PLAN,
                                      "provision_s": took}
            self.upstream = (service, url)
        return self.upstream

    def upstream_path(self, path: str, cells: list[CellSpec]) -> None:
        upstream, url = self.start_upstream()
        ids = [upstream_customer(i) for i in range(self.upstream_customers)]
        env = {"CACHE_MAX_SIZE_BYTES": "1"} if path == UPSTREAM_MISS else {}
        name = "sidecar-miss" if path == UPSTREAM_MISS else "sidecar-usage"
        relay_conn, child = self.ctx.Pipe()
        relay = self.ctx.Process(target=run_noop, args=(child, reference_responses(), None, url),
                                 daemon=True)
        relay.start()
        relay_info = relay_conn.recv()
        sidecar, grpc_port, http_port = start_sidecar(name, self.work, url, self.profile(name), **env)
        try:
            count = _check_sidecar(grpc_port, ids[0], None)
            if path == REPORT_USAGE:
                _warm_hot_cache(grpc_port, ids)
            print(f"{path}: sidecar on {grpc_port} ({count} entitlements per customer)", flush=True)
            self.setup[path] = {"entitlements_per_customer": count, "sidecar_env": env}
            targets = {"sidecar": Target("grpc", grpc_port), "upstream": Target("http", url=url),
                       "relay": Target("grpc", relay_info["port"])}
            pids = {"sidecar": sidecar.pid, "upstream": upstream.pid, "relay": relay_info["pid"]}
            self.measure(cells, targets, ids, pids, http_port)
        finally:
            relay_conn.send("stop")
            relay.join(10)
            sidecar.stop()
            self.setup.setdefault(path, {})["sidecar_log_lines"] = sidecar.complaints()


# -------------------------------------------------------------------------- report


def _cell_report(cell: CellSpec, tallies: dict[tuple[str, str, int, str], Tally]) -> dict[str, Any]:
    def summary(arm: Arm) -> dict[str, Any]:
        return tallies[(cell.path, cell.method, cell.conc, arm.name)].summary()

    s = summary(cell.sidecar)
    floors: dict[str, Any] = {}
    for arm in cell.floors:
        f = summary(arm)
        floors[arm.name] = {
            "summary": f,
            "server_process": arm.server,
            "ratio": {k: _ratio(s[k], f[k]) for k in ("p50_us", "p99_us", "p999_us", "throughput_rps")},
            "ratio_per_round": [
                {k: _ratio(sr[k], fr[k]) for k in ("p50_us", "p99_us", "throughput_rps")}
                for sr, fr in zip(s["rounds"], f["rounds"], strict=True)
            ],
        }
    target: dict[str, Any]
    if cell.path == REDIS_TIER:
        budget = floors["no-op"]["summary"]["p50_us"] + HGETALL_BUDGET * floors["HGETALL"]["summary"]["p50_us"]
        target = {"rule": "sidecar p50 <= no-op p50 + 2 x HGETALL p50", "budget_p50_us": budget,
                  "meets": bool(s["p50_us"] <= budget)}
    elif cell.path == UPSTREAM_MISS:
        r = floors["direct GET"]["ratio"]
        target = {"rule": f"p50 <= {TARGET_MISS_P50} x direct, rps >= {TARGET_MISS_RPS} x direct",
                  "meets": bool(r["p50_us"] <= TARGET_MISS_P50 and r["throughput_rps"] >= TARGET_MISS_RPS)}
    else:
        r = floors["direct POST"]["ratio"]
        target = {"rule": f"rps >= {TARGET_USAGE_RPS} x direct",
                  "meets": bool(r["throughput_rps"] >= TARGET_USAGE_RPS)}
    return {
        "path": cell.path, "method": cell.method, "concurrency": cell.conc,
        "sidecar": s, "floors": floors,
        "extras": {arm.name: summary(arm) for arm in cell.extras},
        "target": target,
    }


def build_report(run: Run, cells: list[CellSpec], elapsed: float) -> dict[str, Any]:
    args = run.args
    return {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "paths": args.paths, "concurrency": args.concurrency, "rounds": run.rounds,
            "duration_s": run.duration, "warmup_s": run.warmup, "client_procs": args.client_procs,
            "redis_customers": run.customers, "upstream_customers": run.upstream_customers,
            "upstream_db_dir": str(args.upstream_db_dir or "the run's temporary directory"),
            "profiled": args.profile is not None,
        },
        "setup": run.setup,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(),
                 "loadavg_at_end": os.getloadavg()},
        "elapsed_s": elapsed,
        "results": [_cell_report(cell, run.tallies) for cell in cells],
    }


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:,.{digits}f}"


def _main_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| path | method | conc | sidecar p50 / p99 (us) | floor | floor p50 / p99 (us) "
        "| sidecar rps | floor rps | p50 x | p99 x | rps x | srv CPU us/call (sidecar / floor) "
        "| target | meets target |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in report["results"]:
        s, target = row["sidecar"], row["target"]
        for n, (name, floor) in enumerate(row["floors"].items()):
            f, r = floor["summary"], floor["ratio"]
            first = n == 0
            if row["path"] == REDIS_TIER:
                rule = f"p50 <= no-op + 2 x HGETALL = {_fmt(target['budget_p50_us'])} us" if first else ""
            else:
                rule = target["rule"]
            verdict = ("yes" if target["meets"] else "**no**") if first else ""
            side_cpu = s["cpu_us_per_call"]["sidecar"]
            floor_cpu = f["cpu_us_per_call"][floor["server_process"]]
            lines.append(
                f"| {row['path'] if first else ''} | {row['method'] if first else ''} "
                f"| {row['concurrency'] if first else ''} "
                f"| {_fmt(s['p50_us']) + ' / ' + _fmt(s['p99_us']) if first else ''} "
                f"| {name} | {_fmt(f['p50_us'])} / {_fmt(f['p99_us'])} "
                f"| {_fmt(s['throughput_rps']) if first else ''} | {_fmt(f['throughput_rps'])} "
                f"| {r['p50_us']:.2f} | {r['p99_us']:.2f} | {r['throughput_rps']:.2f} "
                f"| {_fmt(side_cpu)} / {_fmt(floor_cpu)} | {rule} | {verdict} |"
            )
    return lines


def _cpu_table(report: dict[str, Any]) -> list[str]:
    lines = [
        "| path | method | conc | arm | sidecar | upstream | redis | no-op | relay (no-op + request) "
        "| client CPU util | resp B | errors |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        arms = [("sidecar", row["sidecar"])]
        arms += [(name, floor["summary"]) for name, floor in row["floors"].items()]
        arms += list(row["extras"].items())
        for name, summary in arms:
            cpu = summary["cpu_us_per_call"]
            cells = " | ".join(_fmt(cpu.get(p)) if p in cpu else "" for p in
                               ("sidecar", "upstream", "redis", "noop", "relay"))
            lines.append(
                f"| {row['path']} | {row['method']} | {row['concurrency']} | {name} | {cells} "
                f"| {_fmt(summary['client_cpu_util'], 2)} | {_fmt(summary['response_bytes_mean'])} "
                f"| {summary['errors']} |"
            )
    return lines


def _checks(report: dict[str, Any]) -> list[str]:
    """What the sidecar's own counters say about its measured calls, per path."""
    lines = []
    for path in PATHS:
        rows = [r for r in report["results"] if r["path"] == path]
        if not rows:
            continue
        m: dict[str, float] = {}
        for r in rows:
            for k, v in r["sidecar"]["sidecar_metrics"].items():
                m[k] = m.get(k, 0.0) + v
        calls = m.get("sidecar_grpc_request_duration_seconds_count", 0.0)

        def per(name: str, m: dict[str, float] = m, calls: float = calls) -> float:
            return _ratio(m.get(name, 0.0), calls)

        handler = _ratio(m.get("sidecar_grpc_request_duration_seconds_sum", 0.0), calls) * 1e6
        lines.append(
            f"* {path}: {calls:,.0f} sidecar calls; per call: Redis hits {per('sidecar_redis_hits_total'):.2f}, "
            f"source fetches {per('sidecar_source_fetch_duration_seconds_count'):.2f}, "
            f"hot-cache hits {per('sidecar_cache_hits_total'):.2f}; fallbacks "
            f"{m.get('sidecar_fallbacks_total', 0.0):,.0f}, source errors "
            f"{m.get('sidecar_network_request_errors_total', 0.0):,.0f}; handler mean "
            f"(sidecar_grpc_request_duration_seconds) {_fmt(handler)} us; log lines at warn or "
            f"above: {report['setup'].get(path, {}).get('sidecar_log_lines', 'n/a')}"
        )
        commands = {k.removeprefix("redis_cmd_"): v for k, v in m.items()
                    if k.startswith("redis_cmd_") and v}
        if commands:
            lines.append("  Redis commands per sidecar call: " + ", ".join(
                f"{name} {per('redis_cmd_' + name):.2f}"
                for name, _ in sorted(commands.items(), key=lambda kv: -kv[1])))
    return lines


def _redis_comparison(report: dict[str, Any]) -> list[str]:
    rows = [r for r in report["results"] if r["path"] == REDIS_TIER]
    if not rows:
        return []
    lines = [
        "Redis-tier target (the issue's): sidecar p50 <= no-op p50 + 2 x HGETALL p50",
        "",
        "| method | conc | sidecar p50 (us) | no-op p50 (us) | HGETALL p50 (us) "
        "| no-op + 2 x HGETALL (us) | no-op + HGETALL server p50 (us) | sidecar - no-op (us) "
        "| in HGETALLs | sidecar - no-op + HGETALL server (us) | meets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r["sidecar"]["p50_us"]
        noop = r["floors"]["no-op"]["summary"]["p50_us"]
        hget = r["floors"]["HGETALL"]["summary"]["p50_us"]
        relay = r["floors"]["no-op + HGETALL"]["summary"]["p50_us"]
        lines.append(
            f"| {r['method']} | {r['concurrency']} | {_fmt(s)} | {_fmt(noop)} | {_fmt(hget)} "
            f"| {_fmt(r['target']['budget_p50_us'])} | {_fmt(relay)} | {_fmt(s - noop)} "
            f"| {_ratio(s - noop, hget):.2f} | {_fmt(s - relay)} "
            f"| {'yes' if r['target']['meets'] else '**no**'} |"
        )
    return lines


def _usage_note(report: dict[str, Any]) -> list[str]:
    lines = []
    for r in report["results"]:
        if r["path"] != REPORT_USAGE:
            continue
        report_cpu = r["sidecar"]["cpu_us_per_call"]["sidecar"]
        idle = r["floors"]["direct POST"]["summary"]["cpu_us_per_call"]["sidecar"]
        hot = r["extras"]["sidecar hot read"]["cpu_us_per_call"]["sidecar"]
        lines.append(
            f"* ReportUsage c={r['concurrency']}: sidecar CPU {_fmt(report_cpu)} us per report "
            f"(of which ~{_fmt(idle)} us is the push channel's usage event, which the sidecar also "
            f"spends on each direct POST) against {_fmt(hot)} us per hot "
            f"GetEntitlementsStateV2 ({_ratio(report_cpu, hot):.1f}x)"
        )
    return lines


def _upstream_entitlements(report: dict[str, Any]) -> str:
    for path in (UPSTREAM_MISS, REPORT_USAGE):
        count = report["setup"].get(path, {}).get("entitlements_per_customer")
        if count is not None:
            return str(count)
    return "?"


def render_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = [
        f"Command: `{report['command']}`",
        f"{cfg['rounds']} interleaved rounds x {cfg['duration_s']}s per trial "
        f"(+{cfg['warmup_s']}s warm-up), {cfg['client_procs']} client processes; "
        + (f"{cfg['redis_customers']} customers in Redis (20 entitlements each); "
           if REDIS_TIER in cfg["paths"] else "")
        + (f"{cfg['upstream_customers']} upstream customers on the {PLAN} plan "
           f"({_upstream_entitlements(report)} entitlements each). "
           if set(cfg["paths"]) - {REDIS_TIER} else "")
        + f"Load average at the end: {', '.join(f'{x:.2f}' for x in report['host']['loadavg_at_end'])} "
        f"on {report['host']['cpus']} CPUs.",
        "",
        *_main_table(report),
        "",
        *_redis_comparison(report),
        "",
        "Server CPU per call of every process during each arm (us), client CPU utilisation "
        "(summed over client processes), mean response bytes:",
        "",
        *_cpu_table(report),
        "",
        "The sidecar's own counters over its measured trials:",
        "",
        *_checks(report),
        *_usage_note(report),
        "",
        "Ratios are sidecar / floor over all rounds pooled; per-round ratios are in the JSON.",
    ]
    if cfg["profiled"]:
        lines.append("**Profiled run: the sidecars ran under cProfile, their numbers are inflated.**")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short smoke run (~1.5 min)")
    parser.add_argument("--duration", type=float, help="measured seconds per trial (default 3, quick 1)")
    parser.add_argument("--warmup", type=float, help="unmeasured seconds per trial (default 1, quick 0.3)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 2)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16],
                        help="comma-separated, default 1,16")
    parser.add_argument("--paths", type=lambda s: s.split(","), default=list(PATHS),
                        help=f"comma-separated subset of {','.join(PATHS)}")
    parser.add_argument("--customers", type=int, help="customers in Redis (default 20000, quick 2000)")
    parser.add_argument("--upstream-customers", type=int,
                        help="customers provisioned in upstream (default 1000, quick 200)")
    parser.add_argument("--upstream-db-dir", type=Path,
                        help="directory of upstream's SQLite file (default: the run's temporary "
                             "directory); every usage report is fsync'd there")
    parser.add_argument("--client-procs", type=int, default=2, help="load generator processes")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results" / "paths.json")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run each sidecar under cProfile and write DIR/<sidecar>.pstats "
                             "(whole process life; inflates the sidecar's numbers)")
    args = parser.parse_args(argv)
    unknown = set(args.paths) - set(PATHS)
    if unknown:
        parser.error(f"unknown paths: {', '.join(sorted(unknown))}")
    if args.profile is not None:
        args.profile = args.profile.resolve()
        args.profile.mkdir(parents=True, exist_ok=True)
    from entitlements.logs import configure_logging

    configure_logging("warn", "json", service="bench-paths")
    work = Path(tempfile.mkdtemp(prefix="bench-paths-"))
    run = Run(
        args=args, ctx=mp.get_context("spawn"), work=work,
        warmup=args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0),
        duration=args.duration or (1.0 if args.quick else 3.0),
        rounds=args.rounds or (2 if args.quick else 3),
        customers=args.customers or (2000 if args.quick else 20000),
        upstream_customers=args.upstream_customers or (200 if args.quick else 1000),
    )
    cells = plan_cells([p for p in PATHS if p in args.paths], args.concurrency)
    run.n_trials = run.rounds * sum(len(c.arms) for c in cells)
    t_begin = time.perf_counter()
    print(f"{run.n_trials} trials; work directory {work}", flush=True)
    try:
        by_path = {p: [c for c in cells if c.path == p] for p in PATHS}
        if by_path[REDIS_TIER]:
            run.redis_tier(by_path[REDIS_TIER])
        for path in (UPSTREAM_MISS, REPORT_USAGE):
            if by_path[path]:
                run.upstream_path(path, by_path[path])
    finally:
        if run.upstream is not None:
            run.upstream[0].stop()
            run.setup["upstream"]["log_lines"] = run.upstream[0].complaints()
            if args.upstream_db_dir is not None:
                for leftover in args.upstream_db_dir.glob(f"bench-paths-{os.getpid()}.db*"):
                    leftover.unlink()
    report = build_report(run, cells, time.perf_counter() - t_begin)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, allow_nan=True))
    print()
    print(render_markdown(report))
    print(f"\nJSON written to {args.out}")
    if args.profile is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"profiles in {args.profile}; logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
