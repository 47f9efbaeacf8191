"""ReportEvents through a sidecar with its spool: acknowledged once on disk, shipped in the
background, kept while the source is down, refused whole with RESOURCE_EXHAUSTED when full."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from structlog.testing import capture_logs

from entitlements.errors import SourceUnavailable
from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.memory import InMemorySource
from sidecar.spool.store import EventSpool
from tests.conftest import AsyncStub, make_settings, wait_for


def events(*keys: str) -> pb.ReportEventsRequest:
    return pb.ReportEventsRequest(
        events=[pb.Event(event_name="login", customer_id="c", idempotency_key=k) for k in keys]
    )


@pytest.fixture
async def spooling(tmp_path: Path) -> AsyncIterator[tuple[Sidecar, AsyncStub, InMemorySource]]:
    source = InMemorySource()
    settings = make_settings(spool_dir=str(tmp_path / "spool"), spool_max_bytes=2000)
    async with (
        Sidecar(settings, source) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
    ):
        yield sidecar, pb_grpc.SidecarServiceStub(channel), source


def sample(sidecar: Sidecar, name: str) -> float:
    return sidecar.metrics.registry.get_sample_value(name) or 0.0


async def test_events_are_acknowledged_while_the_source_is_down_and_shipped_after(
    spooling: tuple[Sidecar, AsyncStub, InMemorySource],
) -> None:
    sidecar, stub, source = spooling
    source.failure = SourceUnavailable("upstream down")

    await stub.ReportEvents(events("k-1", "k-2"))
    await stub.ReportEvents(events("k-3"))

    assert sample(sidecar, "sidecar_spool_events") == 3
    assert source.events == []
    source.failure = None
    await wait_for(lambda: sample(sidecar, "sidecar_spool_events") == 0, what="the drain")
    assert [e.idempotency_key for e in source.events] == ["k-1", "k-2", "k-3"]
    assert sample(sidecar, "sidecar_spool_shipped_total") == 3


async def test_a_full_spool_refuses_the_whole_batch_with_resource_exhausted(
    spooling: tuple[Sidecar, AsyncStub, InMemorySource],
) -> None:
    sidecar, stub, source = spooling
    source.failure = SourceUnavailable("upstream down")
    taken = 0
    refused: grpc.aio.AioRpcError | None = None
    for i in range(0, 200, 4):
        try:
            await stub.ReportEvents(events(*(f"key-{j:03d}" for j in range(i, i + 4))))
        except grpc.aio.AioRpcError as exc:
            refused = exc
            break
        taken += 4
    assert refused is not None, "a 2,000-byte spool took 200 events"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "SPOOL_MAX_BYTES" in (refused.details() or "")
    # Nothing of the refused batch was kept: the spool holds exactly what was acknowledged.
    assert sample(sidecar, "sidecar_spool_events") == taken
    assert sample(sidecar, "sidecar_spool_full_total") == 1


async def test_a_stop_ships_what_the_spool_holds_within_the_grace_period(tmp_path: Path) -> None:
    source = InMemorySource()
    settings = make_settings(spool_dir=str(tmp_path / "spool"), shutdown_grace_seconds=30)
    sidecar = Sidecar(settings, source)
    await sidecar.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
            stub = pb_grpc.SidecarServiceStub(channel)
            source.failure = SourceUnavailable("upstream down")
            await stub.ReportEvents(events("k-1", "k-2", "k-3"))
            await wait_for(
                lambda: sample(sidecar, "sidecar_spool_ship_retries_total") >= 1,
                what="a failed attempt to ship",
            )
        # Upstream is back while the shipper sits in its backoff pause; the pod is deleted.
        source.failure = None
    finally:
        with capture_logs() as logs:
            await sidecar.stop()
    assert [e.idempotency_key for e in source.events] == ["k-1", "k-2", "k-3"]
    assert "spool_drained_on_stop" in [line["event"] for line in logs]


async def test_a_stop_with_upstream_down_waits_the_grace_period_and_keeps_the_events(
    tmp_path: Path,
) -> None:
    source = InMemorySource()
    grace = 0.5
    settings = make_settings(spool_dir=str(tmp_path / "spool"), shutdown_grace_seconds=grace)
    sidecar = Sidecar(settings, source)
    await sidecar.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
            source.failure = SourceUnavailable("upstream down")
            await pb_grpc.SidecarServiceStub(channel).ReportEvents(events("k-1", "k-2"))
    finally:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await sidecar.stop()
        took = loop.time() - started
    assert grace <= took < grace + 5  # bounded by the grace period
    assert source.events == []
    kept = EventSpool(tmp_path / "spool", 1 << 20)
    await kept.open()
    try:
        assert kept.events == 2  # for the next start
    finally:
        await kept.close()
