"""Usage reports through a frozen upstream (a real process stopped with SIGSTOP, then resumed
with SIGCONT) are counted once.

Measured before idempotency keys: 100 calls got UNAVAILABLE although upstream, once resumed,
recorded all 100, so a caller that retried counted twice. Now every attempt carries the report's
key: the sidecar's retries (after its attempts timed out against the frozen process) and the
caller's own retry with its key are answered with the first acknowledgement.
"""

from __future__ import annotations

import asyncio
import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sidecar.app import Sidecar
from sidecar.observability import Metrics
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.http_upstream import HttpUpstreamSource
from tests.conftest import make_settings, wait_for
from tests.integration.processes import Process, http_status, wait_until
from tests.redis_server import free_port

pytestmark = pytest.mark.timeout(120)
CALLS = 100
KEY = "right-key"


def _request(url: str, body: object | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"X-API-KEY": KEY, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Process, str]]:
    port = free_port()
    proc = Process(
        "upstream.main",
        {
            "SERVER_API_KEY": KEY,
            "UPSTREAM_PORT": str(port),
            "UPSTREAM_DATABASE": str(tmp_path / "upstream.db"),
        },
        tmp_path / "upstream.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_status(port, "/livez") == 200, "upstream to answer", proc)
        _request(f"{url}/v1/customers", {"id": "acme", "subscription": {"planId": "free"}})
        yield proc, url
    finally:
        proc.proc.send_signal(signal.SIGCONT)
        proc.kill()


def _usage(url: str) -> float:
    state = _request(f"{url}/v1/customers/acme/entitlements")
    assert isinstance(state, dict)
    return float(state["featureUsage"]["api-calls"]["currentUsage"])


async def test_reports_retried_through_a_frozen_upstream_are_counted_once(
    upstream: tuple[Process, str],
) -> None:
    proc, url = upstream
    metrics = Metrics()
    source = HttpUpstreamSource(
        api_url=url,
        api_key=KEY,
        timeout=0.5,
        retries=10,
        backoff_base=0.05,
        backoff_max=0.2,
        stream=False,
        on_usage_retry=metrics.usage_retries.inc,
    )
    async with (
        Sidecar(make_settings(push_enabled=False), source, metrics=metrics) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
    ):
        stub = pb_grpc.SidecarServiceStub(channel)
        # Half the callers give their own key, half leave it to the sidecar.
        reports = [
            pb.ReportUsageRequest(
                customer_id="acme",
                feature_id="api-calls",
                value=1,
                idempotency_key=f"call-{i}" if i % 2 else None,
            )
            for i in range(CALLS)
        ]
        proc.proc.send_signal(signal.SIGSTOP)
        calls = [asyncio.ensure_future(stub.ReportUsage(r, timeout=30)) for r in reports]
        # Every call has now timed out at least once: upstream holds requests it will apply
        # when it wakes up, and the sidecar is sending them again.
        retries = metrics.registry
        await wait_for(
            lambda: (retries.get_sample_value("sidecar_usage_retries_total") or 0) >= CALLS,
            timeout=30,
            what="every call to be retried",
        )
        proc.proc.send_signal(signal.SIGCONT)
        acks = await asyncio.gather(*calls)

        assert await asyncio.to_thread(_usage, url) == CALLS
        # The caller's own retry with its key: the first answer again, nothing counted.
        again = await asyncio.gather(*(stub.ReportUsage(r) for r in reports[1::2]))
        assert [a.measurement_id for a in again] == [a.measurement_id for a in acks[1::2]]
        assert await asyncio.to_thread(_usage, url) == CALLS
