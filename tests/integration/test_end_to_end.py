"""The whole system: upstream -> sidecar (HTTP source + push channel) -> the official Stigg SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stigg_sidecar_sdk.generated.stigg.sidecar import v1 as sdk
from stigg_sidecar_sdk.sdk import Stigg

from sidecar.app import Sidecar
from sidecar.source.http_upstream import HttpUpstreamSource
from tests.conftest import make_settings, wait_for
from upstream.catalog import DEMO_CATALOG
from upstream.domain import CreditGrant, GrantType
from upstream.metering import Metering
from upstream.server import UpstreamServer
from upstream.service import SubscriptionRequest
from upstream.settings import UpstreamSettings

R = sdk.AccessDeniedReason
CATALOG = DEMO_CATALOG


@dataclass
class System:
    upstream: UpstreamServer
    sidecar: Sidecar
    stigg: Stigg

    @property
    def metering(self) -> Metering:
        return Metering(self.upstream.upstream)


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    settings = UpstreamSettings(
        api_key="k", port=0, database=str(tmp_path / "up.db"), catalog_path=CATALOG
    )
    async with UpstreamServer(settings) as upstream:
        source = HttpUpstreamSource(api_url=f"http://127.0.0.1:{upstream.port}", api_key="k")
        async with Sidecar(make_settings(), source) as sidecar:
            stigg = Stigg(
                sdk.ApiConfig(api_key="unused"),
                remote_sidecar_host="127.0.0.1",
                remote_sidecar_port=sidecar.grpc_port,
            )
            try:
                yield System(upstream, sidecar, stigg)
            finally:
                stigg.close()


async def metered(
    system: System, customer: str, feature: str, requested: float = 0
) -> sdk.GetMeteredEntitlementResponse:
    return await system.stigg.get_metered_entitlement(
        sdk.GetMeteredEntitlementRequest(
            customer_id=customer,
            feature_id=feature,
            options=sdk.MeteredEntitlementOptions(requested_usage=requested),
        )
    )


async def test_subscription_lifecycle(system: System) -> None:
    up = system.upstream.upstream
    up.provision_customer("acme", subscription=SubscriptionRequest("acme", "free"))
    first = await metered(system, "acme", "api-calls")
    assert first.has_access and first.entitlement.usage_limit == 1000

    ack = await system.stigg.report_usage(
        sdk.ReportUsageRequest(customer_id="acme", feature_id="api-calls", value=1000)
    )
    assert ack.current_usage == 1000
    at_limit = await metered(system, "acme", "api-calls", requested=1)
    assert not at_limit.has_access
    assert at_limit.access_denied_reason == R.ACCESS_DENIED_REASON_REQUESTED_USAGE_EXCEEDING_LIMIT

    # Upgrading to pro with the extra-calls add-on reaches the sidecar over the push channel.
    up.provision_subscription(
        SubscriptionRequest("acme", "pro", addons={"extra-api-calls": 1}, skip_trial=True)
    )

    async def upgraded() -> bool:
        limit = (await metered(system, "acme", "api-calls", 1)).entitlement.usage_limit
        return bool(limit == 150_000)

    await wait_for(upgraded, what="the plan change to reach the sidecar")
    after = await metered(system, "acme", "api-calls", requested=1)
    assert after.has_access

    subscription_id = up.get_customer("acme")[1][-1].id
    up.cancel_subscription(subscription_id)

    async def cancelled() -> bool:
        resp = await metered(system, "acme", "api-calls", 1)
        return bool(resp.access_denied_reason == R.ACCESS_DENIED_REASON_NO_ACTIVE_SUBSCRIPTION)

    await wait_for(cancelled, what="the cancellation to reach the sidecar")


async def test_credits_flow(system: System) -> None:
    up = system.upstream.upstream
    up.provision_customer("bolt", subscription=SubscriptionRequest("bolt", "free"))
    system.metering.grant_credits(
        CreditGrant(
            id="g1",
            customer_id="bolt",
            currency_id="ai-credits",
            amount=10,
            grant_type=GrantType.PAID,
        )
    )

    async def wallet_remaining() -> float:
        resp = await system.stigg.get_entitlement_v2(
            sdk.GetEntitlementV2Request(customer_id="bolt", currency_id="ai-credits")
        )
        return float(resp.entitlement.credit.remaining)

    async def has_ten() -> bool:
        return await wallet_remaining() == 10

    await wait_for(has_ten, what="the grant to reach the sidecar")
    ack = await system.stigg.report_usage(
        sdk.ReportUsageRequest(customer_id="bolt", feature_id="ai-tokens", value=8)
    )
    assert await wallet_remaining() == 2
    assert ack.current_usage == 8

    short = await system.stigg.get_entitlement_v2(
        sdk.GetEntitlementV2Request(
            customer_id="bolt",
            feature_id="ai-tokens",
            options=sdk.GetEntitlementOptions(requested_usage=3),
        )
    )
    assert not short.entitlement.has_access
    assert short.entitlement.access_denied_reason == R.ACCESS_DENIED_REASON_INSUFFICIENT_CREDITS

    system.metering.grant_credits(
        CreditGrant(
            id="g2",
            customer_id="bolt",
            currency_id="ai-credits",
            amount=5,
            grant_type=GrantType.PROMOTIONAL,
        )
    )

    async def allowed_again() -> bool:
        resp = await system.stigg.get_entitlement_v2(
            sdk.GetEntitlementV2Request(
                customer_id="bolt",
                feature_id="ai-tokens",
                options=sdk.GetEntitlementOptions(requested_usage=3),
            )
        )
        return bool(resp.entitlement.has_access)

    await wait_for(allowed_again, what="the second grant to reach the sidecar")
    assert await wallet_remaining() == 7


async def test_unknown_customer_and_reload(system: System) -> None:
    missing = await metered(system, "ghost", "api-calls")
    assert missing.access_denied_reason == R.ACCESS_DENIED_REASON_CUSTOMER_NOT_FOUND
    assert not missing.is_fallback
    system.upstream.upstream.provision_customer(
        "ghost", subscription=SubscriptionRequest("ghost", "free")
    )
    reload = await system.stigg.reload_entitlements(
        sdk.ReloadEntitlementsRequest(customer_id="ghost")
    )
    assert reload.entitled_entity_exists
    assert (await metered(system, "ghost", "api-calls")).has_access
