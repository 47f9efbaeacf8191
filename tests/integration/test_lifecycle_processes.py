"""The lifecycle as Kubernetes sees it, on real processes: signals at any moment, a bounded
start-up wait, one clear line on a failed start, a refused API key counted and logged once,
and default ports that do not collide on one host.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from persistent_cache.settings import Settings as CacheSettings
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.settings import Settings as SidecarSettings
from tests.integration.processes import Process, http_status, metric, wait_until
from tests.redis_server import RedisServer, free_port
from upstream.settings import UpstreamSettings

pytestmark = pytest.mark.timeout(120)
DEADLINE_SECONDS = 30.0


def unused_address() -> str:
    """An upstream URL where nothing listens (connection refused, at once)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = Process(
        "upstream.main",
        {
            "SERVER_API_KEY": "right-key",
            "UPSTREAM_PORT": str(port),
            "UPSTREAM_DATABASE": str(tmp_path / "upstream.db"),
        },
        tmp_path / "upstream.log",
    )
    try:
        wait_until(lambda: http_status(port, "/livez") == 200, "upstream to answer", proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()


def sidecar_env(http_port: int, **extra: str) -> dict[str, str]:
    return {"PORT": str(free_port()), "HTTP_PORT": str(http_port), "SERVER_API_KEY": "k", **extra}


# ------------------------------------------------------------- signals before ready


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    redis.Redis(port=server.port).config_set("requirepass", "the-password")
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    "backend", ["upstream unreachable", "wrong API key", "wrong Redis password"]
)
def test_sigterm_is_honoured_before_the_sidecar_is_ready(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    http_port = free_port()
    env = sidecar_env(http_port, STARTUP_WAIT_SECONDS="-1", SHUTDOWN_GRACE_SECONDS="5")
    if backend == "upstream unreachable":
        env["API_URL"] = unused_address()
    elif backend == "wrong API key":
        env["API_URL"] = request.getfixturevalue("upstream")
        env["SERVER_API_KEY"] = "wrong-key"
    else:
        redis = request.getfixturevalue("password_redis")
        env.update(
            API_URL=unused_address(),
            REDIS_ENVIRONMENT_PREFIX="lifecycle",
            REDIS_PORT=str(redis.port),
            REDIS_HOST="127.0.0.1",
            REDIS_PASSWORD="not-the-password",
        )
    proc = Process("sidecar.main", env, tmp_path / "sidecar.log")
    try:
        wait_until(lambda: http_status(http_port, "/livez") == 200, "the side port", proc)
        assert http_status(http_port, "/readyz") == 503  # strict: not ready, and never will be
        code, took = proc.stop()
        assert code == 0
        # Well inside the grace period: nothing was in flight.
        assert took < 5.0
        assert any(e.get("event") == "stopping_before_ready" for e in proc.events())
    finally:
        proc.kill()


# ------------------------------------------------------------- bounded start-up wait


def test_ready_after_the_bounded_wait_serving_fallbacks_and_saying_so(tmp_path: Path) -> None:
    http_port = free_port()
    env = sidecar_env(
        http_port,
        API_URL=unused_address(),
        STARTUP_WAIT_SECONDS="0.2",
        ENTITLEMENTS_FALLBACK='{"api-calls": {"hasAccess": true, "usageLimit": 7}}',
    )
    proc = Process("sidecar.main", env, tmp_path / "sidecar.log")
    try:
        wait_until(lambda: http_status(http_port, "/readyz") == 200, "degraded readiness", proc)
        with grpc.insecure_channel(f"127.0.0.1:{env['PORT']}") as channel:
            answer = pb_grpc.SidecarServiceStub(channel).GetMeteredEntitlement(
                pb.GetMeteredEntitlementRequest(customer_id="c-1", feature_id="api-calls"),
                timeout=10,
            )
        assert answer.is_fallback is True
        assert answer.has_access is True and answer.entitlement.usage_limit == 7
        assert metric(http_port, "sidecar_backend_synced") == 0
        events = [e for e in proc.events() if e.get("event") == "ready_without_backend"]
        assert len(events) == 1 and events[0]["waited_seconds"] == 0.2
        ready = [e for e in proc.events() if e.get("event") == "sidecar_ready"]
        assert ready and ready[0]["backend_synced"] is False
        assert proc.stop()[0] == 0
    finally:
        proc.kill()


def test_strict_readiness_waits_for_the_backend(tmp_path: Path) -> None:
    degraded_port, strict_port = free_port(), free_port()
    api_url = unused_address()
    strict = Process(
        "sidecar.main",
        sidecar_env(strict_port, API_URL=api_url, STARTUP_WAIT_SECONDS="-1"),
        tmp_path / "strict.log",
    )
    degraded = Process(
        "sidecar.main",
        sidecar_env(degraded_port, API_URL=api_url, STARTUP_WAIT_SECONDS="0"),
        tmp_path / "degraded.log",
    )
    try:
        wait_until(lambda: http_status(strict_port, "/livez") == 200, "strict side port", strict)
        wait_until(lambda: http_status(degraded_port, "/readyz") == 200, "degraded ready", degraded)
        # The degraded one is ready; the strict one, started first, still is not.
        assert http_status(strict_port, "/readyz") == 503
        assert metric(strict_port, "sidecar_backend_synced") == 0
    finally:
        strict.kill()
        degraded.kill()


# ------------------------------------------------------------- a refused API key


def test_a_refused_api_key_is_counted_and_logged_once(upstream: str, tmp_path: Path) -> None:
    http_port = free_port()
    env = sidecar_env(
        http_port, API_URL=upstream, SERVER_API_KEY="wrong-key", STARTUP_WAIT_SECONDS="0"
    )
    proc = Process("sidecar.main", env, tmp_path / "sidecar.log")
    try:
        wait_until(lambda: http_status(http_port, "/readyz") == 200, "ready", proc)
        with grpc.insecure_channel(f"127.0.0.1:{env['PORT']}") as channel:
            stub = pb_grpc.SidecarServiceStub(channel)
            for _ in range(5):
                answer = stub.GetBooleanEntitlement(
                    pb.GetBooleanEntitlementRequest(customer_id="customer-demo", feature_id="sso"),
                    timeout=10,
                )
                assert answer.is_fallback is True
        assert metric(http_port, "sidecar_invalid_api_key_errors_total") >= 5
        rejected = [e for e in proc.events() if e.get("event") == "api_key_rejected"]
        assert len(rejected) == 1
        assert rejected[0]["setting"] == "SERVER_API_KEY"
        assert not [e for e in proc.events() if e.get("event") == "source_fetch_failed"]
    finally:
        proc.kill()


# ------------------------------------------------------------- one line on a failed start


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.mark.parametrize(
    ("module", "env", "names"),
    [
        (
            "sidecar.main",
            {"OFFLINE": "1", "PORT": "{port}", "HTTP_PORT": "0"},
            "(PORT, BIND_ADDRESS)",
        ),
        ("sidecar.main", {"OFFLINE": "1", "PORT": "0", "HTTP_PORT": "{port}"}, "(HTTP_PORT,"),
        (
            "upstream.main",
            {
                "SERVER_API_KEY": "k",
                "UPSTREAM_PORT": "{port}",
                "UPSTREAM_BIND_ADDRESS": "0.0.0.0",
                "UPSTREAM_DATABASE": "{tmp}/up.db",
            },
            "(UPSTREAM_PORT,",
        ),
        (
            "persistent_cache.main",
            {"SERVER_API_KEY": "k", "REDIS_ENVIRONMENT_PREFIX": "p", "HTTP_PORT": "{port}"},
            "(HTTP_PORT,",
        ),
    ],
    ids=["sidecar-grpc", "sidecar-http", "upstream", "persistent-cache"],
)
def test_a_port_in_use_is_one_structured_line_and_exit_one(
    module: str, env: dict[str, str], names: str, taken_port: int, tmp_path: Path
) -> None:
    filled = {k: v.format(port=taken_port, tmp=tmp_path) for k, v in env.items()}
    proc = Process(module, filled, tmp_path / "out.log")
    try:
        assert proc.proc.wait(timeout=60) == 1
        lines = proc.lines()
        assert len(lines) == 1, lines
        line = json.loads(lines[0])
        assert line["event"] == "startup_failed" and line["level"] == "error"
        assert "Address already in use" in str(line["error"]) and names in str(line["error"])
    finally:
        proc.kill()


# ------------------------------------------------------------- defaults on one host


def test_the_services_default_ports_do_not_collide() -> None:
    sidecar = SidecarSettings()
    ports = {
        "sidecar PORT": sidecar.port,
        "sidecar HTTP_PORT": sidecar.http_port,
        "persistent cache HTTP_PORT": CacheSettings.__dataclass_fields__["http_port"].default,
        "upstream UPSTREAM_PORT": UpstreamSettings(api_key="k").port,
    }
    assert len(set(ports.values())) == len(ports), ports
