"""EntitlementService.report_usage: every forwarded report keyed, the acknowledged usage written
back once, and the change that echoes it changing nothing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import UTC, datetime

from sidecar.cache.hot_cache import HotCache
from sidecar.model.usage import UpdateBehavior, UsageAck, UsageReport
from sidecar.observability import Metrics
from sidecar.service.entitlements import CacheEntry, EntitlementService, IdempotencyKeys
from sidecar.source.base import Resync, UsageChanged
from sidecar.source.memory import InMemorySource
from tests.builders import demo_snapshot

API_CALLS = "GetMeteredEntitlement\x00api-calls\x000"
SEATS = "GetNumericEntitlement\x00seats\x000"


def test_with_key_copies_every_field() -> None:
    report = UsageReport(
        "c",
        "f",
        2.5,
        resource_id="r",
        behavior=UpdateBehavior.SET,
        dimensions={"region": "eu"},
        timestamp=datetime(2026, 6, 1, tzinfo=UTC),
        idempotency_key=None,
    )
    # with_key lists the fields one by one: a new field must be added there too.
    assert [f.name for f in fields(UsageReport)] == [
        "customer_id",
        "feature_id",
        "value",
        "resource_id",
        "behavior",
        "dimensions",
        "timestamp",
        "idempotency_key",
    ]
    assert report.with_key("k") == replace(report, idempotency_key="k")


def test_generated_keys_are_unique_per_call_and_per_instance() -> None:
    first, second = IdempotencyKeys(), IdempotencyKeys()
    keys = [first.new() for _ in range(1000)] + [second.new() for _ in range(1000)]
    assert len(set(keys)) == len(keys)
    assert all(key.startswith("sidecar-") and len(key) <= 256 for key in keys)


class Recording(InMemorySource):
    def __init__(self) -> None:
        super().__init__()
        self.forwarded: list[UsageReport] = []

    async def report_usage(
        self, reports: Sequence[UsageReport], *, deadline: float | None = None
    ) -> list[UsageAck]:
        self.forwarded += reports
        return await super().report_usage(reports, deadline=deadline)


async def service_with(source: InMemorySource) -> tuple[EntitlementService, HotCache[CacheEntry]]:
    cache: HotCache[CacheEntry] = HotCache(2**24)
    service = EntitlementService(source=source, cache=cache, metrics=Metrics())
    service.apply(Resync())  # the change stream is live: entries are trusted
    source.put(demo_snapshot("c"))
    assert await service.snapshot("c", None) is not None
    return service, cache


async def test_reports_are_forwarded_with_the_callers_key_or_one_of_their_own() -> None:
    source = Recording()
    service, _ = await service_with(source)

    await service.report_usage([UsageReport("c", "api-calls", 1, idempotency_key="mine")])
    await service.report_usage([UsageReport("c", "api-calls", 1)] * 2)
    await service.report_usage([UsageReport("c", "api-calls", 1)])

    keys = [report.idempotency_key for report in source.forwarded]
    assert keys[0] == "mine"
    generated = keys[1:]
    assert all(key is not None and key.startswith("sidecar-") for key in generated)
    assert len(set(generated)) == 3
    assert [replace(r, idempotency_key=None) for r in source.forwarded] == [
        UsageReport("c", "api-calls", 1)
    ] * 4


async def test_the_change_echoing_a_written_back_report_keeps_the_memoized_answers() -> None:
    service, cache = await service_with(InMemorySource())

    [ack] = await service.report_usage([UsageReport("c", "api-calls", 1)])

    entry = cache.peek(("c", None))
    assert entry is not None
    assert ack.usage is not None
    assert entry.snapshot.feature_usage["api-calls"] == ack.usage
    # Reads after the report memoize their answers on the written-back snapshot ...
    service.remember_view(entry.snapshot, API_CALLS, b"api", None)
    service.remember_view(entry.snapshot, SEATS, b"seats", None)
    written_back = entry.snapshot

    # ... which the change upstream then streams for the same report leaves alone.
    service.apply(UsageChanged("c", None, "api-calls", None, ack.usage))

    entry = cache.peek(("c", None))
    assert entry is not None
    assert entry.snapshot is written_back
    assert service.view(written_back, API_CALLS) == b"api"
    assert service.view(written_back, SEATS) == b"seats"

    # A record that differs (even at the same version) is applied as before.
    other = replace(ack.usage, current_usage=ack.usage.current_usage + 5)
    service.apply(UsageChanged("c", None, "api-calls", None, other))
    entry = cache.peek(("c", None))
    assert entry is not None
    assert entry.snapshot.feature_usage["api-calls"] == other
    assert service.view(entry.snapshot, API_CALLS) is None
    assert service.view(entry.snapshot, SEATS) == b"seats"


async def test_the_echo_of_a_wallet_change_keeps_the_memoized_answers_too() -> None:
    service, cache = await service_with(InMemorySource())

    [ack] = await service.report_usage([UsageReport("c", "ai-tokens", 3)])

    assert ack.credit is not None
    entry = cache.peek(("c", None))
    assert entry is not None
    assert entry.snapshot.credit_usage["ai-credits"] == ack.credit.record
    service.remember_view(entry.snapshot, "GetEntitlementV2\x00ai-credits\x000", b"w", None)
    written_back = entry.snapshot

    service.apply(UsageChanged("c", None, None, "ai-credits", ack.credit.record))

    entry = cache.peek(("c", None))
    assert entry is not None
    assert entry.snapshot is written_back
    assert service.view(written_back, "GetEntitlementV2\x00ai-credits\x000") == b"w"
