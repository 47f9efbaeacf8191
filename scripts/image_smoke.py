"""The image smoke test's driver: the real topology in containers, checked through the official SDK.

Run by ``scripts/test-image.sh`` (which installs the tools, starts a private dockerd and builds the
image); on its own: ``python scripts/image_smoke.py --image TAG --run-id ID --run-dir DIR``.

Topology, on a user-defined docker network: a private ``redis-server`` on the host, bound to the
network's gateway address; ``entitlement-upstream`` publishing its change stream to that Redis;
``entitlement-persistent-cache`` applying it with ``KEYS_TTL_IN_SECS=-1``; a sidecar with the Redis
tier listening on its default gRPC port 80, published to a host port. Every container runs as the
image's uid 65532 with what the chart will use: read-only root filesystem (tmpfs on /tmp), every
capability dropped, no privilege escalation, and for the sidecar the namespaced sysctl
``net.ipv4.ip_unprivileged_port_start=0`` that lets a non-root process bind port 80.

Synchronization is by polling with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from stigg_sidecar_sdk.generated.stigg.sidecar import v1 as sdk
from stigg_sidecar_sdk.sdk import Stigg

from entitlements.redis.keys import state_key
from entitlements.redis.store import RedisStore

UID = "65532"
API_KEY = "smoke-key"
PREFIX = "smoke"
# docker stop's grace (the orchestrator's, terminationGracePeriodSeconds in Kubernetes) must exceed
# the service's own drain time, SHUTDOWN_GRACE_SECONDS: a client that cannot answer the server's
# GOAWAY (its event loop blocked) holds the drain that long. docker stop runs in a thread here so
# the SDK's loop stays live, as an application's would.
GRACE_SECONDS = 10
SHUTDOWN_GRACE_SECONDS = 5
DEADLINE_SECONDS = 60.0
# What the chart runs every container with (the sidecar adds the port-80 sysctl).
RESTRICTED = [
    "--read-only",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,size=64m",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    # The image's own HEALTHCHECK command, polled often so "healthy" comes quickly.
    "--health-interval",
    "1s",
]
PORT_80_SYSCTL = "net.ipv4.ip_unprivileged_port_start=0"


class SmokeFailure(AssertionError):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)
    print(f"   ok  {what}")


class Docker:
    def __init__(self, cli: str, run_id: str) -> None:
        self.cli = cli
        self.run_id = run_id
        self.label = f"entitlement-smoke.run={run_id}"
        self.containers: list[str] = []
        self.network: str | None = None

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        done = subprocess.run(
            [self.cli, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise SmokeFailure(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def inspect(self, name: str) -> dict[str, Any]:
        result: list[dict[str, Any]] = json.loads(self("inspect", name))
        return result[0]

    def name(self, role: str) -> str:
        return f"smoke-{role}-{self.run_id}"

    def run(self, role: str, image: str, *options: str, command: Sequence[str] = ()) -> str:
        name = self.name(role)
        self.containers.append(name)
        self("run", "-d", "--name", name, "--label", self.label, *options, image, *command)
        return name

    def host_port(self, name: str, container_port: int) -> int:
        # "127.0.0.1:49153" (one line per address family; all share the port)
        return int(self("port", name, f"{container_port}/tcp").splitlines()[0].rsplit(":", 1)[1])

    def logs(self, name: str, tail: int | None = None) -> str:
        """stdout and stderr of a container; never fails (used in failure reports)."""
        args = [self.cli, "logs", *(["--tail", str(tail)] if tail else []), name]
        done = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
        return done.stdout + done.stderr

    def cleanup(self) -> None:
        for name in self.containers:
            self("rm", "-f", name, check=False)
        if self.network:
            self("network", "rm", self.network, check=False)


async def eventually(
    probe: Callable[[], Awaitable[bool]], what: str, within: float = DEADLINE_SECONDS
) -> None:
    """Poll ``probe`` until it holds, or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            if await probe():
                print(f"   ok  {what}")
                return
        except Exception as exc:  # a probe failing means "not yet"
            last = f"{type(exc).__name__}: {exc}"
        else:
            last = "condition false"
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {within:.0f}s waiting for {what} ({last})")
        await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def private_redis(bind: Sequence[str], run_dir: Path) -> Iterator[int]:
    """A redis-server of our own on the host, persistence off, reachable from the containers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SmokeFailure("redis-server is not installed")
    port = free_port()
    data = run_dir / "redis"
    data.mkdir(exist_ok=True)
    options = ["--protected-mode", "no", "--save", "", "--appendonly", "no", "--dir", str(data)]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", *bind, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # For test-image.sh's trap, should this process die before its finally runs.
    (run_dir / "redis.pid").write_text(str(process.pid))
    try:
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def http_json(method: str, url: str, body: Any | None = None) -> Any:
    request = urllib.request.Request(
        url,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-API-KEY": API_KEY, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Timer:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.phases: list[tuple[str, float]] = []
        self._last = self.started

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.phases.append((name, now - self._last))
        self._last = now
        print(f"== {name} ({now - self.started:.1f}s into the smoke test)")


def image_checks(docker: Docker, image: str, version: str) -> None:
    config = docker.inspect(image)["Config"]
    labels = config["Labels"] or {}
    check(labels.get("org.opencontainers.image.version") == version, f"label version {version}")
    check(config["User"] == f"{UID}:{UID}", f"image user {config['User']}")
    health = config["Healthcheck"]["Test"]
    check(health[1:3] == ["entitlement-sidecar", "healthcheck"], f"HEALTHCHECK {health}")
    check(config["Cmd"] == ["entitlement-sidecar"] and not config["Entrypoint"], "exec-form CMD")
    probe = (
        "import importlib.util, json, os, shutil, subprocess, sys\n"
        "base = [p for p in ('/usr/bin/python3', '/usr/local/bin/python3') if os.path.exists(p)]\n"
        "print(json.dumps({'uid': os.getuid(),\n"
        " 'venv_pip': importlib.util.find_spec('pip') is not None,\n"
        " 'venv_setuptools': importlib.util.find_spec('setuptools') is not None,\n"
        " 'base_pip': [p for p in base if subprocess.run([p, '-c', 'import pip'],\n"
        "     capture_output=True).returncode == 0],\n"
        " 'tools': [t for t in ('pip', 'pip3', 'gcc', 'cc', 'curl', 'wget') if shutil.which(t)],\n"
        "}))\n"
    )
    facts = json.loads(docker("run", "--rm", *RESTRICTED, image, "python", "-c", probe))
    check(facts["uid"] == int(UID), f"runs as uid {facts['uid']}")
    check(not (facts["venv_pip"] or facts["venv_setuptools"]), "no pip or setuptools in the venv")
    check(facts["base_pip"] == [], f"no pip in the base image's Python ({facts['base_pip']})")
    check(facts["tools"] == [], f"no pip, compiler or curl on PATH ({facts['tools']})")
    out = docker("run", "--rm", *RESTRICTED, image, "entitlement-upstream", "--version")
    check(out == f"entitlement-upstream {version}", f"command picks the service: {out!r}")


def port_80_needs_the_sysctl(docker: Docker, image: str) -> None:
    """With unprivileged ports starting at 1024 the sidecar cannot bind 80: the test means it."""
    name = docker.run(
        "port80-denied",
        image,
        *RESTRICTED,
        "--sysctl",
        "net.ipv4.ip_unprivileged_port_start=1024",
        "-e",
        "OFFLINE=1",
        "-e",
        "BIND_ADDRESS=0.0.0.0",
    )
    code = docker("wait", name, timeout=DEADLINE_SECONDS)
    # Today a raw RuntimeError naming 0.0.0.0:80; any clean start-up error must name the port too.
    refused = code != "0" and "0.0.0.0:80" in docker.logs(name)
    check(refused, f"without the sysctl, port 80 is refused (exit {code})")
    docker("rm", "-f", name)
    docker.containers.remove(name)


def container_facts(docker: Docker, name: str) -> None:
    status = docker("exec", name, "cat", "/proc/1/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    uids, gids = fields["Uid"].split(), fields["Gid"].split()
    check(set(uids) == {UID} and set(gids) == {UID}, f"{name}: PID 1 uid/gid {UID}")
    check(int(fields["CapEff"], 16) == 0, f"{name}: no effective capabilities")
    check(fields["NoNewPrivs"].strip() == "1", f"{name}: no new privileges")
    write_root = docker(
        "exec", name, "python", "-c",
        "import errno\ntry:\n open('/opt/venv/x', 'w')\n"
        "except OSError as e:\n print(errno.errorcode[e.errno])",
    )  # fmt: skip
    check(write_root == "EROFS", f"{name}: root filesystem is read-only ({write_root})")
    docker("exec", name, "python", "-c", "open('/tmp/probe','w').write('x')")
    check(docker.inspect(name)["HostConfig"]["ReadonlyRootfs"] is True, f"{name}: ReadonlyRootfs")


def listens_on_80(docker: Docker, name: str) -> bool:
    tables = docker("exec", name, "cat", "/proc/net/tcp", "/proc/net/tcp6")
    # local_address "HEX_IP:0050", state 0A = LISTEN
    return any(
        len(cols) > 3 and cols[1].endswith(":0050") and cols[3] == "0A"
        for cols in (line.split() for line in tables.splitlines())
    )


def stop_within_grace(docker: Docker, name: str) -> float:
    started = time.monotonic()
    docker("stop", "-t", str(GRACE_SECONDS), name, timeout=GRACE_SECONDS + 30)
    elapsed = time.monotonic() - started
    state = docker.inspect(name)["State"]
    check(
        state["ExitCode"] == 0 and elapsed < GRACE_SECONDS,
        f"{name}: SIGTERM -> exit {state['ExitCode']} in {elapsed:.1f}s (grace {GRACE_SECONDS}s)",
    )
    return elapsed


async def topology(docker: Docker, image: str, run_dir: Path, timer: Timer) -> None:
    network = f"smoke-{docker.run_id}"
    docker("network", "create", "--label", docker.label, network)
    docker.network = network
    gateway = docker.inspect(network)["IPAM"]["Config"][0]["Gateway"]
    with private_redis(["127.0.0.1", gateway], run_dir) as redis_port:
        redis_env = ["-e", f"REDIS_HOST={gateway}", "-e", f"REDIS_PORT={redis_port}"]
        common = [*RESTRICTED, "--network", network, "-e", "LOG_FORMAT=json"]
        upstream = docker.run(
            "upstream", image, *common, "--network-alias", "upstream",
            "-p", "127.0.0.1::8787",
            "-e", f"SERVER_API_KEY={API_KEY}",
            "-e", "UPSTREAM_BIND_ADDRESS=0.0.0.0",
            "-e", "UPSTREAM_DATABASE=/tmp/upstream.db",
            "-e", f"EVENTS_REDIS_URL=redis://{gateway}:{redis_port}/0",
            "-e", f"REDIS_ENVIRONMENT_PREFIX={PREFIX}",
            command=["entitlement-upstream"],
        )  # fmt: skip
        cache = docker.run(
            "persistent-cache", image, *common, *redis_env,
            "-e", f"SERVER_API_KEY={API_KEY}",
            "-e", f"REDIS_ENVIRONMENT_PREFIX={PREFIX}",
            "-e", "KEYS_TTL_IN_SECS=-1",
            "-e", "API_URL=http://upstream:8787",
            command=["entitlement-persistent-cache"],
        )  # fmt: skip
        # The default command and the default gRPC port (80): what the official SDKs dial.
        sidecar = docker.run(
            "sidecar", image, *common, *redis_env,
            "--sysctl", PORT_80_SYSCTL,
            "-p", "127.0.0.1::80",
            "-e", f"SERVER_API_KEY={API_KEY}",
            "-e", "API_URL=http://upstream:8787",
            "-e", "BIND_ADDRESS=0.0.0.0",
            "-e", f"REDIS_ENVIRONMENT_PREFIX={PREFIX}",
            # Generous next to the default 100 ms: a loaded CI machine must not turn a Redis
            # read into a fallback when upstream is down.
            "-e", "REDIS_TIMEOUT_MS=2000",
            "-e", f"SHUTDOWN_GRACE_SECONDS={SHUTDOWN_GRACE_SECONDS}",
        )  # fmt: skip
        upstream_url = f"http://127.0.0.1:{docker.host_port(upstream, 8787)}"
        grpc_port = docker.host_port(sidecar, 80)
        timer.phase("containers started")

        for name in (upstream, cache, sidecar):

            async def healthy(name: str = name) -> bool:
                return bool(docker.inspect(name)["State"]["Health"]["Status"] == "healthy")

            await eventually(healthy, f"{name}: image HEALTHCHECK (auto) reports healthy")
        check(listens_on_80(docker, sidecar), f"{sidecar}: listens on port 80 in the container")
        for name in (upstream, cache, sidecar):
            container_facts(docker, name)
        timer.phase("healthy, restrictions checked")

        for customer in ("smoke-a", "smoke-b"):
            http_json(
                "POST",
                f"{upstream_url}/v1/customers",
                {"id": customer, "subscription": {"planId": "free"}},
            )

        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

            await eventually(serving, "gRPC health SERVING on port 80")

        stigg = Stigg(
            sdk.ApiConfig(api_key=API_KEY),
            remote_sidecar_host="127.0.0.1",
            remote_sidecar_port=grpc_port,
        )
        try:
            await through_the_sdk(stigg, docker, upstream, upstream_url, redis_port, timer)
            # Stopped while the application's connection is still open, as in a rollout.
            for name in (cache, sidecar):
                await asyncio.to_thread(stop_within_grace, docker, name)
        finally:
            stigg.close()
        timer.phase("stopped")


async def api_calls(stigg: Stigg, customer: str) -> sdk.GetMeteredEntitlementResponse:
    return await stigg.get_metered_entitlement(
        sdk.GetMeteredEntitlementRequest(customer_id=customer, feature_id="api-calls")
    )


async def through_the_sdk(
    stigg: Stigg, docker: Docker, upstream: str, upstream_url: str, redis_port: int, timer: Timer
) -> None:
    first = await api_calls(stigg, "smoke-a")
    limit, usage = first.entitlement.usage_limit, first.entitlement.current_usage
    check(
        first.has_access and not first.is_fallback and limit == 1000,
        f"read: api-calls limit {limit}, usage {usage}",
    )
    base = first.entitlement.current_usage
    ack = await stigg.report_usage(
        sdk.ReportUsageRequest(customer_id="smoke-a", feature_id="api-calls", value=7)
    )
    check(ack.current_usage == base + 7, f"usage report acknowledged: {ack.current_usage}")
    after = await api_calls(stigg, "smoke-a")
    check(after.entitlement.current_usage == base + 7, "the report is visible in the next read")

    http_json(
        "POST",
        f"{upstream_url}/v1/usage",
        {"usages": [{"customerId": "smoke-a", "featureId": "api-calls", "value": 100}]},
    )

    async def follows() -> bool:
        return bool((await api_calls(stigg, "smoke-a")).entitlement.current_usage == base + 107)

    await eventually(follows, "a change made upstream is visible in the sidecar")
    timer.phase("read, report, upstream change")

    # smoke-b has never been read by the sidecar: once upstream is gone, only Redis (written by
    # the persistent cache from the change stream) can answer for it.
    client = aioredis.Redis(port=redis_port)
    store = RedisStore(client, prefix=PREFIX, ttl_seconds=-1, publish=False)
    try:

        async def in_redis() -> bool:
            return (await store.get("smoke-b", None)) is not None

        await eventually(in_redis, "the persistent cache wrote smoke-b to Redis")
        ttl = await client.ttl(state_key(PREFIX, "smoke-b", None))
        check(ttl == -1, f"KEYS_TTL_IN_SECS=-1: the key never expires (TTL {ttl})")
    finally:
        await client.aclose()

    await asyncio.to_thread(stop_within_grace, docker, upstream)
    answer = await api_calls(stigg, "smoke-b")
    check(
        not answer.is_fallback and answer.has_access and answer.entitlement.usage_limit == 1000,
        "upstream stopped: a customer never read before is answered from Redis, not a fallback",
    )
    again = await api_calls(stigg, "smoke-a")
    check(again.entitlement.current_usage == base + 107, "and still serves what it had")
    timer.phase("upstream down, served from Redis")


async def main_async(args: argparse.Namespace) -> int:
    docker = Docker(args.docker, args.run_id)
    timer = Timer()
    try:
        image_checks(docker, args.image, args.version)
        port_80_needs_the_sysctl(docker, args.image)
        timer.phase("image checks")
        await topology(docker, args.image, Path(args.run_dir), timer)
    except SmokeFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        for name in docker.containers:
            print(f"-- logs of {name} (last 20 lines)", file=sys.stderr)
            print(docker.logs(name, tail=20), file=sys.stderr)
        return 1
    finally:
        docker.cleanup()
    total = time.monotonic() - timer.started
    print("== smoke test passed: " + ", ".join(f"{n} {s:.1f}s" for n, s in timer.phases))
    print(f"== smoke test (containers) took {total:.1f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--docker", default="docker", help="docker CLI to use")
    parser.add_argument("--image", required=True)
    parser.add_argument("--run-id", required=True, help="names and labels what this run starts")
    parser.add_argument("--run-dir", required=True, help="scratch directory of this run")
    parser.add_argument("--version", required=True, help="expected package/label version")
    return asyncio.run(main_async(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
