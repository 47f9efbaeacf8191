"""Every read RPC through grpcio stubs generated from our proto, against a live server."""

from __future__ import annotations

import grpc
import pytest

from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot
from tests.conftest import AsyncStub as Stub

R = pb.AccessDeniedReason


@pytest.fixture
def customer(source: InMemorySource) -> str:
    source.put(demo_snapshot("cust-1"))
    return "cust-1"


async def test_boolean_granted(stub: Stub, customer: str) -> None:
    resp = await stub.GetBooleanEntitlement(
        pb.GetBooleanEntitlementRequest(customer_id=customer, feature_id="sso")
    )
    assert resp.has_access and not resp.is_fallback
    assert not resp.HasField("access_denied_reason")
    assert resp.entitlement.feature.id == "sso"
    assert resp.entitlement.feature.feature_type == pb.FEATURE_TYPE_BOOLEAN


async def test_numeric_value_and_units(stub: Stub, customer: str) -> None:
    resp = await stub.GetNumericEntitlement(
        pb.GetNumericEntitlementRequest(customer_id=customer, feature_id="seats")
    )
    assert resp.has_access
    assert resp.entitlement.value == 5
    assert resp.entitlement.feature.units_plural == "seats"
    assert not resp.entitlement.feature.is_metered


@pytest.mark.parametrize(
    ("requested", "granted"),
    [(None, True), (3.0, True), (3.5, False), (0.0, True)],
    ids=["omitted", "exactly-to-limit", "over-limit", "zero"],
)
async def test_metered_limit_is_inclusive(
    stub: Stub, customer: str, requested: float | None, granted: bool
) -> None:
    options = pb.MeteredEntitlementOptions()
    if requested is not None:
        options.requested_usage = requested
    resp = await stub.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(
            customer_id=customer, feature_id="api-calls", options=options
        )
    )
    assert resp.has_access is granted
    assert resp.requested_usage == (requested or 0.0)
    ent = resp.entitlement
    assert (ent.usage_limit, ent.current_usage, ent.is_unlimited) == (10.0, 7.0, False)
    assert ent.reset_period == pb.ENTITLEMENT_RESET_PERIOD_MONTH
    assert ent.usage_period_end == ent.next_reset_date
    assert ent.HasField("usage_period_anchor") and ent.feature.is_metered
    if not granted:
        assert resp.access_denied_reason == R.ACCESS_DENIED_REASON_REQUESTED_USAGE_EXCEEDING_LIMIT


async def test_soft_limit_grants_over_limit(stub: Stub, customer: str) -> None:
    resp = await stub.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(
            customer_id=customer,
            feature_id="storage",
            options=pb.MeteredEntitlementOptions(requested_usage=1000),
        )
    )
    assert resp.has_access and resp.entitlement.has_soft_limit
    assert resp.entitlement.current_usage == 150


async def test_enum_values(stub: Stub, customer: str) -> None:
    ok = await stub.GetEnumEntitlement(
        pb.GetEnumEntitlementRequest(
            customer_id=customer,
            feature_id="region",
            options=pb.EnumEntitlementOptions(requested_values=["eu"]),
        )
    )
    bad = await stub.GetEnumEntitlement(
        pb.GetEnumEntitlementRequest(
            customer_id=customer,
            feature_id="region",
            options=pb.EnumEntitlementOptions(requested_values=["eu", "apac"]),
        )
    )
    assert ok.has_access and list(ok.entitlement.enum_values) == ["eu", "us"]
    assert list(ok.requested_values) == ["eu"]
    assert not bad.has_access
    assert bad.access_denied_reason == R.ACCESS_DENIED_REASON_REQUESTED_VALUES_MISMATCH
    assert list(bad.requested_values) == ["eu", "apac"]


async def test_type_mismatch_serves_fallback(stub: Stub, customer: str) -> None:
    resp = await stub.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(
            customer_id=customer,
            feature_id="sso",
            options=pb.MeteredEntitlementOptions(
                fallback=pb.MeteredEntitlementFallback(has_access=True, usage_limit=3)
            ),
        )
    )
    assert resp.has_access and resp.is_fallback
    assert resp.access_denied_reason == R.ACCESS_DENIED_REASON_FEATURE_TYPE_MISMATCH
    assert resp.entitlement.usage_limit == 3


async def test_missing_feature_and_unknown_customer(stub: Stub, customer: str) -> None:
    missing = await stub.GetBooleanEntitlement(
        pb.GetBooleanEntitlementRequest(customer_id=customer, feature_id="nope")
    )
    unknown = await stub.GetBooleanEntitlement(
        pb.GetBooleanEntitlementRequest(customer_id="ghost", feature_id="sso")
    )
    assert not missing.has_access and not missing.is_fallback
    assert (
        missing.access_denied_reason
        == R.ACCESS_DENIED_REASON_NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION
    )
    assert unknown.access_denied_reason == R.ACCESS_DENIED_REASON_CUSTOMER_NOT_FOUND


@pytest.mark.parametrize(
    ("feature_id", "variant"),
    [("sso", "boolean"), ("seats", "numeric"), ("api-calls", "metered"), ("region", "enum")],
)
async def test_unified_get_entitlement_picks_variant(
    stub: Stub, customer: str, feature_id: str, variant: str
) -> None:
    resp = await stub.GetEntitlement(
        pb.GetEntitlementRequest(customer_id=customer, feature_id=feature_id)
    )
    assert resp.has_access and resp.WhichOneof("entitlement") == variant
    assert getattr(resp, variant).feature.id == feature_id


async def test_v2_credit_backed_feature_and_wallet(stub: Stub, customer: str) -> None:
    # 100 granted, 40 consumed, 2 credits per token: 30 tokens fit, 31 do not.
    fits = await stub.GetEntitlementV2(
        pb.GetEntitlementV2Request(
            customer_id=customer,
            feature_id="ai-tokens",
            options=pb.GetEntitlementOptions(requested_usage=30),
        )
    )
    short = await stub.GetEntitlementV2(
        pb.GetEntitlementV2Request(
            customer_id=customer,
            feature_id="ai-tokens",
            options=pb.GetEntitlementOptions(requested_usage=31),
        )
    )
    wallet = await stub.GetEntitlementV2(
        pb.GetEntitlementV2Request(customer_id=customer, currency_id="ai-credits")
    )
    assert fits.entitlement.has_access
    assert not short.entitlement.has_access
    assert short.entitlement.access_denied_reason == R.ACCESS_DENIED_REASON_INSUFFICIENT_CREDITS
    credit = wallet.entitlement.credit
    assert wallet.entitlement.has_access
    assert (credit.usage_limit, credit.current_usage, credit.remaining) == (100, 40, 60)
    assert credit.currency.display_name == "ai-credits credits"
    assert credit.currency.unit_plural == "credits"
    assert credit.currency.additional_meta_data["tier"] == "gold"


async def test_v2_unknown_currency(stub: Stub, customer: str) -> None:
    resp = await stub.GetEntitlementV2(
        pb.GetEntitlementV2Request(customer_id=customer, currency_id="gold-coins")
    )
    assert not resp.entitlement.has_access and not resp.entitlement.is_fallback
    assert resp.entitlement.access_denied_reason == R.ACCESS_DENIED_REASON_ENTITLEMENT_NOT_FOUND


async def test_lists(stub: Stub, customer: str) -> None:
    v1 = await stub.GetEntitlements(pb.GetEntitlementsRequest(customer_id=customer))
    v2 = await stub.GetEntitlementsStateV2(pb.GetEntitlementsStateV2Request(customer_id=customer))
    v1_kinds = sorted(str(e.WhichOneof("entitlement")) for e in v1.entitlements)
    v2_kinds = sorted(str(e.WhichOneof("entitlement")) for e in v2.entitlements)
    assert v1_kinds == ["boolean", "enum", "metered", "metered", "metered", "numeric"]
    assert v2_kinds == sorted([*v1_kinds, "credit"])
    assert not v1.HasField("access_denied_reason")
    assert all(e.has_access and not e.is_fallback for e in v2.entitlements)


async def test_list_carries_customer_level_reason(stub: Stub, customer: str) -> None:
    resp = await stub.GetEntitlementsStateV2(pb.GetEntitlementsStateV2Request(customer_id="ghost"))
    assert list(resp.entitlements) == []
    assert resp.access_denied_reason == R.ACCESS_DENIED_REASON_CUSTOMER_NOT_FOUND


async def test_resource_scoped_state_is_separate(
    stub: Stub, source: InMemorySource, customer: str
) -> None:
    source.put(demo_snapshot("cust-1", resource_id="site-a"))
    scoped = await stub.GetBooleanEntitlement(
        pb.GetBooleanEntitlementRequest(
            customer_id=customer, feature_id="sso", resource_id="site-a"
        )
    )
    other = await stub.GetBooleanEntitlement(
        pb.GetBooleanEntitlementRequest(
            customer_id=customer, feature_id="sso", resource_id="site-b"
        )
    )
    assert scoped.has_access
    assert other.access_denied_reason == R.ACCESS_DENIED_REASON_CUSTOMER_RESOURCE_NOT_FOUND


async def test_hot_cache_serves_repeat_reads(
    stub: Stub, sidecar: Sidecar, source: InMemorySource, customer: str
) -> None:
    request = pb.GetBooleanEntitlementRequest(customer_id=customer, feature_id="sso")
    for _ in range(5):
        await stub.GetBooleanEntitlement(request)
    assert source.fetch_count == 1
    assert sidecar.cache.stats.hits >= 4


async def test_per_request_fallback_on_source_failure(stub: Stub, source: InMemorySource) -> None:
    from entitlements.errors import SourceUnavailable

    source.failure = SourceUnavailable("upstream down")
    resp = await stub.GetNumericEntitlement(
        pb.GetNumericEntitlementRequest(
            customer_id="cust-x",
            feature_id="seats",
            options=pb.NumericEntitlementOptions(
                fallback=pb.NumericEntitlementFallback(has_access=True, value=3)
            ),
        )
    )
    assert resp.has_access and resp.is_fallback and resp.entitlement.value == 3
    assert resp.access_denied_reason == R.ACCESS_DENIED_REASON_UNKNOWN


async def test_global_fallback_v2_drops_reason(stub: Stub, source: InMemorySource) -> None:
    from entitlements.errors import SourceUnavailable

    source.failure = SourceUnavailable("upstream down")
    v2 = await stub.GetEntitlementV2(
        pb.GetEntitlementV2Request(customer_id="cust-x", feature_id="fb-metered")
    )
    typed = await stub.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(customer_id="cust-x", feature_id="fb-metered")
    )
    assert v2.entitlement.is_fallback and v2.entitlement.has_access
    assert not v2.entitlement.HasField("access_denied_reason")
    assert v2.entitlement.metered.usage_limit == 1000
    assert typed.has_access and typed.access_denied_reason == R.ACCESS_DENIED_REASON_UNKNOWN


async def test_stale_entry_beats_fallback(
    stub: Stub, source: InMemorySource, customer: str
) -> None:
    from entitlements.errors import SourceUnavailable

    request = pb.GetBooleanEntitlementRequest(customer_id=customer, feature_id="sso")
    assert (await stub.GetBooleanEntitlement(request)).has_access
    source.failure = SourceUnavailable("upstream down")
    resp = await stub.GetBooleanEntitlement(request)
    assert resp.has_access and not resp.is_fallback


async def test_errors_are_not_raised_for_reads(stub: Stub, source: InMemorySource) -> None:
    from entitlements.errors import SourceUnavailable

    source.failure = SourceUnavailable("upstream down")
    try:
        resp = await stub.GetEntitlementsStateV2(
            pb.GetEntitlementsStateV2Request(customer_id="cust-x")
        )
    except grpc.aio.AioRpcError as exc:  # pragma: no cover - the assertion below explains
        pytest.fail(f"read surfaced {exc.code()}")
    ids = sorted(
        e.metered.feature.id or e.boolean.feature.id or e.enum.feature.id for e in resp.entitlements
    )
    assert ids == ["fb-flag", "fb-metered", "fb-tier"]
    assert all(e.is_fallback for e in resp.entitlements)
