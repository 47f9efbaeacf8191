"""``<script> healthcheck`` against real service processes: exit status and its one line.

Each service runs as its installed console script in a subprocess, configured only through the
environment, as in a container; the health check gets the same environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.redis_server import RedisServer, free_port

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0
API_KEY = "healthcheck-key"


def healthcheck(
    script: str, env: Mapping[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / script), "healthcheck", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def wait_healthy(script: str, env: Mapping[str, str], *args: str) -> str:
    """Poll the health check until it passes; its last line, or fail at the deadline."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        done = healthcheck(script, env, *args)
        if done.returncode == 0:
            return done.stdout
        if time.monotonic() > deadline:
            pytest.fail(f"{script} healthcheck {args} never passed: {done.stdout}{done.stderr}")


@contextmanager
def service(
    script: str, env: Mapping[str, str], stop: signal.Signals = signal.SIGTERM
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [str(BIN / script)],
        env={**os.environ, "LOG_FORMAT": "json", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.send_signal(stop)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def upstream_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SERVER_API_KEY": API_KEY,
        "UPSTREAM_PORT": str(free_port()),
        "UPSTREAM_DATABASE": str(tmp_path / "upstream.db"),
        **extra,
    }


def test_nothing_listening_is_unhealthy() -> None:
    done = healthcheck("entitlement-sidecar", {"HTTP_PORT": str(free_port())})
    assert done.returncode == 1
    assert done.stdout.startswith("unhealthy: sidecar http://127.0.0.1:")
    assert "Connection refused" in done.stdout
    assert len(done.stdout.splitlines()) == 1


def test_a_server_that_never_answers_is_unhealthy_within_the_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepted by the kernel, never answered
        port = listener.getsockname()[1]
        done = healthcheck("entitlement-sidecar", {"HTTP_PORT": str(port)}, "--timeout", "0.5")
    assert done.returncode == 1
    assert "timed out" in done.stdout


def test_upstream(tmp_path: Path) -> None:
    env = upstream_env(tmp_path)
    assert healthcheck("entitlement-upstream", env).returncode == 1
    with service("entitlement-upstream", env):
        line = wait_healthy("entitlement-upstream", env)
    assert line == f"healthy: upstream http://127.0.0.1:{env['UPSTREAM_PORT']}/livez: HTTP 200\n"
    # Stopped: unhealthy again.
    assert healthcheck("entitlement-upstream", env).returncode == 1


def test_sidecar_not_ready_is_unhealthy_but_live() -> None:
    # Upstream unreachable (port 9, discard): the sidecar runs but never gets ready.
    env = {
        "SERVER_API_KEY": API_KEY,
        "API_URL": "http://127.0.0.1:9",
        "PORT": str(free_port()),
        "HTTP_PORT": str(free_port()),
        "UPSTREAM_RETRIES": "0",
    }
    # SIGKILL: a sidecar that never got ready does not honour SIGTERM yet (issue 9, item 5).
    with service("entitlement-sidecar", env, stop=signal.SIGKILL):
        assert "/livez: HTTP 200" in wait_healthy("entitlement-sidecar", env, "--live")
        done = healthcheck("entitlement-sidecar", env)
    assert done.returncode == 1
    assert (
        done.stdout == f"unhealthy: sidecar http://127.0.0.1:{env['HTTP_PORT']}/readyz: HTTP 503\n"
    )


def test_sidecar_ready(tmp_path: Path) -> None:
    up = upstream_env(tmp_path)
    env = {
        "SERVER_API_KEY": API_KEY,
        "API_URL": f"http://127.0.0.1:{up['UPSTREAM_PORT']}",
        "PORT": str(free_port()),
        "HTTP_PORT": str(free_port()),
    }
    with service("entitlement-upstream", up), service("entitlement-sidecar", env):
        line = wait_healthy("entitlement-sidecar", env)
        assert line == f"healthy: sidecar http://127.0.0.1:{env['HTTP_PORT']}/readyz: HTTP 200\n"
        # The same check from another script, told which service to probe.
        assert healthcheck("entitlement-upstream", env, "--service", "sidecar").returncode == 0


def test_persistent_cache(tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = f"hc{free_port()}"
    up = upstream_env(tmp_path, EVENTS_REDIS_URL=redis_server.url, REDIS_ENVIRONMENT_PREFIX=prefix)
    env = {
        "SERVER_API_KEY": API_KEY,
        "REDIS_ENVIRONMENT_PREFIX": prefix,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_server.port),
        "API_URL": f"http://127.0.0.1:{up['UPSTREAM_PORT']}",
        "HTTP_PORT": str(free_port()),
        "HTTP_BIND_ADDRESS": "127.0.0.1",
    }
    assert healthcheck("entitlement-persistent-cache", env).returncode == 1
    with service("entitlement-upstream", up), service("entitlement-persistent-cache", env):
        line = wait_healthy("entitlement-persistent-cache", env)
    assert line.startswith("healthy: persistent-cache http://127.0.0.1:")
    assert line.endswith("/readyz: HTTP 200\n")
