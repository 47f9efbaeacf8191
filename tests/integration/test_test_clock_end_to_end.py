"""A customer walked through a month in seconds: upstream's test clock moves over its HTTP API,
and a sidecar (no Redis tier, following the change stream, its own clock left real) shows what
upstream published: usage back to 0 in the new period, a trial that ended, a promotion gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.http_upstream import HttpUpstreamSource
from tests.conftest import make_settings, wait_for
from upstream.server import UpstreamServer
from upstream.settings import UpstreamSettings

KEY = "k"


@dataclass
class System:
    upstream: UpstreamServer
    sidecar: Sidecar
    stub: Any  # the generated SidecarServiceStub
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.http.request(method, path, json=body) as response:
            answer = await response.json()
            assert response.status == status, (method, path, response.status, answer)
            return answer

    async def advance(self, **body: Any) -> Any:
        return await self.call("POST", "/v1/test-clock/advance", body)

    async def metered(self, customer: str, feature: str) -> pb.GetMeteredEntitlementResponse:
        request = pb.GetMeteredEntitlementRequest(customer_id=customer, feature_id=feature)
        answer: pb.GetMeteredEntitlementResponse = await self.stub.GetMeteredEntitlement(request)
        return answer

    async def boolean(self, customer: str, feature: str) -> pb.GetBooleanEntitlementResponse:
        request = pb.GetBooleanEntitlementRequest(customer_id=customer, feature_id=feature)
        answer: pb.GetBooleanEntitlementResponse = await self.stub.GetBooleanEntitlement(request)
        return answer

    def synced(self) -> bool:
        sample = self.sidecar.metrics.registry.get_sample_value("sidecar_backend_synced")
        return sample == 1


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    settings = UpstreamSettings(
        api_key=KEY, port=0, database=str(tmp_path / "up.db"), test_clock_enabled=True
    )
    async with UpstreamServer(settings) as upstream:
        url = f"http://127.0.0.1:{upstream.port}"
        source = HttpUpstreamSource(api_url=url, api_key=KEY)
        async with (
            Sidecar(make_settings(), source) as sidecar,
            grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel,
            aiohttp.ClientSession(url, headers={"X-API-KEY": KEY}) as http,
        ):
            system = System(upstream, sidecar, pb_grpc.SidecarServiceStub(channel), http)
            await wait_for(system.synced, what="the sidecar to follow the change stream")
            yield system


async def test_a_month_later_usage_starts_again_from_zero(system: System) -> None:
    await system.call(
        "POST", "/v1/customers", {"id": "acme", "subscription": {"planId": "free"}}, 201
    )
    ack = await system.stub.ReportUsage(
        pb.ReportUsageRequest(customer_id="acme", feature_id="api-calls", value=250)
    )
    assert ack.current_usage == 250
    before = await system.metered("acme", "api-calls")
    assert before.entitlement.current_usage == 250 and not before.is_fallback
    period_end = before.entitlement.usage_period_end.ToDatetime(UTC)
    assert period_end > datetime.now(UTC) + timedelta(days=27), "a monthly period"

    answer = await system.advance(seconds=(period_end - datetime.now(UTC)).total_seconds() + 60)
    assert answer["statesChanged"] >= 1
    state = await system.call("GET", "/v1/customers/acme/entitlements")
    assert state["featureUsage"]["api-calls"]["currentUsage"] == 0

    # The sidecar's wall clock is still inside the old period: only upstream's published state
    # can bring the reset. It arrives over the change stream, no refetch needed.
    async def reset() -> bool:
        return (await system.metered("acme", "api-calls")).entitlement.current_usage == 0

    await wait_for(reset, what="the sidecar to show the new period")
    after = await system.metered("acme", "api-calls")
    assert not after.is_fallback and after.has_access
    assert after.entitlement.usage_period_start.ToDatetime(UTC) == period_end

    # What is reported now counts in the new period, through the sidecar too.
    ack = await system.stub.ReportUsage(
        pb.ReportUsageRequest(customer_id="acme", feature_id="api-calls", value=5)
    )
    assert ack.current_usage == 5
    assert (await system.metered("acme", "api-calls")).entitlement.current_usage == 5


async def test_a_trial_ends_and_a_promotion_expires_at_the_sidecar(system: System) -> None:
    created = await system.call(
        "POST", "/v1/customers", {"id": "acme", "subscription": {"planId": "enterprise"}}, 201
    )
    trial_end = created["subscription"]["trialEnd"]
    now_ms = (await system.call("GET", "/v1/test-clock"))["nowMs"]
    await system.call(
        "POST",
        "/v1/promotions",
        {"customerId": "acme", "featureId": "audit-log", "expiresAt": now_ms + 30 * 86_400_000},
        201,
    )
    assert (await system.boolean("acme", "sso")).has_access
    assert (await system.boolean("acme", "audit-log")).has_access

    # Past the 14-day trial: the plan's sso goes, the 30-day promotion keeps audit-log.
    await system.advance(to=trial_end + 1000)

    async def trial_over() -> bool:
        return not (await system.boolean("acme", "sso")).has_access

    await wait_for(trial_over, what="the sidecar to see the trial end")
    denied = await system.boolean("acme", "sso")
    # The customer still holds a promotion, so the denial is per feature.
    reason = pb.ACCESS_DENIED_REASON_NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION
    assert denied.access_denied_reason == reason
    assert not denied.is_fallback
    assert (await system.boolean("acme", "audit-log")).has_access

    # Past the promotion's expiry: audit-log goes too.
    await system.advance(seconds=20 * 86_400)

    async def promotion_over() -> bool:
        return not (await system.boolean("acme", "audit-log")).has_access

    await wait_for(promotion_over, what="the sidecar to see the promotion expire")
