"""Single-feature answers are memoized per cached snapshot: served again byte for byte, counted
like fresh answers, and never past the instant they stop being right."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from entitlements.errors import SourceUnavailable
from entitlements.model.state import DenialReason
from sidecar.api.servicer import SidecarServicer
from sidecar.cache.hot_cache import HotCache
from sidecar.evaluation.fallback import parse_fallback_map
from sidecar.model.usage import UsageReport
from sidecar.observability import Metrics
from sidecar.pb import sidecar_pb2 as pb
from sidecar.service.entitlements import CacheEntry, EntitlementService
from sidecar.source.base import Resync
from sidecar.source.memory import InMemorySource
from tests.builders import NOW, boolean, metered, snapshot, usage
from tests.conftest import FALLBACK_JSON

PERIOD_END = NOW + timedelta(hours=1)


class Harness:
    def __init__(self) -> None:
        self.clock = [NOW.timestamp()]
        self.source = InMemorySource()
        self.metrics = Metrics()
        self.service = EntitlementService(
            source=self.source,
            cache=HotCache[CacheEntry](2**24),
            metrics=self.metrics,
            clock=lambda: self.clock[0],
        )
        self.service.apply(Resync())  # the change stream is live: entries are trusted
        self.servicer = SidecarServicer(
            self.service, self.metrics, parse_fallback_map(FALLBACK_JSON)
        )
        self.source.put(
            snapshot(
                "cust-1",
                metered("api-calls", 10),
                boolean("sso"),
                feature_usage={"api-calls": usage(7, end=PERIOD_END)},
            )
        )

    def counter(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def metered_call(h: Harness, requested: float | None = None, **kw: Any) -> bytes:
    options = None if requested is None else pb.MeteredEntitlementOptions(requested_usage=requested)
    request = pb.GetMeteredEntitlementRequest(
        customer_id="cust-1", feature_id="api-calls", options=options, **kw
    )
    data = await h.servicer.GetMeteredEntitlement(request, None)  # type: ignore[arg-type]
    assert isinstance(data, bytes)
    return data


async def test_a_repeated_question_is_answered_from_the_memo_and_still_counted() -> None:
    h = Harness()
    first = await metered_call(h)
    again = await metered_call(h)
    assert again is first  # the very bytes remembered, not a recomputation
    answer = pb.GetMeteredEntitlementResponse.FromString(first)
    assert answer.has_access and answer.entitlement.current_usage == 7
    assert h.counter("sidecar_decisions_total", reason="GRANTED") == 2


async def test_request_parameters_are_part_of_the_key() -> None:
    h = Harness()
    fits = pb.GetMeteredEntitlementResponse.FromString(await metered_call(h, requested=3))
    exceeds = pb.GetMeteredEntitlementResponse.FromString(await metered_call(h, requested=4))
    assert fits.has_access and not exceeds.has_access
    assert exceeds.access_denied_reason == pb.ACCESS_DENIED_REASON_REQUESTED_USAGE_EXCEEDING_LIMIT
    assert (
        h.counter(
            "sidecar_decisions_total", reason=DenialReason.REQUESTED_USAGE_EXCEEDING_LIMIT.value
        )
        == 1
    )
    again = pb.GetMeteredEntitlementResponse.FromString(await metered_call(h, requested=4))
    assert again == exceeds
    assert (
        h.counter(
            "sidecar_decisions_total", reason=DenialReason.REQUESTED_USAGE_EXCEEDING_LIMIT.value
        )
        == 2
    )


async def test_a_memo_ends_when_the_usage_period_rolls_over() -> None:
    h = Harness()
    before = pb.GetMeteredEntitlementResponse.FromString(await metered_call(h))
    assert before.entitlement.current_usage == 7
    h.clock[0] = (PERIOD_END + timedelta(seconds=1)).timestamp()
    after = pb.GetMeteredEntitlementResponse.FromString(await metered_call(h))
    assert after.entitlement.current_usage == 0  # a new period: the memo must not answer 7
    assert h.source.fetch_count == 1


async def test_a_new_snapshot_is_a_new_memo() -> None:
    h = Harness()
    await metered_call(h)
    acks = await h.service.report_usage([UsageReport("cust-1", "api-calls", 2)])
    assert acks
    after = pb.GetMeteredEntitlementResponse.FromString(await metered_call(h))
    assert after.entitlement.current_usage == 9


async def test_requests_with_their_own_fallback_are_not_memoized() -> None:
    h = Harness()
    fallback = pb.MeteredEntitlementFallback(has_access=True, usage_limit=5)
    request = pb.GetMeteredEntitlementRequest(
        customer_id="cust-1",
        feature_id="api-calls",
        options=pb.MeteredEntitlementOptions(fallback=fallback),
    )
    first = await h.servicer.GetMeteredEntitlement(request, None)  # type: ignore[arg-type]
    again = await h.servicer.GetMeteredEntitlement(request, None)  # type: ignore[arg-type]
    assert first == again and first is not again
    assert h.counter("sidecar_decisions_total", reason="GRANTED") == 2


async def test_fallback_answers_without_a_snapshot_are_never_memoized() -> None:
    h = Harness()
    h.source.failure = SourceUnavailable("down")
    request = pb.GetBooleanEntitlementRequest(customer_id="cust-1", feature_id="fb-flag")
    first = await h.servicer.GetBooleanEntitlement(request, None)  # type: ignore[arg-type]
    assert pb.GetBooleanEntitlementResponse.FromString(first).is_fallback
    h.source.failure = None
    after = await h.servicer.GetBooleanEntitlement(request, None)  # type: ignore[arg-type]
    # Upstream is back: the real answer (no such feature), not the fallback from before.
    assert not pb.GetBooleanEntitlementResponse.FromString(after).is_fallback
    assert h.counter("sidecar_fallbacks_total", method="GetBooleanEntitlement") == 1
