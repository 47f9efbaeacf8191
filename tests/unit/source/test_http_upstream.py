"""HttpUpstreamSource's request/response calls against a real in-process HTTP server.

Covers the wire contract (paths, encoding, headers, bodies), error mapping and
the retry policy: which calls may be repeated after which failures.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from entitlements.errors import InvalidArgument, SourceRejected, SourceUnavailable
from entitlements.model.state import (
    DenialReason,
    UsageRecord,
    encode_snapshot_dict,
    encode_usage_record,
)
from sidecar.model.usage import CreditAck, RawEvent, UpdateBehavior, UsageAck, UsageReport
from sidecar.source.base import EntitlementSource
from sidecar.source.http_upstream import HttpUpstreamSource
from tests.builders import NOW, demo_snapshot
from tests.unit.source.conftest import MakeSource
from tests.unit.source.fake_upstream import (
    API_KEY,
    FakeUpstream,
    Fault,
    error_body,
    free_port,
)

NOW_MS = int(NOW.timestamp() * 1000)

# ------------------------------------------------------------------------ fetch


async def test_fetch_returns_the_snapshot_and_sends_the_key(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    stored = demo_snapshot("cust-1")
    fake.snapshots[("cust-1", None)] = stored

    got = await make_source().fetch("cust-1", None)

    assert got == stored
    [seen] = fake.seen["fetch"]
    assert seen.method == "GET"
    assert seen.raw_path == "/v1/customers/cust-1/entitlements"
    assert seen.query == {}
    assert seen.headers["X-API-KEY"] == API_KEY
    assert seen.headers["Accept"] == "application/json"


async def test_fetch_passes_the_resource_as_a_query_parameter(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    stored = demo_snapshot("cust-1", resource_id="res-9")
    fake.snapshots[("cust-1", "res-9")] = stored

    assert await make_source().fetch("cust-1", "res-9") == stored
    assert fake.seen["fetch"][0].query == {"resourceId": "res-9"}


@pytest.mark.parametrize(
    ("customer_id", "resource_id"),
    [
        ("org/team a", "site/1 b"),
        ("..", "."),
        (".", None),
        ("ü?#%&+=", "r&resourceId=x+y%20"),
        ("a;b,c@d:e", "~!*'()"),
    ],
)
async def test_fetch_encodes_ids_so_they_arrive_intact(
    fake: FakeUpstream, make_source: MakeSource, customer_id: str, resource_id: str | None
) -> None:
    stored = demo_snapshot(customer_id, resource_id=resource_id)
    fake.snapshots[(customer_id, resource_id)] = stored

    assert await make_source().fetch(customer_id, resource_id) == stored
    [seen] = fake.seen["fetch"]
    assert seen.match == {"customer_id": customer_id}
    expected_query = {} if resource_id is None else {"resourceId": resource_id}
    assert seen.query == expected_query


async def test_fetch_of_an_unknown_customer_is_a_normal_answer(make_source: MakeSource) -> None:
    got = await make_source().fetch("nobody", None)

    assert got.state.customer_id == "nobody"
    assert got.state.denial_reason is DenialReason.CUSTOMER_NOT_FOUND


async def test_api_url_path_prefix_is_kept(fake: FakeUpstream, make_source: MakeSource) -> None:
    source = make_source(api_url=fake.url + "/")

    await source.fetch("c", None)

    assert fake.seen["fetch"][0].raw_path == "/v1/customers/c/entitlements"


# ---------------------------------------------------------------- fetch retries


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503),
        Fault(status=502),
        Fault(status=504),
        Fault(status=429),
        Fault(drop=True),
    ],
    ids=["503", "502", "504", "429", "dropped"],
)
async def test_fetch_retries_transient_failures_then_succeeds(
    fake: FakeUpstream, make_source: MakeSource, fault: Fault
) -> None:
    fake.fail("fetch", fault, fault)

    got = await make_source(retries=2).fetch("c", None)

    assert got.state.customer_id == "c"
    assert len(fake.seen["fetch"]) == 3


async def test_fetch_retries_after_a_timeout(fake: FakeUpstream, make_source: MakeSource) -> None:
    fake.fail("fetch", Fault(hang=True))

    got = await make_source(timeout=0.2, retries=1).fetch("c", None)

    assert got.state.customer_id == "c"
    assert len(fake.seen["fetch"]) == 2


async def test_fetch_gives_up_after_the_configured_retries(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    fake.fail("fetch", *[Fault(status=503, body=error_body("DOWN", "maintenance"))] * 10)

    with pytest.raises(SourceUnavailable, match="503: maintenance"):
        await make_source(retries=3).fetch("c", None)
    assert len(fake.seen["fetch"]) == 4


async def test_zero_retries_means_one_attempt(fake: FakeUpstream, make_source: MakeSource) -> None:
    fake.fail("fetch", Fault(status=503))

    with pytest.raises(SourceUnavailable):
        await make_source(retries=0).fetch("c", None)
    assert len(fake.seen["fetch"]) == 1


async def test_a_plain_500_is_not_retried(fake: FakeUpstream, make_source: MakeSource) -> None:
    fake.fail("fetch", Fault(status=500))

    with pytest.raises(SourceUnavailable, match="500"):
        await make_source(retries=3).fetch("c", None)
    assert len(fake.seen["fetch"]) == 1


async def test_retry_after_is_honoured(fake: FakeUpstream, make_source: MakeSource) -> None:
    fake.fail("fetch", Fault(status=429, headers={"Retry-After": "0.3"}))
    source = make_source(retries=1, backoff_base=0.001, backoff_max=5.0)

    started = time.monotonic()
    await source.fetch("c", None)

    # The event loop may wake a timer up to its clock resolution early.
    assert time.monotonic() - started >= 0.29
    assert len(fake.seen["fetch"]) == 2


async def test_retry_after_is_capped_by_backoff_max(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    fake.fail("fetch", Fault(status=503, headers={"Retry-After": "3600"}))

    got = await asyncio.wait_for(make_source(retries=1, backoff_max=0.01).fetch("c", None), 10)

    assert got.state.customer_id == "c"


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    source = HttpUpstreamSource(
        api_url="http://127.0.0.1:1", api_key="k", backoff_base=0.1, backoff_max=1.0
    )
    for attempt, ceiling in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (30, 1.0)]:
        delays = [source._backoff(attempt, None) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(delays) < ceiling / 4
    assert source._backoff(0, 0.5) >= 0.5
    assert source._backoff(0, 99) == 1.0


# ---------------------------------------------------------------- error mapping


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failures_are_rejections_and_not_retried(
    fake: FakeUpstream, make_source: MakeSource, status: int
) -> None:
    fake.fail("fetch", Fault(status=status))

    with pytest.raises(SourceRejected, match="invalid API key"):
        await make_source().fetch("c", None)
    assert len(fake.seen["fetch"]) == 1


async def test_a_wrong_key_is_rejected(make_source: MakeSource) -> None:
    with pytest.raises(SourceRejected, match="invalid API key"):
        await make_source(api_key="wrong").fetch("c", None)


async def test_a_4xx_surfaces_upstream_error_message(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    fake.fail("fetch", Fault(status=400, body=error_body("BAD_ID", "customer id is too long")))

    with pytest.raises(SourceRejected) as caught:
        await make_source().fetch("c", None)
    assert str(caught.value) == "customer id is too long"
    assert len(fake.seen["fetch"]) == 1


@pytest.mark.parametrize(
    "body", [b"", b"not json", b'{"error": "flat"}', b'{"error": {"code": "X"}}', b"[1]"]
)
async def test_a_4xx_without_an_error_message_reports_the_status(
    fake: FakeUpstream, make_source: MakeSource, body: bytes
) -> None:
    fake.fail("fetch", Fault(status=404, body=body))

    with pytest.raises(SourceRejected, match=r"^404 Not Found$"):
        await make_source().fetch("c", None)


async def test_redirects_are_not_followed(fake: FakeUpstream, make_source: MakeSource) -> None:
    fake.fail("fetch", Fault(status=307, headers={"Location": "http://elsewhere.invalid/"}))

    with pytest.raises(SourceRejected, match="307"):
        await make_source().fetch("c", None)
    assert len(fake.seen["fetch"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b"",
        b"[]",
        b'{"schemaVersion": 99, "customerId": "c"}',
        b'{"schemaVersion": 1}',
        json.dumps({**encode_snapshot_dict(demo_snapshot("c")), "features": "all"}).encode(),
        # A valid state, but for someone else: must never be cached under this key.
        json.dumps(encode_snapshot_dict(demo_snapshot("other"))).encode(),
        json.dumps(encode_snapshot_dict(demo_snapshot("c", resource_id="r"))).encode(),
    ],
    ids=["html", "empty", "array", "schema", "no-customer", "bad-field", "other", "resource"],
)
async def test_an_invalid_payload_is_unavailable_and_logged_once(
    fake: FakeUpstream, make_source: MakeSource, body: bytes
) -> None:
    fake.fetch_body = body

    with capture_logs() as logs, pytest.raises(SourceUnavailable, match="invalid payload"):
        await make_source().fetch("c", None)

    assert [entry["event"] for entry in logs] == ["upstream_invalid_payload"]
    # A malformed answer is not a transient fault: asking again would get the same.
    assert len(fake.seen["fetch"]) == 1


async def test_connection_refused_is_unavailable_after_retries(make_source: MakeSource) -> None:
    source = make_source(api_url=f"http://127.0.0.1:{free_port()}", retries=2)

    with pytest.raises(SourceUnavailable, match="cannot connect"):
        await source.fetch("c", None)


# ------------------------------------------------------------------ report_usage


async def test_report_usage_sends_the_contract_body_and_decodes_acks(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    reports = [
        UsageReport("c1", "api-calls", 3.5),
        UsageReport(
            "c2",
            "seats",
            7,
            resource_id="r /1",
            behavior=UpdateBehavior.SET,
            dimensions={"region": "eu", "weight": 1.5, "count": 2, "beta": True},
            timestamp=datetime(2026, 6, 15, 12, 0, 0, 123000, tzinfo=UTC),
        ),
    ]
    period_end = datetime(2026, 7, 1, tzinfo=UTC)
    usage_record = UsageRecord(10, NOW, period_end, NOW, 5)
    credit_record = UsageRecord(40, NOW, period_end, NOW, 6)
    fake.usage_results = [
        {
            "measurementId": "m-1",
            "customerId": "c1",
            "resourceId": None,
            "featureId": "api-calls",
            "usage": encode_usage_record(usage_record),
            "credit": {
                "currencyId": "ai",
                "granted": 100,
                "consumed": 7,
                "usage": encode_usage_record(credit_record),
            },
        },
        {
            "measurementId": "m-2",
            "customerId": "c2",
            "resourceId": "r /1",
            "featureId": "seats",
            "usage": None,
            "credit": None,
        },
    ]

    acks = await make_source().report_usage(reports)

    assert acks == [
        UsageAck(
            "m-1", "c1", "api-calls", None, usage_record, CreditAck("ai", 100, credit_record, 7)
        ),
        UsageAck("m-2", "c2", "seats", "r /1", None, None),
    ]
    [seen] = fake.seen["usage"]
    assert seen.raw_path == "/v1/usage"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["X-API-KEY"] == API_KEY
    assert seen.body == {
        "usages": [
            {"customerId": "c1", "featureId": "api-calls", "value": 3.5, "updateBehavior": "DELTA"},
            {
                "customerId": "c2",
                "featureId": "seats",
                "value": 7,
                "updateBehavior": "SET",
                "resourceId": "r /1",
                "dimensions": {"region": "eu", "weight": 1.5, "count": 2, "beta": True},
                "timestamp": NOW_MS + 123,
            },
        ]
    }


async def test_report_usage_of_nothing_sends_nothing(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    assert await make_source().report_usage([]) == []
    assert fake.seen["usage"] == []


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503), Fault(status=502), Fault(status=429), Fault(drop=True), Fault(hang=True)],
    ids=["503", "502", "429", "dropped", "read-timeout"],
)
async def test_report_usage_is_not_retried_once_it_may_have_arrived(
    fake: FakeUpstream, make_source: MakeSource, fault: Fault
) -> None:
    fake.fail("usage", fault)

    with pytest.raises(SourceUnavailable):
        await make_source(retries=3, timeout=0.3).report_usage([UsageReport("c", "f", 1)])
    assert len(fake.seen["usage"]) == 1


async def test_report_usage_is_retried_when_it_provably_never_left(
    make_source: MakeSource,
) -> None:
    # Nothing listens on the port for the first attempt; a trace hook starts the
    # server as soon as that attempt fails, so the retry finds it.
    port = free_port()
    late = FakeUpstream(port=port)
    attempts: list[str] = []

    async def on_exception(*_: Any) -> None:
        attempts.append("failed")
        await late.start()

    async def on_start(*_: Any) -> None:
        attempts.append("sent")

    trace = aiohttp.TraceConfig()
    trace.on_request_exception.append(on_exception)
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        source = make_source(api_url=f"http://127.0.0.1:{port}", session=session)
        try:
            [ack] = await source.report_usage([UsageReport("c", "f", 2)])
        finally:
            await late.close()

    assert attempts == ["sent", "failed", "sent"]
    assert ack.usage is not None and ack.usage.current_usage == 2
    assert len(late.seen["usage"]) == 1


async def test_report_usage_rejection_carries_upstream_message(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    fake.fail("usage", Fault(status=422, body=error_body("NOT_ENTITLED", "feature f not entitled")))

    with pytest.raises(SourceRejected, match=r"^feature f not entitled$"):
        await make_source().report_usage([UsageReport("c", "f", 1)])


@pytest.mark.parametrize(
    "results",
    [
        [],
        [{"measurementId": "m", "customerId": "c", "featureId": "f"}] * 2,
        [{"measurementId": "m", "customerId": "other", "featureId": "f"}],
        [{"measurementId": "m", "customerId": "c", "featureId": "g"}],
        [{"measurementId": "m", "customerId": "c", "featureId": "f", "resourceId": "r"}],
        [{"customerId": "c", "featureId": "f"}],
        [{"measurementId": "m", "customerId": "c", "featureId": "f", "usage": {"x": 1}}],
        [{"measurementId": "m", "customerId": "c", "featureId": "f", "credit": {"granted": 1}}],
    ],
    ids=["none", "too-many", "customer", "feature", "resource", "no-id", "usage", "credit"],
)
async def test_report_usage_with_acks_that_do_not_fit_is_unavailable(
    fake: FakeUpstream, make_source: MakeSource, results: list[dict[str, Any]]
) -> None:
    fake.usage_results = results

    with pytest.raises(SourceUnavailable, match="invalid payload"):
        await make_source().report_usage([UsageReport("c", "f", 1)])


async def test_a_non_finite_value_is_an_invalid_argument(make_source: MakeSource) -> None:
    with pytest.raises(InvalidArgument):
        await make_source().report_usage([UsageReport("c", "f", math.nan)])


# ----------------------------------------------------------------- report_events


async def test_report_events_sends_the_contract_body(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    events = [
        RawEvent("login", "c1", "k-1"),
        RawEvent(
            "upload",
            "c2",
            "k-2",
            resource_id="r/2",
            dimensions={"bytes": 1024, "kind": "png", "public": False},
            timestamp=NOW,
        ),
    ]

    await make_source().report_events(events)

    [seen] = fake.seen["events"]
    assert seen.raw_path == "/v1/events"
    assert seen.body == {
        "events": [
            {"eventName": "login", "customerId": "c1", "idempotencyKey": "k-1"},
            {
                "eventName": "upload",
                "customerId": "c2",
                "idempotencyKey": "k-2",
                "resourceId": "r/2",
                "dimensions": {"bytes": 1024, "kind": "png", "public": False},
                "timestamp": NOW_MS,
            },
        ]
    }


@pytest.mark.parametrize(
    "fault",
    [Fault(status=503), Fault(drop=True), Fault(hang=True)],
    ids=["503", "dropped", "read-timeout"],
)
async def test_report_events_is_retried_because_it_is_idempotent(
    fake: FakeUpstream, make_source: MakeSource, fault: Fault
) -> None:
    fake.fail("events", fault)

    await make_source(retries=1, timeout=0.3).report_events([RawEvent("e", "c", "k")])

    seen = fake.seen["events"]
    assert len(seen) == 2
    assert seen[0].body == seen[1].body


async def test_report_events_rejection(fake: FakeUpstream, make_source: MakeSource) -> None:
    fake.fail("events", Fault(status=400, body=error_body("BAD", "eventName is required")))

    with pytest.raises(SourceRejected, match="eventName is required"):
        await make_source().report_events([RawEvent("", "c", "k")])


async def test_report_events_of_nothing_sends_nothing(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    await make_source().report_events([])
    assert fake.seen["events"] == []


# ------------------------------------------------------------------- lifecycle


async def test_aclose_closes_the_session_it_created(make_source: MakeSource) -> None:
    source = make_source()
    await source.fetch("c", None)
    session = source._session
    assert session is not None

    await source.aclose()

    assert session.closed
    with pytest.raises(SourceUnavailable, match="closed"):
        await source.fetch("c", None)


async def test_aclose_leaves_an_injected_session_open(make_source: MakeSource) -> None:
    async with aiohttp.ClientSession() as session:
        source = make_source(session=session)
        await source.fetch("c", None)
        await source.aclose()
        assert not session.closed


async def test_concurrent_fetches_share_the_pool(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    source = make_source()
    got = await asyncio.gather(*(source.fetch(f"c{i}", None) for i in range(50)))

    assert [s.state.customer_id for s in got] == [f"c{i}" for i in range(50)]
    assert len(fake.seen["fetch"]) == 50


@pytest.mark.parametrize(
    "overrides",
    [
        {"api_url": "ftp://host"},
        {"api_url": "/relative"},
        {"api_url": "http://"},
        {"timeout": 0},
        {"connect_timeout": -1},
        {"backoff_base": math.inf},
        {"backoff_max": math.nan},
        {"retries": -1},
        {"api_key": ""},
    ],
)
def test_bad_configuration_fails_fast(overrides: dict[str, Any]) -> None:
    options: dict[str, Any] = {"api_url": "http://127.0.0.1:1", "api_key": "k", **overrides}
    with pytest.raises(ValueError, match=next(iter(overrides))):
        HttpUpstreamSource(**options)


def test_it_satisfies_the_source_protocol() -> None:
    # The real check is mypy's: this assignment does not type-check otherwise.
    source: EntitlementSource = HttpUpstreamSource(api_url="http://127.0.0.1:1", api_key="k")
    assert callable(source.changes)


# --------------------------------------------------------- report_usage with keys


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=503),
        Fault(status=500),
        Fault(status=429),
        Fault(drop=True),
        Fault(hang=True),
    ],
    ids=["503", "500", "429", "dropped", "read-timeout"],
)
async def test_keyed_report_usage_is_retried_once_it_may_have_arrived(
    fake: FakeUpstream, make_source: MakeSource, fault: Fault
) -> None:
    fake.fail("usage", fault)
    source = make_source(retries=3, timeout=0.3)

    [ack] = await source.report_usage([UsageReport("c", "f", 1, idempotency_key="k-1")])

    # The same key both times: upstream counts it once and answers the repeat as the first.
    assert [seen.body["usages"][0]["idempotencyKey"] for seen in fake.seen["usage"]] == [
        "k-1",
        "k-1",
    ]
    assert ack.customer_id == "c" and source.usage_retries == 1


async def test_a_report_without_a_key_in_the_batch_keeps_the_whole_batch_unretried(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    fake.fail("usage", Fault(status=503))
    reports = [UsageReport("c", "f", 1, idempotency_key="k"), UsageReport("c", "f", 2)]

    with pytest.raises(SourceUnavailable):
        await make_source(retries=3).report_usage(reports)
    assert len(fake.seen["usage"]) == 1


async def test_keyed_retries_stop_at_the_callers_deadline(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    fake.fail("usage", *[Fault(hang=True)] * 5)
    # Attempts would each wait 30 s; the deadline cuts the first one short and starts no other.
    source = make_source(retries=5, timeout=30.0)
    deadline = time.monotonic() + 0.4

    async with asyncio.timeout(10):
        with pytest.raises(SourceUnavailable):
            await source.report_usage(
                [UsageReport("c", "f", 1, idempotency_key="k")], deadline=deadline
            )
    assert len(fake.seen["usage"]) == 1


async def test_no_attempt_is_started_past_the_deadline(
    fake: FakeUpstream, make_source: MakeSource
) -> None:
    with pytest.raises(SourceUnavailable, match="deadline"):
        await make_source().report_usage(
            [UsageReport("c", "f", 1, idempotency_key="k")], deadline=time.monotonic()
        )
    assert fake.seen["usage"] == []
