"""USAGE_BUFFERING through a sidecar: a report the source cannot be reached for is spooled,
acknowledged with a local measurement id and reflected by the next read at once; the spool
drains when the source is back (same keys, in order) and the source's answer replaces the
local projection. A report the source refuses is never buffered; without buffering an
unreachable source is still UNAVAILABLE."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from entitlements.errors import SourceRejected, SourceUnavailable
from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import AsyncStub, make_settings, wait_for

Harness = tuple[Sidecar, AsyncStub, InMemorySource]


async def _sidecar(tmp_path: Path, *, buffering: bool) -> AsyncIterator[Harness]:
    source = InMemorySource()
    source.put(demo_snapshot("c"))
    settings = make_settings(spool_dir=str(tmp_path / "spool"), usage_buffering=buffering)
    async with (
        Sidecar(settings, source) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
    ):
        yield sidecar, pb_grpc.SidecarServiceStub(channel), source


@pytest.fixture
async def buffering(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _sidecar(tmp_path, buffering=True):
        yield harness


@pytest.fixture
async def not_buffering(tmp_path: Path) -> AsyncIterator[Harness]:
    async for harness in _sidecar(tmp_path, buffering=False):
        yield harness


def sample(sidecar: Sidecar, name: str) -> float:
    return sidecar.metrics.registry.get_sample_value(name) or 0.0


async def usage_of(stub: AsyncStub, feature_id: str = "api-calls") -> float:
    answer = await stub.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(customer_id="c", feature_id=feature_id)
    )
    return float(answer.entitlement.current_usage)


def report(
    key: str, value: float, *, set_it: bool = False, feature_id: str = "api-calls"
) -> pb.ReportUsageRequest:
    return pb.ReportUsageRequest(
        customer_id="c",
        feature_id=feature_id,
        value=value,
        idempotency_key=key,
        update_behavior=pb.USAGE_UPDATE_BEHAVIOR_SET if set_it else pb.USAGE_UPDATE_BEHAVIOR_DELTA,
    )


async def test_unreachable_reports_are_acknowledged_read_back_and_shipped_once_after(
    buffering: Harness,
) -> None:
    sidecar, stub, source = buffering
    assert await usage_of(stub) == 7  # cached before the outage
    source.failure = SourceUnavailable("connection refused")

    first = await stub.ReportUsage(report("k-1", 2))
    assert len(first.measurement_id) == 21 and first.current_usage == 9
    assert await usage_of(stub) == 9  # read-your-writes, DELTA added
    await stub.ReportUsage(report("k-2", 1))
    assert await usage_of(stub) == 10
    await stub.ReportUsage(report("k-3", 4, set_it=True))
    assert await usage_of(stub) == 4  # SET set it
    await stub.ReportUsage(report("k-4", 3))
    assert await usage_of(stub) == 7
    # The caller's retry of a buffered report (its key) is buffered again: upstream counts
    # the key once when both are shipped.
    await stub.ReportUsage(report("k-4", 3))
    assert sample(sidecar, "sidecar_spool_usage_reports") == 5
    assert sample(sidecar, "sidecar_usage_buffered_total") == 5
    held = source.get("c")
    assert held is not None and held.feature_usage["api-calls"].current_usage == 7

    source.failure = None
    await wait_for(
        lambda: sample(sidecar, "sidecar_spool_usage_reports") == 0, timeout=15, what="drain"
    )
    held = source.get("c")
    assert held is not None
    # 7 + 2 + 1, SET 4, + 3 once: in order, each key once.
    assert held.feature_usage["api-calls"].current_usage == 7
    assert sample(sidecar, "sidecar_spool_usage_shipped_total") == 5
    # The source's answer replaced the projection (its version, its value).
    cached = sidecar.cache.peek(("c", None))
    assert cached is not None
    assert cached.snapshot.feature_usage["api-calls"] == held.feature_usage["api-calls"]
    assert await usage_of(stub) == 7


async def test_a_credit_backed_report_burns_the_wallet_locally(buffering: Harness) -> None:
    _, stub, source = buffering
    assert await usage_of(stub) == 7
    source.failure = SourceUnavailable("timeout")
    await stub.ReportUsage(report("k-1", 5, feature_id="ai-tokens"))  # rate 2: 10 credits
    wallet = await stub.GetEntitlementV2(
        pb.GetEntitlementV2Request(customer_id="c", currency_id="ai-credits")
    )
    assert wallet.entitlement.credit.remaining == 100 - 40 - 10


async def test_bulk_reports_are_buffered_together(buffering: Harness) -> None:
    sidecar, stub, source = buffering
    assert await usage_of(stub) == 7
    source.failure = SourceUnavailable("503")
    await stub.ReportUsageBulk(
        pb.ReportUsageBulkRequest(
            usages=[
                pb.ReportUsageRequest(customer_id="c", feature_id="api-calls", value=1),
                pb.ReportUsageRequest(customer_id="c", feature_id="storage", value=5),
            ]
        )
    )
    assert await usage_of(stub) == 8 and await usage_of(stub, "storage") == 155
    source.failure = None
    await wait_for(
        lambda: sample(sidecar, "sidecar_spool_usage_reports") == 0, timeout=15, what="drain"
    )
    held = source.get("c")
    assert held is not None
    assert held.feature_usage["api-calls"].current_usage == 8
    assert held.feature_usage["storage"].current_usage == 155


async def test_a_refused_report_is_never_buffered(buffering: Harness) -> None:
    sidecar, stub, source = buffering
    assert await usage_of(stub) == 7
    source.failure = SourceRejected("unknown feature")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReportUsage(report("k-1", 2))
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert sample(sidecar, "sidecar_usage_buffered_total") == 0
    assert sidecar.spool is not None and sidecar.spool.usage.count == 0
    assert await usage_of(stub) == 7


async def test_without_buffering_an_unreachable_source_is_unavailable(
    not_buffering: Harness,
) -> None:
    sidecar, stub, source = not_buffering
    assert await usage_of(stub) == 7
    source.failure = SourceUnavailable("connection refused")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ReportUsage(report("k-1", 2))
    assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
    assert sidecar.spool is not None and sidecar.spool.usage.count == 0
    assert await usage_of(stub) == 7


async def test_a_full_spool_leaves_the_report_with_the_caller(tmp_path: Path) -> None:
    source = InMemorySource()
    source.put(demo_snapshot("c"))
    settings = make_settings(
        spool_dir=str(tmp_path / "spool"), usage_buffering=True, spool_max_bytes=1024
    )
    async with (
        Sidecar(settings, source) as sidecar,
        grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
    ):
        stub = pb_grpc.SidecarServiceStub(channel)
        source.failure = SourceUnavailable("connection refused")
        taken = 0

        async def report_until_refused() -> None:
            nonlocal taken
            for i in range(100):
                await stub.ReportUsage(report(f"k-{i}", 1))
                taken += 1

        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await report_until_refused()
        assert raised.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "SPOOL_MAX_BYTES" in (raised.value.details() or "")
        assert sidecar.spool is not None and 0 < taken == sidecar.spool.usage.count
        source.failure = None
        await wait_for(
            lambda: sample(sidecar, "sidecar_spool_usage_reports") == 0, timeout=15, what="drain"
        )
        held = source.get("c")
        assert held is not None and held.feature_usage["api-calls"].current_usage == 7 + taken
