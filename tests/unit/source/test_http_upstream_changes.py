"""HttpUpstreamSource.changes(): the SSE change stream against a real in-process server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial

import pytest
from structlog.testing import capture_logs

from entitlements.errors import SourceRejected, SourceUnavailable
from entitlements.model.events import ChangeEvent, EventKind, encode_event
from entitlements.model.state import UsageRecord
from sidecar.cache.hot_cache import HotCache
from sidecar.observability import Metrics
from sidecar.service.entitlements import CacheEntry, EntitlementService
from sidecar.source import http_upstream
from sidecar.source.base import Change, CustomerRemoved, Resync, SnapshotChanged, UsageChanged
from sidecar.source.http_upstream import HttpUpstreamSource
from sidecar.source.sse import SseParser
from tests.builders import demo_snapshot
from tests.conftest import wait_for
from tests.unit.source.conftest import MakeSource
from tests.unit.source.fake_upstream import (
    API_KEY,
    DROP,
    END,
    FakeUpstream,
    Fault,
    change,
    free_port,
    sse,
)

DEADLINE = 5.0
COMMITTED = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RECORD = UsageRecord(12, COMMITTED, COMMITTED, COMMITTED, 9)


@asynccontextmanager
async def opened(source: HttpUpstreamSource) -> AsyncIterator[AsyncGenerator[Change, None]]:
    """The change iterator, closed (and its connection released) when the test is done."""
    changes = source.changes()
    assert isinstance(changes, AsyncGenerator)
    try:
        yield changes
    finally:
        await changes.aclose()


async def next_change(changes: AsyncIterator[Change]) -> Change:
    return await asyncio.wait_for(anext(changes), DEADLINE)


def event(
    kind: EventKind, seq: int, customer: str = "c", resource: str | None = None, **kw: object
) -> ChangeEvent:
    return ChangeEvent(kind, seq, customer, resource, 3, COMMITTED, **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------- handshake


async def test_hello_yields_resync(fake: FakeUpstream, make_source: MakeSource) -> None:
    source = make_source()
    async with opened(source) as changes:
        assert await next_change(changes) == Resync()

    [seen] = fake.seen["stream"]
    assert seen.raw_path == "/v1/changes/stream"
    assert seen.headers["Accept"] == "text/event-stream"
    assert seen.headers["X-API-KEY"] == API_KEY
    assert source.last_seq == 41


async def test_a_change_before_hello_breaks_the_stream(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    fake.hello = None
    async with opened(make_source()) as changes:
        pending = asyncio.ensure_future(next_change(changes))
        await fake.wait_for_stream(1)
        fake.push(change(event(EventKind.DELETED, 1)))
        with pytest.raises(SourceUnavailable, match="before hello"):
            await pending


async def test_a_second_hello_is_another_resync(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    async with opened(make_source()) as changes:
        assert await next_change(changes) == Resync()
        fake.push(sse("hello", '{"seq": 99}'))
        assert await next_change(changes) == Resync()


# ------------------------------------------------------------------- mapping


async def test_every_kind_of_change_is_mapped(fake: FakeUpstream, make_source: MakeSource) -> None:
    snapshot = demo_snapshot("c", resource_id="r")
    source = make_source()
    async with opened(source) as changes:
        assert await next_change(changes) == Resync()
        fake.push(
            change(event(EventKind.ENTITLEMENTS, 42, resource="r", snapshot=snapshot)),
            change(event(EventKind.USAGE, 43, feature_id="api-calls", usage=RECORD)),
            change(event(EventKind.USAGE, 44, resource="r", currency_id="ai", usage=RECORD)),
            change(event(EventKind.DELETED, 45)),
            change(event(EventKind.DELETED, 46, resource="r")),
        )

        assert await next_change(changes) == SnapshotChanged(snapshot)
        assert await next_change(changes) == UsageChanged("c", None, "api-calls", None, RECORD)
        assert await next_change(changes) == UsageChanged("c", "r", None, "ai", RECORD)
        assert await next_change(changes) == CustomerRemoved("c", None)
        assert await next_change(changes) == CustomerRemoved("c", "r")
    assert source.last_seq == 46


async def test_invalid_events_are_skipped_and_counted(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    source = make_source()
    wrong_schema = encode_event(event(EventKind.DELETED, 2)).replace(
        b'"schemaVersion":1', b'"schemaVersion":7'
    )
    async with opened(source) as changes:
        assert await next_change(changes) == Resync()
        with capture_logs() as logs:
            fake.push(
                sse("change", "{not json"),
                sse("change", wrong_schema.decode()),
                sse("change", '{"schemaVersion": 1, "kind": "usage.updated"}'),
                change(event(EventKind.DELETED, 5)),
            )
            assert await next_change(changes) == CustomerRemoved("c", None)

    assert source.invalid_events == 3
    assert [entry["event"] for entry in logs] == ["change_event_invalid"] * 3


async def test_pings_comments_and_unknown_events_are_ignored(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    async with opened(make_source()) as changes:
        assert await next_change(changes) == Resync()
        fake.push(
            b": ping\n\n",
            sse("heartbeat", "{}"),
            b"data: an unnamed message\n\n",
            change(event(EventKind.DELETED, 5)),
        )
        assert await next_change(changes) == CustomerRemoved("c", None)


async def test_events_trickling_in_byte_by_byte_with_crlf(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    wire = change(event(EventKind.DELETED, 8)).replace(b"\n", b"\r\n")
    async with opened(make_source()) as changes:
        assert await next_change(changes) == Resync()
        fake.push(*(wire[i : i + 1] for i in range(len(wire))))
        assert await next_change(changes) == CustomerRemoved("c", None)


# ---------------------------------------------------------------- disconnects


@pytest.mark.parametrize(
    ("ending", "message"), [(END, "closed by upstream"), (DROP, "change stream")]
)
async def test_losing_the_stream_is_unavailable(
    fake: FakeUpstream, make_source: MakeSource, ending: object, message: str
) -> None:
    async with opened(make_source()) as changes:
        assert await next_change(changes) == Resync()
        fake.push(b": ping\n\n", ending)  # type: ignore[arg-type]
        with pytest.raises(SourceUnavailable, match=message):
            await next_change(changes)


async def test_a_silent_stream_times_out(make_source: MakeSource) -> None:
    async with opened(make_source(stream_read_timeout=0.2)) as changes:
        assert await next_change(changes) == Resync()
        with pytest.raises(SourceUnavailable, match="lost"):
            await next_change(changes)


async def test_a_refused_connection_is_unavailable(make_source: MakeSource) -> None:
    async with opened(make_source(api_url=f"http://127.0.0.1:{free_port()}")) as changes:
        with pytest.raises(SourceUnavailable, match="cannot connect"):
            await next_change(changes)


async def test_a_bad_key_is_rejected(make_source: MakeSource) -> None:
    async with opened(make_source(api_key="wrong")) as changes:
        with pytest.raises(SourceRejected, match="invalid API key"):
            await next_change(changes)


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault(status=503), "503"),
        (Fault(status=500), "500"),
        (Fault(status=204), "unexpected status 204"),
        (Fault(status=200, body=b"{}"), "unexpected content type application/json"),
    ],
)
async def test_a_stream_that_does_not_open_is_unavailable(
    fake: FakeUpstream, make_source: MakeSource, fault: Fault, message: str
) -> None:
    fake.fail("stream", fault)
    async with opened(make_source()) as changes:
        with pytest.raises(SourceUnavailable, match=message):
            await next_change(changes)


async def test_an_oversized_event_breaks_the_stream(
    fake: FakeUpstream, make_source: MakeSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http_upstream, "SseParser", partial(SseParser, max_event_chars=100))
    async with opened(make_source()) as changes:
        assert await next_change(changes) == Resync()
        fake.push(b"data: " + b"x" * 200)
        with pytest.raises(SourceUnavailable, match="larger than"):
            await next_change(changes)


# -------------------------------------------------------------- without stream


async def test_without_the_stream_one_resync_then_quiet_until_closed(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    source = make_source(stream=False)
    changes = source.changes()
    assert await next_change(changes) == Resync()

    waiting = asyncio.ensure_future(anext(changes))
    done, _ = await asyncio.wait({waiting}, timeout=0.1)
    assert not done
    assert fake.seen["stream"] == []

    await source.aclose()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiting, DEADLINE)


# ------------------------------------------------------------------- service


async def test_the_service_stays_coherent_and_reconnects(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    first = demo_snapshot("c")
    fake.snapshots[("c", None)] = first
    service = EntitlementService(
        source=make_source(), cache=HotCache[CacheEntry](2**24), metrics=Metrics()
    )
    service.start()
    try:
        await asyncio.wait_for(service.synced.wait(), DEADLINE)
        assert await service.snapshot("c", None) == first

        # Pushed changes land in the cache: reads see them without another fetch.
        newer = replace(first, state=replace(first.state, version=first.state.version + 1))
        fake.push(change(event(EventKind.ENTITLEMENTS, 50, snapshot=newer)))

        async def sees_newer() -> bool:
            return await service.snapshot("c", None) == newer

        await wait_for(sees_newer, DEADLINE, "the pushed snapshot")
        assert len(fake.seen["fetch"]) == 1

        # A lost stream is reconnected; this upstream keeps no log to replay, so the reconnect
        # is a resync: the held copy is revalidated (refetched) before it is trusted again.
        # A change made while the stream was down is what the refetch brings in.
        latest = replace(first, state=replace(first.state, version=first.state.version + 2))
        fake.snapshots[("c", None)] = latest
        fake.push(DROP)
        await asyncio.wait_for(fake.wait_for_stream(2), DEADLINE)

        async def sees_latest() -> bool:
            return await service.snapshot("c", None) == latest

        await wait_for(sees_latest, DEADLINE, "the revalidated snapshot")
        assert len(fake.seen["fetch"]) == 2
    finally:
        await service.aclose()
