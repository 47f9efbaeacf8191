"""The built wheel works once installed: a fresh venv outside the checkout, the locked runtime
dependencies, then every console script run from an unrelated working directory.

This is what a user gets from ``pip install`` and what the image ships, so nothing here may rely
on the source tree (the demo catalog in particular must come from the installed package).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from tests.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SCRIPTS = sorted(PROJECT["scripts"])

pytestmark = pytest.mark.timeout(600)


def run(args: list[str], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False, **kwargs
    )


def checked(args: list[str], cwd: Path) -> str:
    done = run(args, cwd)
    assert done.returncode == 0, f"{args} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding only the locked runtime dependencies and the project's wheel."""
    work = tmp_path_factory.mktemp("wheel-install")
    wheelhouse = work / "dist"
    # The build requirements are locked into the dev venv, so no isolated build env is fetched.
    checked(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheelhouse),
            str(ROOT),
        ],
        work,
    )
    (wheel,) = wheelhouse.glob("entitlement_sidecar-*.whl")
    venv = work / "venv"
    checked([sys.executable, "-m", "venv", str(venv)], work)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    checked([*pip, "--require-hashes", "-r", str(ROOT / "requirements" / "runtime.txt")], work)
    checked([*pip, "--no-deps", str(wheel)], work)
    checked([python, "-m", "pip", "check"], work)
    return venv


def test_the_wheel_holds_no_test_or_example_code(installed: Path) -> None:
    site = next((installed / "lib").glob("python3*/site-packages"))
    top_level = {p.name for p in site.iterdir()}
    assert {"entitlements", "sidecar", "upstream", "persistent_cache", "demo"} <= top_level
    assert not {"tests", "examples", "bench", "tools"} & top_level
    assert (site / "upstream" / "catalog" / "demo.yaml").is_file()


@pytest.mark.parametrize("script", SCRIPTS)
def test_version_prints_the_package_version_and_exits(
    installed: Path, script: str, tmp_path: Path
) -> None:
    done = run([str(installed / "bin" / script), "--version"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{script} {PROJECT['version']}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_says_what_it_is_and_where_the_configuration_is(
    installed: Path, script: str, tmp_path: Path
) -> None:
    done = run([str(installed / "bin" / script), "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {script}")
    assert "environment variables" in done.stdout
    assert "Every variable with its meaning:" in done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_an_unknown_argument_is_refused_not_ignored(
    installed: Path, script: str, tmp_path: Path
) -> None:
    done = run([str(installed / "bin" / script), "--no-such-flag"], tmp_path)
    assert done.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in done.stderr


def test_upstream_starts_on_the_packaged_catalog_from_any_directory(
    installed: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "SERVER_API_KEY": "k",
        "UPSTREAM_PORT": str(port),
        "UPSTREAM_DATABASE": str(tmp_path / "up.db"),
        "LOG_FORMAT": "json",
    }
    env.pop("CATALOG_PATH", None)
    log = tmp_path / "upstream.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(installed / "bin" / "entitlement-upstream")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 60
        body = b""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as resp:
                    body = resp.read()
                    break
            except OSError:
                time.sleep(0.05)
        assert proc.poll() is None, log.read_text()
        assert body, "upstream never answered /livez"
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_demo_answers_a_grpc_read(installed: Path, tmp_path: Path) -> None:
    grpc_port, http_port, upstream_port = free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "PORT": str(grpc_port),
        "HTTP_PORT": str(http_port),
        "UPSTREAM_PORT": str(upstream_port),
        "DEMO_DATABASE": str(tmp_path / "demo.db"),
        "LOG_FORMAT": "json",
    }
    log = tmp_path / "demo.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [str(installed / "bin" / "entitlement-demo")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 60
            status = None
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                time.sleep(0.05)
            assert status == health_pb2.HealthCheckResponse.SERVING, log.read_text()
            stub = pb_grpc.SidecarServiceStub(channel)
            answer = stub.GetMeteredEntitlement(
                pb.GetMeteredEntitlementRequest(customer_id="customer-demo", feature_id="api-calls"),
                timeout=10,
            )
        assert answer.is_fallback is False
        assert answer.has_access is True
        assert answer.entitlement.current_usage == 1200
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
