"""Malformed requests get INVALID_ARGUMENT naming the field, and nothing else happens."""

from __future__ import annotations

import math
from typing import Any

import grpc
import pytest

from sidecar.pb import sidecar_pb2 as pb
from sidecar.source.memory import InMemorySource
from tests.conftest import AsyncStub as Stub

usage = pb.ReportUsageRequest
CASES: list[tuple[str, str, Any, str]] = [
    (
        "boolean-empty-customer",
        "GetBooleanEntitlement",
        pb.GetBooleanEntitlementRequest(feature_id="f"),
        "customer_id",
    ),
    (
        "numeric-empty-feature",
        "GetNumericEntitlement",
        pb.GetNumericEntitlementRequest(customer_id="c"),
        "feature_id",
    ),
    (
        "metered-negative-usage",
        "GetMeteredEntitlement",
        pb.GetMeteredEntitlementRequest(
            customer_id="c",
            feature_id="f",
            options=pb.MeteredEntitlementOptions(requested_usage=-1),
        ),
        "options.requested_usage",
    ),
    (
        "metered-nan-usage",
        "GetMeteredEntitlement",
        pb.GetMeteredEntitlementRequest(
            customer_id="c",
            feature_id="f",
            options=pb.MeteredEntitlementOptions(requested_usage=math.nan),
        ),
        "options.requested_usage",
    ),
    (
        "metered-inf-usage",
        "GetMeteredEntitlement",
        pb.GetMeteredEntitlementRequest(
            customer_id="c",
            feature_id="f",
            options=pb.MeteredEntitlementOptions(requested_usage=math.inf),
        ),
        "options.requested_usage",
    ),
    (
        "enum-empty-customer",
        "GetEnumEntitlement",
        pb.GetEnumEntitlementRequest(feature_id="f"),
        "customer_id",
    ),
    (
        "unified-empty-feature",
        "GetEntitlement",
        pb.GetEntitlementRequest(customer_id="c"),
        "feature_id",
    ),
    (
        "unified-too-long-id",
        "GetEntitlement",
        pb.GetEntitlementRequest(customer_id="c" * 300, feature_id="f"),
        "customer_id",
    ),
    (
        "v2-neither",
        "GetEntitlementV2",
        pb.GetEntitlementV2Request(customer_id="c"),
        "feature_id/currency_id",
    ),
    (
        "v2-both",
        "GetEntitlementV2",
        pb.GetEntitlementV2Request(customer_id="c", feature_id="f", currency_id="x"),
        "feature_id/currency_id",
    ),
    (
        "v2-credit-negative",
        "GetEntitlementV2",
        pb.GetEntitlementV2Request(
            customer_id="c", currency_id="x", options=pb.GetEntitlementOptions(requested_usage=-2)
        ),
        "options.requested_usage",
    ),
    (
        "v2-empty-customer",
        "GetEntitlementV2",
        pb.GetEntitlementV2Request(feature_id="f"),
        "customer_id",
    ),
    ("list-empty-customer", "GetEntitlements", pb.GetEntitlementsRequest(), "customer_id"),
    (
        "state-empty-customer",
        "GetEntitlementsStateV2",
        pb.GetEntitlementsStateV2Request(),
        "customer_id",
    ),
    ("usage-empty-feature", "ReportUsage", usage(customer_id="c", value=1), "feature_id"),
    ("usage-nan", "ReportUsage", usage(customer_id="c", feature_id="f", value=math.nan), "value"),
    (
        "usage-negative-set",
        "ReportUsage",
        usage(
            customer_id="c", feature_id="f", value=-1, update_behavior=pb.USAGE_UPDATE_BEHAVIOR_SET
        ),
        "value",
    ),
    (
        "usage-long-key",
        "ReportUsage",
        usage(customer_id="c", feature_id="f", value=1, idempotency_key="k" * 257),
        "idempotency_key",
    ),
    (
        "bulk-item-long-key",
        "ReportUsageBulk",
        pb.ReportUsageBulkRequest(
            usages=[usage(customer_id="c", feature_id="f", value=1, idempotency_key="k" * 257)]
        ),
        "usages[0].idempotency_key",
    ),
    (
        "bulk-oversized",
        "ReportUsageBulk",
        pb.ReportUsageBulkRequest(usages=[usage(customer_id="c", feature_id="f", value=1)] * 101),
        "usages",
    ),
    (
        "bulk-item",
        "ReportUsageBulk",
        pb.ReportUsageBulkRequest(
            usages=[
                usage(customer_id="c", feature_id="f", value=1),
                usage(customer_id="", feature_id="f", value=1),
            ]
        ),
        "usages[1].customer_id",
    ),
    (
        "events-oversized",
        "ReportEvents",
        pb.ReportEventsRequest(
            events=[pb.Event(event_name="e", customer_id="c", idempotency_key="k")] * 1001
        ),
        "events",
    ),
    (
        "events-missing-key",
        "ReportEvents",
        pb.ReportEventsRequest(events=[pb.Event(event_name="e", customer_id="c")]),
        "events[0].idempotency_key",
    ),
    ("reload-empty-customer", "ReloadEntitlements", pb.ReloadEntitlementsRequest(), "customer_id"),
]


@pytest.mark.parametrize(
    ("method", "request_", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_invalid_argument_names_field(
    stub: Stub, source: InMemorySource, method: str, request_: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(stub, method)(request_)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(f"{field}:")
    # Nothing reached the source: no fetch, no forwarded usage or events.
    assert source.fetch_count == 0 and source.events == []


async def test_oversized_message_is_refused(stub: Stub) -> None:
    huge = pb.ReportEventsRequest(
        events=[pb.Event(event_name="e" * 200, customer_id="c", idempotency_key="k" * 5000)] * 1000
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ReportEvents(huge)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
