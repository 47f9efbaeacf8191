"""The event spool and its shipper: durable appends, the byte bound, one owner per directory,
shipping oldest first, deleting only what upstream acknowledged, and what a rejection drops."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from entitlements.errors import (
    InvalidApiKey,
    ResourceExhausted,
    SourceRejected,
    SourceUnavailable,
    StartupError,
)
from sidecar.model.usage import RawEvent, UpdateBehavior, UsageReport
from sidecar.observability import Metrics
from sidecar.spool.shipper import Shipper
from sidecar.spool.store import (
    EventSpool,
    decode_event,
    decode_usage,
    encode_event,
    encode_usage,
)
from tests.conftest import wait_for


def event(i: int, customer: str = "c") -> RawEvent:
    return RawEvent("login", customer, f"k-{i}", dimensions={"n": float(i)})


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[EventSpool]:
    opened = EventSpool(tmp_path / "spool", 1 << 20)
    await opened.open()
    yield opened
    await opened.close()


def test_an_event_survives_its_encoding() -> None:
    full = RawEvent(
        "api_request",
        "c",
        "k",
        resource_id="r",
        dimensions={"s": "x", "f": 1.5, "b": True},
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    assert decode_event(encode_event(full)) == full
    assert decode_event(encode_event(event(1))) == event(1)
    assert decode_event(b"{not json") is None


async def test_appended_events_are_on_disk_in_order_for_the_next_process(tmp_path: Path) -> None:
    first = EventSpool(tmp_path, 1 << 20)
    await first.open()
    await first.append([event(1), event(2)])
    await first.append([event(3)])
    await first.close()

    second = EventSpool(tmp_path, 1 << 20)
    await second.open()
    try:
        held = await second.peek(10)
        assert [s.event for s in held] == [event(1), event(2), event(3)]
        assert (second.events, second.bytes) == (3, sum(s.size for s in held))
        assert second.not_empty.is_set()
    finally:
        await second.close()


async def test_concurrent_appends_share_commits_and_all_land(spool: EventSpool) -> None:
    await asyncio.gather(*(spool.append([event(i)]) for i in range(50)))
    held = await spool.peek(100)
    assert sorted(s.event.idempotency_key for s in held if s.event) == sorted(
        f"k-{i}" for i in range(50)
    )
    assert spool.events == 50


async def test_a_batch_that_does_not_fit_is_refused_whole(tmp_path: Path) -> None:
    size = len(encode_event(event(1)))
    small = EventSpool(tmp_path, size * 3)
    await small.open()
    try:
        await small.append([event(1), event(2)])
        with pytest.raises(ResourceExhausted, match="SPOOL_MAX_BYTES"):
            await small.append([event(3), event(4)])
        assert small.events == 2
        assert len(await small.peek(10)) == 2
        await small.append([event(3)])  # what fits is still taken
        assert small.events == 3
    finally:
        await small.close()


async def test_one_directory_one_sidecar(spool: EventSpool) -> None:
    other = EventSpool(spool.directory, 1 << 20)
    with pytest.raises(StartupError, match="in use by another sidecar"):
        await other.open()
    await other.close()


async def test_delete_drops_a_shipped_run_and_moves_the_oldest_age(spool: EventSpool) -> None:
    await spool.append([event(1), event(2)])
    await spool.append([event(3)])
    held = await spool.peek(2)
    await spool.delete(held)
    assert [s.event for s in await spool.peek(10)] == [event(3)]
    assert spool.events == 1 and spool.oldest_appended_at is not None
    await spool.delete(await spool.peek(10))
    assert (spool.events, spool.bytes, spool.oldest_age()) == (0, 0, 0.0)
    assert not spool.not_empty.is_set()


# ---------------------------------------------------------------------- shipper


class Upstream:
    """Records what it was sent; fails as told, one fault per call."""

    def __init__(self, *faults: Exception, refuse: frozenset[str] = frozenset()) -> None:
        self.faults = list(faults)
        self.refuse = refuse
        self.batches: list[list[str]] = []

    async def send(self, events: Sequence[RawEvent]) -> None:
        if self.faults:
            raise self.faults.pop(0)
        if any(e.idempotency_key in self.refuse for e in events):
            raise SourceRejected("customer does not exist")
        self.batches.append([e.idempotency_key for e in events])

    @property
    def keys(self) -> list[str]:
        return [k for batch in self.batches for k in batch]


async def ship(spool: EventSpool, upstream: Upstream, **options: float) -> Metrics:
    metrics = Metrics()
    shipper = Shipper(
        spool,
        upstream.send,
        metrics,
        batch_size=int(options.pop("batch_size", 1000)),
        backoff_base=0.001,
        backoff_max=0.01,
        rng=random.Random(1),
    )
    shipper.start()
    try:
        await wait_for(lambda: spool.events == 0, what="the spool to drain")
    finally:
        await shipper.aclose()
    return metrics


def sample(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name) or 0.0


async def test_ships_oldest_first_in_bounded_batches(spool: EventSpool) -> None:
    await spool.append([event(i) for i in range(5)])
    await spool.append([event(i) for i in range(5, 7)])
    upstream = Upstream()

    metrics = await ship(spool, upstream, batch_size=3)

    assert upstream.keys == [f"k-{i}" for i in range(7)]
    assert all(len(batch) <= 3 for batch in upstream.batches)
    assert sample(metrics, "sidecar_spool_shipped_total") == 7


async def test_a_failed_batch_is_kept_and_sent_again_as_it_was(spool: EventSpool) -> None:
    await spool.append([event(1), event(2)])
    upstream = Upstream(SourceUnavailable("down"), SourceUnavailable("down"), InvalidApiKey("k"))

    with capture_logs() as logs:
        metrics = await ship(spool, upstream)

    assert upstream.batches == [["k-1", "k-2"]]
    assert sample(metrics, "sidecar_spool_ship_retries_total") == 3
    assert sample(metrics, "sidecar_spool_rejected_total") == 0
    names = [line["event"] for line in logs]
    assert names.count("spool_backing_up") == 1 and names.count("spool_drained") == 1


async def test_drain_ends_a_backoff_pause_and_ships_everything(spool: EventSpool) -> None:
    await spool.append([event(i) for i in range(3)])
    upstream = Upstream(SourceUnavailable("down"))
    metrics = Metrics()
    # After one failure the shipper pauses for over two minutes (seeded: 0.134 x 1000 s), far
    # past drain's 30 s: only drain's nudge gets the events out in time.
    shipper = Shipper(
        spool, upstream.send, metrics, backoff_base=1000.0, backoff_max=1000.0, rng=random.Random(1)
    )
    shipper.start()
    try:
        await wait_for(
            lambda: sample(metrics, "sidecar_spool_ship_retries_total") == 1, what="a failure"
        )
        assert upstream.faults == [] and spool.events == 3  # upstream is back; the shipper waits
        with capture_logs() as logs:
            assert await shipper.drain(30)
    finally:
        await shipper.aclose()
    assert upstream.keys == ["k-0", "k-1", "k-2"] and spool.events == 0
    assert [line["event"] for line in logs if line["event"].endswith("_on_stop")] == [
        "spool_drained_on_stop"
    ]


async def test_drain_gives_up_at_its_deadline_and_keeps_what_it_could_not_ship(
    spool: EventSpool,
) -> None:
    await spool.append([event(1), event(2)])
    upstream = Upstream(*[SourceUnavailable("down")] * 10_000)
    shipper = Shipper(
        spool, upstream.send, Metrics(), backoff_base=0.001, backoff_max=0.01, rng=random.Random(1)
    )
    shipper.start()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with capture_logs() as logs:
            assert not await shipper.drain(0.3)
        waited = loop.time() - started
    finally:
        await shipper.aclose()
    assert 0.3 <= waited < 5  # its deadline, not the next backoff nor forever
    assert spool.events == 2 and upstream.batches == []
    [left] = [line for line in logs if line["event"] == "spool_left_on_stop"]
    assert left["held"] == 2


async def test_drain_without_anything_to_ship_returns_at_once(spool: EventSpool) -> None:
    shipper = Shipper(spool, Upstream().send, Metrics())
    assert await shipper.drain(30)  # never started: nothing to wait for
    shipper.start()
    try:
        assert await asyncio.wait_for(shipper.drain(30), 5)
    finally:
        await shipper.aclose()


async def test_a_rejection_drops_only_the_refused_events_in_order(spool: EventSpool) -> None:
    await spool.append([event(i) for i in range(8)])
    upstream = Upstream(refuse=frozenset({"k-5"}))

    with capture_logs() as logs:
        metrics = await ship(spool, upstream)

    assert upstream.keys == [f"k-{i}" for i in range(8) if i != 5]
    assert sample(metrics, "sidecar_spool_rejected_total") == 1
    [rejected] = [line for line in logs if line["event"] == "spool_event_rejected"]
    assert rejected["idempotency_key"] == "k-5"


def usage_report(i: int) -> UsageReport:
    return UsageReport("c", "api-calls", float(i), idempotency_key=f"u-{i}")


def test_a_usage_report_survives_its_encoding_and_needs_its_key() -> None:
    full = UsageReport(
        "c",
        "f",
        2.5,
        resource_id="r",
        behavior=UpdateBehavior.SET,
        dimensions={"s": "x", "f": 1.5, "b": True},
        timestamp=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        idempotency_key="k",
    )
    assert decode_usage(encode_usage(full)) == full
    assert decode_usage(encode_usage(usage_report(1))) == usage_report(1)
    assert decode_usage(b'{"c":"c","f":"f","v":"1","k":"k"}') is None
    with pytest.raises(ValueError, match="idempotency key"):
        encode_usage(UsageReport("c", "f", 1.0))


async def test_usage_and_events_are_queued_apart_under_one_bound(tmp_path: Path) -> None:
    first = EventSpool(tmp_path, 1 << 20)
    await first.open()
    await first.append([event(1)])
    await first.usage.append([usage_report(1), usage_report(2)])
    assert [s.item for s in await first.peek(10)] == [event(1)]
    assert [s.item for s in await first.usage.peek(10)] == [usage_report(1), usage_report(2)]
    await first.close()

    second = EventSpool(tmp_path, first.bytes + first.usage.bytes + 10)
    await second.open()
    try:
        assert (second.events, second.usage.count) == (1, 2)
        assert second.usage.not_empty.is_set()
        with pytest.raises(ResourceExhausted, match="1 events, 2 usage reports"):
            await second.append([event(2)])  # the bound covers both queues
        await second.usage.delete(await second.usage.peek(10))
        await second.append([event(2)])
        assert second.events == 2 and not second.usage.not_empty.is_set()
    finally:
        await second.close()
