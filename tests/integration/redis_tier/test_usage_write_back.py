"""Usage reported through one sidecar reaches Redis and, through it, every other sidecar."""

from __future__ import annotations

import grpc
import pytest

from entitlements.errors import SourceUnavailable
from sidecar.pb import sidecar_pb2 as pb
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import wait_for
from tests.integration.redis_tier.conftest import RunningSidecar, Tiers, metric
from tests.redis_server import RedisServer


async def _usage_is(sidecar: RunningSidecar, customer_id: str, expected: float) -> bool:
    return await sidecar.usage(customer_id) == expected


async def test_report_usage_reaches_redis_and_other_sidecars(
    tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1"))
    reporter = await tiers.sidecar(upstream)
    reader = await tiers.sidecar(upstream)
    assert await reporter.usage("cust-1") == 7
    assert await reader.usage("cust-1") == 7, "now held in the reader's hot cache"

    ack = await reporter.stub.ReportUsage(
        pb.ReportUsageRequest(customer_id="cust-1", feature_id="api-calls", value=2)
    )
    assert ack.current_usage == 9
    credit = await reporter.stub.ReportUsage(
        pb.ReportUsageRequest(customer_id="cust-1", feature_id="ai-tokens", value=5)
    )
    assert credit.HasField("credit")

    stored = await (await tiers.store()).get("cust-1", None)
    assert stored is not None
    assert stored.feature_usage["api-calls"].current_usage == 9
    assert stored.credit_usage["ai-credits"].current_usage == 50
    await wait_for(lambda: _usage_is(reader, "cust-1", 9), what="the reader to see the usage")
    assert await reporter.usage("cust-1") == 9
    assert upstream.fetch_count == 1, "both sidecars read the new usage from Redis"


async def test_report_usage_succeeds_with_redis_down(
    own_redis: RedisServer, own_tiers: Tiers, upstream: InMemorySource
) -> None:
    upstream.put(demo_snapshot("cust-1"))
    sidecar = await own_tiers.sidecar(upstream)
    assert await sidecar.usage("cust-1") == 7
    own_redis.kill()
    ack = await sidecar.stub.ReportUsage(
        pb.ReportUsageRequest(customer_id="cust-1", feature_id="api-calls", value=1)
    )
    assert ack.current_usage == 8
    assert metric(sidecar.metrics, "sidecar_redis_client_errors_total") >= 1
    # Upstream's own failure still reaches the caller: only Redis failures are absorbed.
    upstream.failure = SourceUnavailable("upstream down")
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await sidecar.stub.ReportUsage(
            pb.ReportUsageRequest(customer_id="cust-1", feature_id="api-calls", value=1)
        )
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
