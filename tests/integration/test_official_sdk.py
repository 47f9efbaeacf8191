"""Every RPC through Stigg's official Python SDK (betterproto + grpclib), field by field.

This is the compatibility promise: applications written against
``stigg-sidecar-sdk`` 8.1.0 talk to this sidecar unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from stigg_sidecar_sdk.generated.stigg.sidecar import v1 as sdk
from stigg_sidecar_sdk.sdk import Stigg

from sidecar.app import Sidecar
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot

R = sdk.AccessDeniedReason


@pytest.fixture
async def stigg(sidecar: Sidecar, source: InMemorySource) -> AsyncIterator[Stigg]:
    source.put(demo_snapshot("cust-1"))
    client = Stigg(
        sdk.ApiConfig(api_key="unused"),
        remote_sidecar_host="127.0.0.1",
        remote_sidecar_port=sidecar.grpc_port,
    )
    try:
        yield client
    finally:
        client.close()


async def test_get_boolean(stigg: Stigg) -> None:
    resp = await stigg.get_boolean_entitlement(
        sdk.GetBooleanEntitlementRequest(customer_id="cust-1", feature_id="sso")
    )
    assert resp.has_access is True and resp.is_fallback is False
    assert resp.access_denied_reason is None
    assert resp.entitlement.feature.id == "sso"
    assert resp.entitlement.feature.feature_type == sdk.FeatureType.FEATURE_TYPE_BOOLEAN


async def test_get_numeric(stigg: Stigg) -> None:
    resp = await stigg.get_numeric_entitlement(
        sdk.GetNumericEntitlementRequest(customer_id="cust-1", feature_id="seats")
    )
    assert resp.has_access and resp.entitlement.value == 5
    assert resp.entitlement.is_unlimited is False
    assert resp.entitlement.feature.units == "seat"


async def test_get_metered(stigg: Stigg) -> None:
    resp = await stigg.get_metered_entitlement(
        sdk.GetMeteredEntitlementRequest(
            customer_id="cust-1",
            feature_id="api-calls",
            options=sdk.MeteredEntitlementOptions(requested_usage=4),
        )
    )
    assert resp.has_access is False
    assert resp.access_denied_reason == R.ACCESS_DENIED_REASON_REQUESTED_USAGE_EXCEEDING_LIMIT
    assert resp.requested_usage == 4
    ent = resp.entitlement
    assert (ent.usage_limit, ent.current_usage, ent.has_soft_limit) == (10.0, 7.0, False)
    assert ent.reset_period == sdk.EntitlementResetPeriod.ENTITLEMENT_RESET_PERIOD_MONTH
    assert ent.usage_period_anchor == datetime(2026, 1, 31, tzinfo=UTC)
    assert ent.usage_period_end == datetime(2099, 1, 1, tzinfo=UTC)
    assert ent.feature.meter_type == sdk.MeterType.METER_TYPE_INCREMENTAL
    assert ent.feature.is_metered is True


async def test_get_enum(stigg: Stigg) -> None:
    resp = await stigg.get_enum_entitlement(
        sdk.GetEnumEntitlementRequest(
            customer_id="cust-1",
            feature_id="region",
            options=sdk.EnumEntitlementOptions(requested_values=["us"]),
        )
    )
    assert resp.has_access and resp.requested_values == ["us"]
    assert resp.entitlement.enum_values == ["eu", "us"]


async def test_get_entitlement_unified(stigg: Stigg) -> None:
    resp = await stigg.get_entitlement(
        sdk.GetEntitlementRequest(
            customer_id="cust-1",
            feature_id="api-calls",
            options=sdk.GetEntitlementOptions(requested_usage=3),
        )
    )
    assert resp.has_access
    assert resp.metered.current_usage == 7 and resp.metered.usage_limit == 10


async def test_get_entitlement_v2_feature_and_credit(stigg: Stigg) -> None:
    feature = await stigg.get_entitlement_v2(
        sdk.GetEntitlementV2Request(
            customer_id="cust-1",
            feature_id="ai-tokens",
            options=sdk.GetEntitlementOptions(requested_usage=31),
        )
    )
    assert feature.entitlement.has_access is False
    assert feature.entitlement.access_denied_reason == R.ACCESS_DENIED_REASON_INSUFFICIENT_CREDITS
    credit = await stigg.get_entitlement_v2(
        sdk.GetEntitlementV2Request(customer_id="cust-1", currency_id="ai-credits")
    )
    c = credit.entitlement.credit
    assert credit.entitlement.has_access
    assert (c.usage_limit, c.current_usage, c.remaining, c.has_soft_limit) == (100, 40, 60, False)
    assert c.currency.currency_id == "ai-credits" and c.currency.unit_singular == "credit"
    assert c.currency.additional_meta_data.fields["tier"].string_value == "gold"


async def test_get_entitlements_lists(stigg: Stigg) -> None:
    v1 = await stigg.get_entitlements(sdk.GetEntitlementsRequest(customer_id="cust-1"))
    v2 = await stigg.get_entitlements_state_v2(
        sdk.GetEntitlementsStateV2Request(customer_id="cust-1")
    )
    assert len(v1.entitlements) == 6 and v1.access_denied_reason is None
    assert len(v2.entitlements) == 7
    credits = [e.credit for e in v2.entitlements if e.is_set("credit")]
    assert [c.currency.currency_id for c in credits] == ["ai-credits"]
    ghost = await stigg.get_entitlements_state_v2(
        sdk.GetEntitlementsStateV2Request(customer_id="ghost")
    )
    assert ghost.access_denied_reason == R.ACCESS_DENIED_REASON_CUSTOMER_NOT_FOUND


async def test_report_usage_and_bulk(stigg: Stigg) -> None:
    ack = await stigg.report_usage(
        sdk.ReportUsageRequest(
            customer_id="cust-1",
            feature_id="api-calls",
            value=1,
            dimensions={"region": sdk.EventDimensionValue(string_value="eu")},
            timestamp=datetime(2026, 6, 1, tzinfo=UTC),
        )
    )
    assert ack.current_usage == 8 and ack.feature_id == "api-calls" and ack.measurement_id
    assert ack.usage_period_end == datetime(2099, 1, 1, tzinfo=UTC)
    bulk = await stigg.report_usage_bulk(
        sdk.ReportUsageBulkRequest(
            usages=[
                sdk.ReportUsageRequest(
                    customer_id="cust-1",
                    feature_id="api-calls",
                    value=2,
                    update_behavior=sdk.UsageUpdateBehavior.USAGE_UPDATE_BEHAVIOR_SET,
                ),
                sdk.ReportUsageRequest(customer_id="cust-1", feature_id="storage", value=1),
            ]
        )
    )
    assert [u.current_usage for u in bulk.usages] == [2, 151]
    after = await stigg.get_metered_entitlement(
        sdk.GetMeteredEntitlementRequest(customer_id="cust-1", feature_id="api-calls")
    )
    assert after.entitlement.current_usage == 2


async def test_report_events(stigg: Stigg, source: InMemorySource) -> None:
    await stigg.report_events(
        sdk.ReportEventsRequest(
            events=[
                sdk.Event(
                    event_name="login",
                    customer_id="cust-1",
                    idempotency_key="k-1",
                    dimensions={"ok": sdk.EventDimensionValue(boolean_value=True)},
                )
            ]
        )
    )
    assert [(e.event_name, e.idempotency_key, dict(e.dimensions)) for e in source.events] == [
        ("login", "k-1", {"ok": True})
    ]


async def test_reload(stigg: Stigg) -> None:
    resp = await stigg.reload_entitlements(sdk.ReloadEntitlementsRequest(customer_id="cust-1"))
    assert resp.entitled_entity_exists is True


async def test_invalid_argument_reaches_sdk(stigg: Stigg) -> None:
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError

    with pytest.raises(GRPCError) as err:
        await stigg.get_boolean_entitlement(
            sdk.GetBooleanEntitlementRequest(customer_id="", feature_id="x")
        )
    assert err.value.status == Status.INVALID_ARGUMENT
    assert (err.value.message or "").startswith("customer_id:")
