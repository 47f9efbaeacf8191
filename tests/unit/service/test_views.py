"""Memoized responses live exactly as long as the snapshot and the instant they are right for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sidecar.cache.hot_cache import HotCache
from sidecar.evaluation.rules import stable_until
from sidecar.observability import Metrics
from sidecar.service.entitlements import MAX_VIEWS, CacheEntry, EntitlementService
from sidecar.source.base import Resync, SnapshotChanged, UsageChanged
from sidecar.source.memory import InMemorySource
from tests.builders import NOW, boolean, demo_snapshot, metered, snapshot, usage


def test_stable_until_is_the_earliest_usage_period_end() -> None:
    end_soon = NOW + timedelta(hours=3)
    snap = snapshot(
        "c",
        metered("a", 10),
        metered("b", 10),
        feature_usage={"a": usage(1, end=end_soon), "b": usage(1, end=NOW + timedelta(days=9))},
    )
    assert stable_until(snap, NOW) == end_soon


def test_stable_until_rolls_a_finished_period_forward() -> None:
    # The record's period ended; the next change is the end of the current period.
    snap = snapshot("c", metered("a", 10), feature_usage={"a": usage(1, end=NOW - timedelta(1))})
    until = stable_until(snap, NOW)
    assert until is not None
    assert until > NOW


def test_stable_until_none_without_time_dependence() -> None:
    assert stable_until(snapshot("c", boolean("sso")), NOW) is None


async def test_views_expire_with_their_horizon_and_their_snapshot() -> None:
    clock = [NOW.timestamp()]
    cache: HotCache[CacheEntry] = HotCache(2**24)
    source = InMemorySource()
    service = EntitlementService(
        source=source, cache=cache, metrics=Metrics(), clock=lambda: clock[0]
    )
    service.apply(Resync())  # the change stream is live: entries are trusted
    stored = source.put(demo_snapshot("c"))
    snap = await service.snapshot("c", None)
    assert snap is not None
    bytes_before = cache.bytes_used
    service.remember_view(snap, "list", b"x" * 100, datetime.fromtimestamp(clock[0] + 60, UTC))
    assert service.view(snap, "list") == b"x" * 100
    assert cache.bytes_used == bytes_before + 100 + len("list")
    clock[0] += 61
    assert service.view(snap, "list") is None
    # A newer snapshot is a new entry: views of the old one are gone with it.
    service.remember_view(snap, "list", b"y", None)
    newer = source.put(stored)
    service.apply(SnapshotChanged(newer))
    current = await service.snapshot("c", None)
    assert current is not None
    assert current is not snap
    assert service.view(current, "list") is None
    assert service.view(snap, "list") is None


async def test_views_per_entry_are_bounded_and_keep_their_meta() -> None:
    cache: HotCache[CacheEntry] = HotCache(2**24)
    source = InMemorySource()
    service = EntitlementService(source=source, cache=cache, metrics=Metrics())
    service.apply(Resync())  # the change stream is live: entries are trusted
    source.put(demo_snapshot("c"))
    snap = await service.snapshot("c", None)
    assert snap is not None
    for n in range(MAX_VIEWS + 5):
        service.remember_view(snap, f"v{n}", b"z", None, meta=n)
    kept = [n for n in range(MAX_VIEWS + 5) if service.view(snap, f"v{n}") is not None]
    assert kept == list(range(MAX_VIEWS))
    assert service.view_with_meta(snap, "v3") == (b"z", 3)
    # A name already held may still be refreshed once the entry is full.
    service.remember_view(snap, "v3", b"new", None, meta="again")
    assert service.view_with_meta(snap, "v3") == (b"new", "again")


async def test_the_horizon_is_computed_once_per_snapshot_and_period() -> None:
    clock = [NOW.timestamp()]
    cache: HotCache[CacheEntry] = HotCache(2**24)
    source = InMemorySource()
    service = EntitlementService(
        source=source, cache=cache, metrics=Metrics(), clock=lambda: clock[0]
    )
    service.apply(Resync())  # the change stream is live: entries are trusted
    end = NOW + timedelta(hours=2)
    source.put(snapshot("c", metered("a", 10), feature_usage={"a": usage(1, end=end)}))
    snap = await service.snapshot("c", None)
    assert snap is not None
    assert service.horizon(snap, NOW) == end
    entry = cache.peek(("c", None))
    assert entry is not None and entry.horizon == (end.timestamp(), end)
    # Past it, the next period's end is computed and kept instead.
    later = end + timedelta(minutes=1)
    following = service.horizon(snap, later)
    assert following is not None and following > later
    assert entry.horizon == (following.timestamp(), following)
    assert following == stable_until(snap, later)


async def test_a_usage_change_keeps_the_answers_it_cannot_alter() -> None:
    cache: HotCache[CacheEntry] = HotCache(2**24)
    source = InMemorySource()
    service = EntitlementService(source=source, cache=cache, metrics=Metrics())
    service.apply(Resync())  # the change stream is live: entries are trusted
    source.put(demo_snapshot("c"))
    snap = await service.snapshot("c", None)
    assert snap is not None
    fresh = cache.peek(("c", None))
    assert fresh is not None
    # What the cache charges per entry on top of the snapshot and its views (the key).
    overhead = cache.bytes_used - fresh.size
    names = {
        "list": "GetEntitlements",
        "api-calls": "GetMeteredEntitlement\x00api-calls\x000",
        "seats": "GetNumericEntitlement\x00seats\x000",
        "ai-tokens": "GetMeteredEntitlement\x00ai-tokens\x000",
        "ai-credits": "GetEntitlementV2\x00ai-credits\x000",
    }
    for label, name in names.items():
        service.remember_view(snap, name, label.encode(), None, meta=label)

    def held() -> set[str]:
        current = cache.peek(("c", None))
        assert current is not None
        return {
            label
            for label, name in names.items()
            if service.view(current.snapshot, name) == label.encode()
        }

    service.apply(UsageChanged("c", None, "api-calls", None, usage(8)))
    assert held() == {"seats", "ai-tokens", "ai-credits"}
    # A wallet change alters the currency's answer and every feature burning it.
    service.apply(UsageChanged("c", None, None, "ai-credits", usage(30)))
    assert held() == {"seats"}
    entry = cache.peek(("c", None))
    assert entry is not None
    views_bytes = sum(len(v[1]) + len(n) for n, v in entry.views.items())
    assert cache.bytes_used == entry.size + views_bytes + overhead
