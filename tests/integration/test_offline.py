"""OFFLINE=1: fallbacks for reads, local acknowledgements for writes, no network."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import grpc
import pytest

from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from tests.conftest import AsyncStub

R = pb.AccessDeniedReason


@pytest.fixture
async def offline(offline_sidecar: Sidecar) -> AsyncIterator[AsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{offline_sidecar.grpc_port}") as channel:
        yield pb_grpc.SidecarServiceStub(channel)


async def test_reads_return_global_fallback(offline: AsyncStub) -> None:
    resp = await offline.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(customer_id="c", feature_id="fb-metered")
    )
    assert resp.has_access and resp.is_fallback
    assert resp.access_denied_reason == R.ACCESS_DENIED_REASON_UNKNOWN
    assert resp.entitlement.usage_limit == 1000 and not resp.entitlement.is_unlimited


async def test_unknown_feature_gets_builtin_default(offline: AsyncStub) -> None:
    resp = await offline.GetBooleanEntitlement(
        pb.GetBooleanEntitlementRequest(customer_id="c", feature_id="unknown")
    )
    assert not resp.has_access and resp.is_fallback
    assert resp.access_denied_reason == R.ACCESS_DENIED_REASON_UNKNOWN


async def test_per_request_fallback_beats_global(offline: AsyncStub) -> None:
    resp = await offline.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(
            customer_id="c",
            feature_id="fb-metered",
            options=pb.MeteredEntitlementOptions(
                fallback=pb.MeteredEntitlementFallback(has_access=False)
            ),
        )
    )
    # No merge with the global entry: its usage limit does not leak in.
    assert not resp.has_access and not resp.entitlement.HasField("usage_limit")


async def test_lists_are_synthetic_fallbacks(offline: AsyncStub) -> None:
    resp = await offline.GetEntitlements(pb.GetEntitlementsRequest(customer_id="c"))
    kinds = sorted(str(e.WhichOneof("entitlement")) for e in resp.entitlements)
    assert kinds == ["boolean", "enum", "metered"]
    assert not resp.HasField("access_denied_reason")


async def test_usage_acknowledged_locally(offline: AsyncStub) -> None:
    ack = await offline.ReportUsage(
        pb.ReportUsageRequest(customer_id="c", feature_id="f", value=3, resource_id="r")
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]{21}", ack.measurement_id)
    assert (ack.customer_id, ack.feature_id, ack.resource_id) == ("c", "f", "r")
    assert not ack.HasField("current_usage")
    bulk = await offline.ReportUsageBulk(
        pb.ReportUsageBulkRequest(
            usages=[pb.ReportUsageRequest(customer_id="c", feature_id=f, value=1) for f in "ab"]
        )
    )
    assert [u.feature_id for u in bulk.usages] == ["a", "b"]
    assert bulk.usages[0].measurement_id != bulk.usages[1].measurement_id


async def test_events_and_reload(offline: AsyncStub) -> None:
    await offline.ReportEvents(
        pb.ReportEventsRequest(
            events=[pb.Event(event_name="e", customer_id="c", idempotency_key="k")]
        )
    )
    resp = await offline.ReloadEntitlements(pb.ReloadEntitlementsRequest(customer_id="c"))
    assert resp.entitled_entity_exists
