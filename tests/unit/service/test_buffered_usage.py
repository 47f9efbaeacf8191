"""Buffered usage at the service: a report queues behind the ones still spooled, so a SET
never overtakes what was acknowledged before it; projections follow upstream's rules."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sidecar.cache.hot_cache import HotCache
from sidecar.model.usage import UpdateBehavior, UsageReport
from sidecar.observability import Metrics
from sidecar.service.entitlements import CacheEntry, EntitlementService
from sidecar.service.projection import project_usage
from sidecar.source.memory import InMemorySource
from sidecar.spool.store import EventSpool
from tests.builders import NOW, demo_snapshot, metered, snapshot, usage
from tests.conftest import wait_for


async def test_a_report_queues_behind_spooled_ones_even_with_upstream_up(tmp_path: Path) -> None:
    source = InMemorySource()
    source.put(demo_snapshot("c"))
    spool = EventSpool(tmp_path, 1 << 20)
    await spool.open()
    # Acknowledged during an outage (by this process or the one before it), not yet shipped.
    await spool.usage.append(
        [UsageReport("c", "api-calls", 5, behavior=UpdateBehavior.SET, idempotency_key="k-1")]
    )
    cache: HotCache[CacheEntry] = HotCache(2**24)
    service = EntitlementService(
        source=source, cache=cache, metrics=Metrics(), spool=spool, usage_buffering=True
    )
    try:
        later = UsageReport("c", "api-calls", 6, behavior=UpdateBehavior.SET, idempotency_key="k-2")
        [ack] = await service.report_usage([later])
        held = source.get("c")
        assert held is not None and held.feature_usage["api-calls"].current_usage == 7  # as it was
        assert spool.usage.count == 2  # queued behind k-1, not forwarded past it
        assert len(ack.measurement_id) == 21
        service.start()
        await wait_for(lambda: spool.usage.count == 0, timeout=15, what="the drain")
        held = source.get("c")
        assert held is not None and held.feature_usage["api-calls"].current_usage == 6  # SET 5, 6
    finally:
        await service.aclose()
        await spool.close()


def test_delta_adds_to_the_current_period_and_set_replaces() -> None:
    snap = demo_snapshot("c")
    added, currency = project_usage(snap, UsageReport("c", "api-calls", 2), NOW)
    assert added.feature_usage["api-calls"].current_usage == 9 and currency is None
    # The record keeps its version: upstream's next word on it replaces the projection.
    assert added.feature_usage["api-calls"].version == snap.feature_usage["api-calls"].version
    replaced, _ = project_usage(
        added, UsageReport("c", "api-calls", 3, behavior=UpdateBehavior.SET), NOW
    )
    assert replaced.feature_usage["api-calls"].current_usage == 3


def test_a_finished_period_starts_from_zero() -> None:
    snap = snapshot(
        "c",
        metered("a", 10),
        feature_usage={"a": usage(8, end=NOW - timedelta(days=1))},
    )
    projected, _ = project_usage(snap, UsageReport("c", "a", 2), NOW)
    assert projected.feature_usage["a"].current_usage == 2


def test_credit_backed_usage_burns_its_wallet_and_unknown_features_change_nothing() -> None:
    snap = demo_snapshot("c")
    projected, currency = project_usage(snap, UsageReport("c", "ai-tokens", 5), NOW)
    assert currency == "ai-credits"
    assert projected.credit_usage["ai-credits"].current_usage == 40 + 5 * 2
    same, currency = project_usage(snap, UsageReport("c", "no-such-feature", 5), NOW)
    assert same is snap and currency is None
