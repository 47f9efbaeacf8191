"""Write RPCs, reload and cache coherence through grpcio stubs."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from entitlements.errors import SourceUnavailable
from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.source.memory import InMemorySource
from tests.builders import boolean, demo_snapshot, snapshot
from tests.conftest import AsyncStub as Stub
from tests.conftest import wait_for


@pytest.fixture
def customer(source: InMemorySource) -> str:
    source.put(demo_snapshot("cust-1"))
    return "cust-1"


async def _metered(
    stub: Stub, customer: str, feature_id: str = "api-calls"
) -> pb.GetMeteredEntitlementResponse:
    return await stub.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(customer_id=customer, feature_id=feature_id)
    )


async def test_report_usage_is_reflected_in_next_read(stub: Stub, customer: str) -> None:
    assert (await _metered(stub, customer)).entitlement.current_usage == 7
    ack = await stub.ReportUsage(
        pb.ReportUsageRequest(customer_id=customer, feature_id="api-calls", value=2)
    )
    assert ack.current_usage == 9 and ack.customer_id == customer and ack.measurement_id
    read = await _metered(stub, customer)
    assert read.entitlement.current_usage == 9
    assert read.has_access
    await stub.ReportUsage(
        pb.ReportUsageRequest(
            customer_id=customer,
            feature_id="api-calls",
            value=10,
            update_behavior=pb.USAGE_UPDATE_BEHAVIOR_SET,
        )
    )
    denied = await stub.GetMeteredEntitlement(
        pb.GetMeteredEntitlementRequest(
            customer_id=customer,
            feature_id="api-calls",
            options=pb.MeteredEntitlementOptions(requested_usage=1),
        )
    )
    assert denied.entitlement.current_usage == 10 and not denied.has_access


async def test_credit_backed_usage_returns_wallet(stub: Stub, customer: str) -> None:
    ack = await stub.ReportUsage(
        pb.ReportUsageRequest(customer_id=customer, feature_id="ai-tokens", value=5)
    )
    assert ack.HasField("credit")
    assert (ack.credit.currency_id, ack.credit.consumed, ack.credit.current_usage) == (
        "ai-credits",
        10,
        50,
    )
    assert ack.credit.usage_limit == 100
    wallet = await stub.GetEntitlementV2(
        pb.GetEntitlementV2Request(customer_id=customer, currency_id="ai-credits")
    )
    assert wallet.entitlement.credit.remaining == 50


async def test_a_retry_with_the_callers_key_returns_the_first_answer_and_counts_once(
    stub: Stub, customer: str
) -> None:
    report = pb.ReportUsageRequest(
        customer_id=customer, feature_id="api-calls", value=2, idempotency_key="order-17"
    )
    first = await stub.ReportUsage(report)
    again = await stub.ReportUsage(report)

    assert again == first
    assert (await _metered(stub, customer)).entitlement.current_usage == 9


async def test_reports_without_a_key_get_one_per_call(
    stub: Stub, source: InMemorySource, customer: str
) -> None:
    seen: list[str | None] = []
    forward = source.report_usage

    async def spy(reports: Any, *, deadline: float | None = None) -> Any:
        seen.extend(r.idempotency_key for r in reports)
        return await forward(reports, deadline=deadline)

    source.report_usage = spy  # type: ignore[method-assign]
    report = pb.ReportUsageRequest(customer_id=customer, feature_id="api-calls", value=1)
    await stub.ReportUsage(report)
    await stub.ReportUsage(report)
    await stub.ReportUsageBulk(pb.ReportUsageBulkRequest(usages=[report, report]))

    # Two calls of the same report are two reports: each call's keys are its own.
    assert len(seen) == 4 and all(seen) and len(set(seen)) == 4
    assert (await _metered(stub, customer)).entitlement.current_usage == 11


async def test_bulk_keeps_order(stub: Stub, customer: str) -> None:
    resp = await stub.ReportUsageBulk(
        pb.ReportUsageBulkRequest(
            usages=[
                pb.ReportUsageRequest(customer_id=customer, feature_id="api-calls", value=1),
                pb.ReportUsageRequest(customer_id=customer, feature_id="storage", value=5),
            ]
        )
    )
    assert [(u.feature_id, u.current_usage) for u in resp.usages] == [
        ("api-calls", 8),
        ("storage", 155),
    ]
    assert len({u.measurement_id for u in resp.usages}) == 2


async def test_report_usage_errors_propagate(
    stub: Stub, source: InMemorySource, customer: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await stub.ReportUsage(
            pb.ReportUsageRequest(customer_id=customer, feature_id="nope", value=1)
        )
    assert rejected.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    source.failure = SourceUnavailable("upstream down")
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await stub.ReportUsage(
            pb.ReportUsageRequest(customer_id=customer, feature_id="api-calls", value=1)
        )
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "upstream down" in (down.value.details() or "")


async def test_report_events_forwarded(stub: Stub, source: InMemorySource) -> None:
    await stub.ReportEvents(
        pb.ReportEventsRequest(
            events=[
                pb.Event(
                    event_name="tokens",
                    customer_id="cust-1",
                    idempotency_key="k1",
                    dimensions={
                        "model": pb.EventDimensionValue(string_value="gpt"),
                        "n": pb.EventDimensionValue(number_value=3),
                    },
                )
            ]
        )
    )
    assert len(source.events) == 1
    assert source.events[0].dimensions == {"model": "gpt", "n": 3.0}
    assert source.events[0].resource_id is None


async def test_reload_refetches(stub: Stub, source: InMemorySource, customer: str) -> None:
    assert (await _metered(stub, customer)).has_access
    before = source.fetch_count
    resp = await stub.ReloadEntitlements(pb.ReloadEntitlementsRequest(customer_id=customer))
    assert resp.entitled_entity_exists and source.fetch_count == before + 1
    ghost = await stub.ReloadEntitlements(pb.ReloadEntitlementsRequest(customer_id="ghost"))
    assert not ghost.entitled_entity_exists
    source.failure = SourceUnavailable("down")
    failed = await stub.ReloadEntitlements(pb.ReloadEntitlementsRequest(customer_id=customer))
    assert not failed.entitled_entity_exists


async def test_upstream_change_reaches_hot_cache(
    stub: Stub, sidecar: Sidecar, source: InMemorySource, customer: str
) -> None:
    request = pb.GetBooleanEntitlementRequest(customer_id=customer, feature_id="sso")
    assert (await stub.GetBooleanEntitlement(request)).has_access
    source.put(snapshot(customer, boolean("other")))

    async def revoked() -> bool:
        return not (await stub.GetBooleanEntitlement(request)).has_access

    await wait_for(revoked, what="entitlement change to reach the hot cache")
    assert source.fetch_count == 1


async def test_stream_loss_keeps_a_stale_copy_revalidated_before_it_is_trusted(
    stub: Stub, sidecar: Sidecar, source: InMemorySource, customer: str
) -> None:
    first = await _metered(stub, customer)
    fetches = source.fetch_count
    source.disconnect_subscribers()

    async def refetched() -> bool:
        await _metered(stub, customer)
        return source.fetch_count > fetches

    # Kept, not dropped, but refetched on the next read before it is trusted again.
    await wait_for(refetched, what="the held copy to be revalidated")
    assert len(sidecar.cache) == 1

    # Lost again, and now the source fails too: the held copy answers, counted as stale.
    source.failure = SourceUnavailable("upstream is down")
    source.disconnect_subscribers()
    stale = sidecar.metrics.registry.get_sample_value("sidecar_stale_served_total", {"tier": "hot"})

    async def served_stale() -> bool:
        answer = await _metered(stub, customer)
        assert not answer.is_fallback and answer.entitlement == first.entitlement
        now = sidecar.metrics.registry.get_sample_value(
            "sidecar_stale_served_total", {"tier": "hot"}
        )
        return (now or 0) > (stale or 0)

    await wait_for(served_stale, what="the stale copy to be served")


async def test_thousand_concurrent_misses_make_one_fetch(
    stub: Stub, source: InMemorySource, customer: str
) -> None:
    import asyncio

    source.gate = asyncio.Event()
    request = pb.GetBooleanEntitlementRequest(customer_id=customer, feature_id="sso")
    calls = [asyncio.ensure_future(stub.GetBooleanEntitlement(request)) for _ in range(1000)]
    await wait_for(lambda: source.fetch_count >= 1, what="the first fetch")
    source.gate.set()
    results = await asyncio.gather(*calls)
    assert all(r.has_access for r in results)
    assert source.fetch_count == 1


async def test_memoized_list_follows_usage_reports(stub: Stub, customer: str) -> None:
    request = pb.GetEntitlementsStateV2Request(customer_id=customer)

    def api_calls(resp: pb.GetEntitlementsStateV2Response) -> float:
        return next(
            e.metered.current_usage
            for e in resp.entitlements
            if e.WhichOneof("entitlement") == "metered" and e.metered.feature.id == "api-calls"
        )

    first = await stub.GetEntitlementsStateV2(request)
    again = await stub.GetEntitlementsStateV2(request)
    assert api_calls(first) == api_calls(again) == 7
    await stub.ReportUsage(
        pb.ReportUsageRequest(customer_id=customer, feature_id="api-calls", value=2)
    )
    after = await stub.GetEntitlementsStateV2(request)
    assert api_calls(after) == 9
