"""The `helm test` hook: its Python program, taken from the rendered Pod, run here against a real
gRPC health service and an HTTP /readyz (the cluster only adds the Service DNS names)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.chart.chart_support import is_hook, one
from tests.chart.conftest import Renders


@pytest.fixture(scope="module")
def hook_command(renders: Renders) -> list[str]:
    pod = one(renders("upstream-statefulset"), "Pod")
    assert is_hook(pod)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    command: list[str] = pod["spec"]["containers"][0]["command"]
    return command


def test_hook_checks_every_service(hook_command: list[str]) -> None:
    assert hook_command[:2] == ["python", "-c"]
    assert hook_command[3:] == [
        "grpc:rel-entitlement-sidecar-sidecar:80",
        "http:rel-entitlement-sidecar-persistent-cache:8081",
        "http:rel-entitlement-sidecar-upstream:8787",
    ]


class Ready(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, health.HealthServicer]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, servicer
    server.stop(grace=None)


@pytest.fixture
def http_port() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def run_hook(script: str, *checks: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *checks],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hook_passes_when_everything_serves(
    hook_command: list[str], health_server: tuple[int, health.HealthServicer], http_port: int
) -> None:
    grpc_port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    done = run_hook(hook_command[2], f"grpc:127.0.0.1:{grpc_port}", f"http:127.0.0.1:{http_port}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(": ok (") == 2


def test_hook_fails_when_the_sidecar_is_not_serving(
    hook_command: list[str], health_server: tuple[int, health.HealthServicer], http_port: int
) -> None:
    grpc_port, servicer = health_server
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    done = run_hook(hook_command[2], f"grpc:127.0.0.1:{grpc_port}", f"http:127.0.0.1:{http_port}")
    assert done.returncode == 1
    assert f"grpc:127.0.0.1:{grpc_port}: FAILED (NOT_SERVING)" in done.stdout
    assert f"http:127.0.0.1:{http_port}: ok (HTTP 200)" in done.stdout


def test_hook_fails_when_a_service_is_not_ready(hook_command: list[str], http_port: int) -> None:
    Ready.status = 503
    try:
        done = run_hook(hook_command[2], f"http:127.0.0.1:{http_port}")
    finally:
        Ready.status = 200
    assert done.returncode == 1 and "FAILED" in done.stdout
