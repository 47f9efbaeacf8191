"""Health, reflection, the HTTP side port, readiness and graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import make_settings, wait_for


async def test_health_serving_once_ready(sidecar: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "stigg.sidecar.v1.SidecarService"):
            resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert resp.status == health_pb2.HealthCheckResponse.SERVING


async def test_not_ready_until_change_stream_synced() -> None:
    source = InMemorySource()
    never_synced = _NeverSyncs(source)
    app = Sidecar(make_settings(startup_wait_seconds=None), never_synced)  # type: ignore[arg-type]
    starting = asyncio.ensure_future(app.start())
    await wait_for(lambda: app.http.port != 0 and app.grpc_port != 0, what="servers to bind")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def not_serving() -> bool:
            try:
                resp = await health.Check(health_pb2.HealthCheckRequest(service=""))
            except grpc.aio.AioRpcError:
                return False
            return bool(resp.status == health_pb2.HealthCheckResponse.NOT_SERVING)

        await wait_for(not_serving, what="NOT_SERVING before sync")
    assert not app.is_ready()
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
    await app.stop()


class _NeverSyncs:
    """A source whose change stream never starts: readiness must stay false."""

    def __init__(self, inner: InMemorySource) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def changes(self):  # type: ignore[no-untyped-def]
        await asyncio.Event().wait()
        yield  # pragma: no cover


async def test_reflection_lists_services(sidecar: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        await call.done_writing()
        responses = [r async for r in call]
    names = {s.name for s in responses[0].list_services_response.service}
    assert "stigg.sidecar.v1.SidecarService" in names
    assert "grpc.health.v1.Health" in names


def _v1(name: str) -> Any:
    """A genuine ``grpc.reflection.v1`` message class, as a v1-only client has."""
    pool = descriptor_pool.Default()
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"grpc.reflection.v1.{name}"))


async def test_reflection_v1_lists_and_describes_services(sidecar: Sidecar) -> None:
    request, response = _v1("ServerReflectionRequest"), _v1("ServerReflectionResponse")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        info = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        call = info(
            iter(
                [
                    request(list_services=""),
                    request(file_containing_symbol="stigg.sidecar.v1.SidecarService"),
                    request(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
                ]
            )
        )
        listed, sidecar_file, reflection_file = [r async for r in call]
    names = {s.name for s in listed.list_services_response.service}
    assert {
        "stigg.sidecar.v1.SidecarService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= names
    for answer, package in ((sidecar_file, "stigg.sidecar.v1"), (reflection_file, "grpc.reflection.v1")):
        assert not answer.HasField("error_response"), answer.error_response.error_message
        files = [FileDescriptorProto.FromString(raw) for raw in answer.file_descriptor_response.file_descriptor_proto]
        assert package in {f.package for f in files}


async def test_http_side_port(sidecar: Sidecar, source: InMemorySource) -> None:
    source.put(demo_snapshot("cust-1"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
        stub = pb_grpc.SidecarServiceStub(channel)
        await stub.GetBooleanEntitlement(
            pb.GetBooleanEntitlementRequest(customer_id="cust-1", feature_id="sso")
        )
        await stub.GetBooleanEntitlement(
            pb.GetBooleanEntitlementRequest(customer_id="cust-1", feature_id="nope")
        )
    base = f"http://127.0.0.1:{sidecar.http.port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/livez") as resp:
            assert resp.status == 200 and await resp.json() == {"status": "UP"}
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    assert 'sidecar_grpc_request_duration_seconds_count{method="GetBooleanEntitlement"} 2.0' in text
    assert 'sidecar_decisions_total{reason="NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION"} 1.0' in text
    assert 'sidecar_decisions_total{reason="GRANTED"} 1.0' in text
    assert "sidecar_cache_misses_total 1.0" in text
    assert "sidecar_cache_bytes " in text
    # prometheus-client's process and runtime collectors
    for name in ("process_cpu_seconds_total", "python_gc_objects_collected_total", "python_info{"):
        assert name in text, name


async def test_graceful_stop_finishes_inflight_calls(source: InMemorySource) -> None:
    source.put(demo_snapshot("cust-1"))
    source.gate = asyncio.Event()
    app = Sidecar(make_settings(shutdown_grace_seconds=5.0), source)
    await app.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
        stub = pb_grpc.SidecarServiceStub(channel)
        inflight = asyncio.ensure_future(
            stub.GetBooleanEntitlement(
                pb.GetBooleanEntitlementRequest(customer_id="cust-1", feature_id="sso")
            )
        )
        await wait_for(lambda: source.fetch_count == 1, what="the call to reach the source")
        stopping = asyncio.ensure_future(app.stop())
        await wait_for(lambda: not app.is_ready(), what="drain to begin")
        source.gate.set()
        resp = await inflight
        await stopping
    assert resp.has_access


def test_sigterm_drains_and_exits_zero(tmp_path: object) -> None:
    env = {**os.environ, "OFFLINE": "1", "PORT": "0", "HTTP_PORT": "0", "LOG_FORMAT": "json"}
    with subprocess.Popen(
        [sys.executable, "-m", "sidecar.main"], env=env, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + 20
            for line in proc.stderr:
                # The text older Stigg SDKs wait for when they spawn a sidecar themselves.
                if "Sidecar is ready" in line:
                    break
                assert time.monotonic() < deadline, "sidecar did not become ready"
            ready = json.loads(line)
            assert ready["event"] == "sidecar_ready"
            assert ready["message"] == "Sidecar is ready"
            assert ready["service"] == "entitlement-sidecar"
            assert ready["version"]
            assert ready["tiers"] == ["hot_cache", "fallback"]
            assert ready["upstream"] is None
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_bad_configuration_exits_two() -> None:
    env = {**os.environ, "OFFLINE": "1", "PORT": "99999", "ENTITLEMENTS_FALLBACK": "{nope"}
    proc = subprocess.run(
        [sys.executable, "-m", "sidecar.main"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert "PORT" in proc.stderr and "ENTITLEMENTS_FALLBACK" in proc.stderr


async def test_the_ready_line_names_the_tiers_a_read_tries() -> None:
    """Redis on: hot cache, the environment's Redis keys, upstream, then stale and fallback."""
    redis_on = make_settings(redis_prefix="prod", api_key="k")
    async with Sidecar(make_settings(offline=True), None) as offline:
        assert offline.tiers() == ["hot_cache", "fallback"]
    app = Sidecar(redis_on, InMemorySource())
    assert app.tiers() == ["hot_cache", "redis:prod", "upstream", "stale", "fallback"]
    assert Sidecar(make_settings(api_key="k"), InMemorySource()).tiers() == [
        "hot_cache",
        "upstream",
        "stale",
        "fallback",
    ]
