"""Shared fixtures: a running sidecar over an in-memory source, and clients for it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import grpc
import pytest

from sidecar.app import Sidecar
from sidecar.evaluation.fallback import parse_fallback_map
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.settings import Settings
from sidecar.source.memory import InMemorySource
from tests.redis_server import RedisServer

if TYPE_CHECKING:
    # mypy-protobuf types the aio flavour of the stub separately; it only exists in the .pyi.
    AsyncStub = pb_grpc.SidecarServiceAsyncStub
else:
    AsyncStub = pb_grpc.SidecarServiceStub

@pytest.fixture(scope="session", autouse=True)
def _spools_in_a_private_temp_dir() -> Iterator[None]:
    """Sidecar processes the tests start without SPOOL_DIR put their default spool under
    $TMPDIR: a directory of this session's, removed afterwards, not /tmp. Short, so Unix
    socket paths under it stay within their length limit."""
    previous = os.environ.get("TMPDIR")
    private = tempfile.mkdtemp(prefix="es-", dir="/tmp")
    os.environ["TMPDIR"] = private
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = previous
        shutil.rmtree(private, ignore_errors=True)


FALLBACK_JSON = (
    '{"fb-metered": {"hasAccess": true, "usageLimit": 1000},'
    ' "fb-flag": {"hasAccess": true},'
    ' "fb-tier": {"hasAccess": false, "enumValues": ["basic"]}}'
)


def make_settings(**overrides: object) -> Settings:
    base: dict[str, object] = {
        "port": 0,
        "http_port": 0,
        "http_bind_address": "127.0.0.1",
        "cache_max_bytes": 64 * 2**20,
        "fallbacks": parse_fallback_map(FALLBACK_JSON),
        "shutdown_grace_seconds": 5.0,
    }
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = condition()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session; tests isolate themselves by key prefix."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill, restart or flush it."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_prefix(request: pytest.FixtureRequest) -> str:
    """A key prefix unique to the test, so tests sharing the session server never collide."""
    return "t" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]


@pytest.fixture
def source() -> InMemorySource:
    return InMemorySource()


@pytest.fixture
async def sidecar(source: InMemorySource) -> AsyncIterator[Sidecar]:
    async with Sidecar(make_settings(), source) as running:
        yield running


@pytest.fixture
async def offline_sidecar() -> AsyncIterator[Sidecar]:
    async with Sidecar(make_settings(offline=True), None) as running:
        yield running


@pytest.fixture
async def stub(sidecar: Sidecar) -> AsyncIterator[AsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        yield pb_grpc.SidecarServiceStub(channel)
