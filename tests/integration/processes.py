"""Services started as processes of their own, for tests that signal, kill and restart them.

Shared by the integration tests that need real processes (lifecycle, spools, buffering, frozen
upstream): a process with its stderr in a file to read, polling with a deadline, the HTTP side
port, and an upstream on a private SQLite file that a test can kill and start again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from tests.redis_server import free_port

DEADLINE_SECONDS = 30.0
#: The upstream's API key in these tests.
KEY = "right-key"


class Process:
    """A service started as its own process, stderr kept in a file for the test to read."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, "LOG_FORMAT": "json", **env},
                stdout=subprocess.DEVNULL,
                stderr=sink,
            )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def events(self) -> list[dict[str, object]]:
        found = []
        for line in self.lines():
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
        return found

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM, then the exit status and how long the exit took."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_until(condition: Callable[[], bool], what: str, proc: Process | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if proc is not None and proc.proc.poll() is not None:
            pytest.fail(
                f"process exited ({proc.proc.returncode}) waiting for {what}:\n"
                + "\n".join(proc.lines())
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def http_status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


class Upstream:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Process | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = Process(
            "upstream.main",
            {
                "SERVER_API_KEY": KEY,
                "UPSTREAM_PORT": str(self.port),
                "UPSTREAM_DATABASE": str(self.tmp_path / "upstream.db"),
            },
            self.tmp_path / f"upstream-{self.starts}.log",
        )
        wait_until(lambda: http_status(self.port, "/livez") == 200, "upstream", self.proc)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()

    def request(self, path: str, body: object | None = None) -> dict[str, object]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            headers={"X-API-KEY": KEY, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        assert isinstance(answer, dict)
        return answer


def started_upstream(tmp_path: Path) -> Upstream:
    """An upstream process with one customer, ``acme``, on the free plan."""
    up = Upstream(tmp_path)
    up.start()
    up.request("/v1/customers", {"id": "acme", "subscription": {"planId": "free"}})
    return up


class SidecarProcess:
    """A sidecar reading through ``upstream``, ready, with a stub; ``env`` adds or overrides
    settings. Tight upstream timeouts and no retries unless asked, so outages show quickly."""

    def __init__(self, upstream: Upstream, log: Path, **env: str) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        self.proc = Process(
            "sidecar.main",
            {
                "PORT": str(self.grpc_port),
                "HTTP_PORT": str(self.http_port),
                "SERVER_API_KEY": KEY,
                "API_URL": upstream.url,
                "STARTUP_WAIT_SECONDS": "0",
                "UPSTREAM_TIMEOUT_SECONDS": "1",
                "UPSTREAM_RETRIES": "0",
                **env,
            },
            log,
        )
        wait_until(lambda: http_status(self.http_port, "/readyz") == 200, "sidecar", self.proc)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = pb_grpc.SidecarServiceStub(self.channel)

    def kill(self) -> None:
        self.channel.close()
        self.proc.kill()
