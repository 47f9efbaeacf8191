"""The test clock over HTTP: refused unless enabled; forward only; every due change applied and
in the change feed before the answer. Then customers walked through time: a usage period that
resets, a trial that ends, a promotion and a credit grant that expire, a scheduled cancellation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from tests.integration.upstream.support import (
    API_KEY,
    CATALOG,
    NO_BODY,
    Api,
    upstream_settings,
)
from upstream.catalog.loader import load_catalog
from upstream.server import UpstreamServer
from upstream.service import SubscriptionRequest, Upstream
from upstream.store.sqlite import Store
from upstream.testclock import MAX_OFFSET, TestClock

DAY = 24 * 3600


@pytest.fixture
async def clocked(tmp_path: Path) -> AsyncIterator[UpstreamServer]:
    """A live upstream started with TEST_CLOCK_ENABLED=1."""
    settings = dataclasses.replace(upstream_settings(tmp_path), test_clock_enabled=True)
    async with UpstreamServer(settings) as server:
        yield server


@pytest.fixture
async def capi(clocked: UpstreamServer) -> AsyncIterator[Api]:
    url = f"http://127.0.0.1:{clocked.port}"
    async with aiohttp.ClientSession(url, headers={"X-API-KEY": API_KEY}) as session:
        yield Api(session)


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def clock(api: Api) -> dict[str, Any]:
    body: dict[str, Any] = await api.ok("GET", "/v1/test-clock")
    return body


async def advance(api: Api, **body: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await api.ok("POST", "/v1/test-clock/advance", body)
    return answer


async def entitlements(api: Api, customer: str) -> dict[str, Any]:
    body: dict[str, Any] = await api.ok("GET", f"/v1/customers/{customer}/entitlements")
    return body


def feature(state: dict[str, Any], feature_id: str) -> dict[str, Any] | None:
    return next((f for f in state["features"] if f["feature"]["id"] == feature_id), None)


async def provision(api: Api, customer: str, plan: str, **subscription: Any) -> dict[str, Any]:
    body = {"id": customer, "subscription": {"planId": plan, **subscription}}
    created: dict[str, Any] = await api.ok("POST", "/v1/customers", body, 201)
    return created


# ------------------------------------------------------------ off by default


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/v1/test-clock", NO_BODY), ("POST", "/v1/test-clock/advance", {"seconds": 60})],
)
async def test_disabled_by_default_and_refused_with_how_to_enable(
    api: Api, upstream: UpstreamServer, method: str, path: str, body: Any
) -> None:
    assert upstream.test_clock is None
    before = datetime.now(UTC)
    reply = await api.call(method, path, body)
    assert reply.status == 404
    assert reply.error["code"] == "TEST_CLOCK_DISABLED"
    assert "TEST_CLOCK_ENABLED=1" in reply.error["message"]
    assert "test environments only" in reply.error["message"]
    # Nothing moved: upstream still reads the wall clock.
    assert before <= upstream.upstream.clock() <= datetime.now(UTC)


@pytest.mark.parametrize("enabled", [False, True])
async def test_the_ready_line_says_whether_the_test_clock_is_on(
    tmp_path: Path, enabled: bool
) -> None:
    settings = dataclasses.replace(upstream_settings(tmp_path), test_clock_enabled=enabled)
    with structlog.testing.capture_logs() as logs:
        async with UpstreamServer(settings):
            pass
    ready = next(e for e in logs if e["event"] == "upstream_ready")
    assert ready["test_clock"] == ("on" if enabled else "off")
    warned = [e for e in logs if e["event"] == "test_clock_enabled"]
    assert [e["log_level"] for e in warned] == (["warning"] if enabled else [])


async def test_the_key_is_checked_before_the_setting(anonymous: aiohttp.ClientSession) -> None:
    reply = await Api(anonymous).post("/v1/test-clock/advance", {"seconds": 60})
    assert (reply.status, reply.error["code"]) == (401, "UNAUTHENTICATED")


# ------------------------------------------------------------------ enabled


async def test_reads_real_time_until_advanced(capi: Api) -> None:
    before = datetime.now(UTC)
    body = await clock(capi)
    assert set(body) == {"now", "nowMs", "offsetSeconds"}
    assert body["offsetSeconds"] == 0
    now = parse(body["now"])
    assert before - timedelta(milliseconds=1) <= now <= datetime.now(UTC)
    assert body["nowMs"] == ms(now)


async def test_advance_by_seconds(capi: Api, clocked: UpstreamServer) -> None:
    answer = await advance(capi, seconds=DAY + 0.5)
    assert answer["offsetSeconds"] == DAY + 0.5
    assert set(answer) == {"now", "nowMs", "offsetSeconds", "statesChanged"}
    now = parse(answer["now"])
    assert abs((now - datetime.now(UTC)).total_seconds() - (DAY + 0.5)) < 5
    # Upstream's operations read the same clock.
    assert abs((clocked.upstream.clock() - now).total_seconds()) < 5
    again = await advance(capi, seconds=DAY)
    assert again["offsetSeconds"] == 2 * DAY + 0.5
    assert (await clock(capi))["offsetSeconds"] == 2 * DAY + 0.5


@pytest.mark.parametrize(
    "render",
    [
        lambda at: at.isoformat().replace("+00:00", "Z"),
        lambda at: at.astimezone(timezone(timedelta(hours=-5))).isoformat(),
        ms,
    ],
    ids=["rfc3339-z", "rfc3339-offset", "epoch-ms"],
)
async def test_advance_to_an_instant(capi: Api, render: Any) -> None:
    target = (datetime.now(UTC) + timedelta(days=40)).replace(microsecond=0)
    answer = await advance(capi, to=render(target))
    now = parse(answer["now"])
    assert target <= now < target + timedelta(seconds=5)
    assert abs(answer["offsetSeconds"] - 40 * DAY) < 5


async def test_advance_by_zero_applies_what_is_due_and_nothing_else(capi: Api) -> None:
    # A weekly reset anchored on the start: nothing can fall due during the test by itself.
    await provision(capi, "acme", "workspace-basic", resourceId="ws-1")
    answer = await advance(capi, seconds=0)
    assert (answer["offsetSeconds"], answer["statesChanged"]) == (0, 0)


def _past() -> str:
    return (datetime.now(UTC) - timedelta(minutes=1)).isoformat()


BAD_BODIES: list[tuple[Any, str | None, str]] = [
    ({}, "seconds", "is required"),
    ({"seconds": None}, "seconds", "must be a number"),
    ({"seconds": "60"}, "seconds", "must be a number"),
    ({"seconds": True}, "seconds", "must be a number"),
    ({"seconds": [60]}, "seconds", "must be a number"),
    ({"seconds": -1}, "seconds", "only moves forward"),
    ({"seconds": MAX_OFFSET.total_seconds() + 1}, "seconds", "more than 3660 days"),
    ({"seconds": 1e308}, "seconds", "more than 3660 days"),
    ({"seconds": 60, "to": "2999-01-01T00:00:00Z"}, "to", "either seconds or to"),
    ({"to": None}, "to", "must be an RFC 3339 date-time"),
    ({"to": "next tuesday"}, "to", "ISO-8601"),
    ({"to": "2999-01-01T00:00:00"}, "to", "time zone"),
    ({"to": "9999-12-31T23:59:59Z"}, "to", "more than 3660 days ahead"),
    ({"to": 10**20}, "to", "out of range"),
    ({"to": 1.5}, "to", "ISO-8601"),
    ([], None, "expected a JSON object"),
]


@pytest.mark.parametrize(("body", "field", "message"), BAD_BODIES)
async def test_bad_input_is_refused_naming_the_field(
    capi: Api, body: Any, field: str | None, message: str
) -> None:
    reply = await capi.post("/v1/test-clock/advance", body)
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "INVALID_ARGUMENT"
    assert reply.error.get("field") == field
    assert message in reply.error["message"]
    assert (await clock(capi))["offsetSeconds"] == 0, "a refused advance moves nothing"


async def test_going_backwards_is_refused(capi: Api) -> None:
    await advance(capi, seconds=3600)
    reply = await capi.post("/v1/test-clock/advance", {"to": _past()})
    assert (reply.status, reply.error["field"]) == (400, "to")
    assert "only moves forward" in reply.error["message"]
    assert (await clock(capi))["offsetSeconds"] == 3600


@pytest.mark.parametrize("raw", [b'{"seconds": NaN}', b'{"seconds": Infinity}', b"{"])
async def test_non_finite_or_broken_json_is_refused(capi: Api, raw: bytes) -> None:
    reply = await capi.call("POST", "/v1/test-clock/advance", raw=raw)
    assert reply.status == 400
    assert (await clock(capi))["offsetSeconds"] == 0


# ------------------------------------------------------- walks through time


async def test_a_monthly_usage_period_resets(capi: Api) -> None:
    await provision(capi, "acme", "free")
    reply = await capi.post(
        "/v1/usage", {"usages": [{"customerId": "acme", "featureId": "api-calls", "value": 120}]}
    )
    assert reply.status == 200, reply.body
    before = await entitlements(capi, "acme")
    usage = before["featureUsage"]["api-calls"]
    assert usage["currentUsage"] == 120
    period_end = usage["usagePeriodEnd"]
    head = (await capi.ok("GET", "/v1/changes?after=0&limit=0"))["head"]

    # One second short of the period end: still the same period.
    short = await advance(capi, to=period_end - 1000)
    assert (await entitlements(capi, "acme"))["featureUsage"]["api-calls"]["currentUsage"] == 120
    assert short["nowMs"] < period_end

    answer = await advance(capi, seconds=2)
    assert answer["statesChanged"] >= 1
    after = await entitlements(capi, "acme")
    usage = after["featureUsage"]["api-calls"]
    assert usage["currentUsage"] == 0
    assert usage["usagePeriodStart"] == period_end
    assert usage["usagePeriodEnd"] > period_end
    assert after["version"] > before["version"]

    # The new state is in the change feed already (committed before the answer).
    feed = await capi.ok("GET", f"/v1/changes?after={head}")
    published = [
        e["snapshot"]
        for e in feed["events"]
        if e["kind"] == "entitlements.updated" and e["customerId"] == "acme"
    ]
    assert published, "the reset was not published"
    assert published[-1]["featureUsage"]["api-calls"]["currentUsage"] == 0
    assert published[-1]["version"] == after["version"]

    # Usage reported now counts in the new period.
    reply = await capi.post(
        "/v1/usage", {"usages": [{"customerId": "acme", "featureId": "api-calls", "value": 7}]}
    )
    assert reply.body["results"][0]["usage"]["currentUsage"] == 7


async def test_a_trial_ends(capi: Api) -> None:
    created = await provision(capi, "acme", "enterprise")
    subscription = created["subscription"]
    assert subscription["status"] == "TRIAL"
    sso = feature(await entitlements(capi, "acme"), "sso")
    assert sso is not None and sso["accessDeniedReason"] is None

    await advance(capi, to=subscription["trialEnd"] - 1000)
    assert feature(await entitlements(capi, "acme"), "sso") is not None

    answer = await advance(capi, seconds=2)
    assert answer["statesChanged"] >= 1
    state = await entitlements(capi, "acme")
    assert state["accessDeniedReason"] == "NO_ACTIVE_SUBSCRIPTION"
    assert feature(state, "sso") is None


async def test_a_promotion_expires(capi: Api) -> None:
    await provision(capi, "acme", "free")
    expires = ms(parse((await clock(capi))["now"]) + timedelta(days=3))
    await capi.ok(
        "POST",
        "/v1/promotions",
        {"customerId": "acme", "featureId": "sso", "expiresAt": expires},
        201,
    )
    assert feature(await entitlements(capi, "acme"), "sso") is not None
    await advance(capi, seconds=2 * DAY)
    assert feature(await entitlements(capi, "acme"), "sso") is not None
    answer = await advance(capi, seconds=DAY + 1)
    assert answer["statesChanged"] >= 1
    assert feature(await entitlements(capi, "acme"), "sso") is None


async def test_a_credit_grant_expires(capi: Api) -> None:
    await provision(capi, "acme", "free")
    expires = ms(parse((await clock(capi))["now"]) + timedelta(days=10))
    await capi.ok(
        "POST",
        "/v1/credits/grants",
        {"customerId": "acme", "currencyId": "ai-credits", "amount": 100, "expiresAt": expires},
        201,
    )
    balance = await capi.ok("GET", "/v1/customers/acme/credits/ai-credits")
    assert balance["remaining"] == 100
    await advance(capi, seconds=11 * DAY)
    balance = await capi.ok("GET", "/v1/customers/acme/credits/ai-credits")
    assert (balance["granted"], balance["remaining"]) == (0, 0)


async def test_a_scheduled_cancellation_takes_effect(capi: Api) -> None:
    created = await provision(capi, "acme", "pro")
    cancel_at = ms(parse((await clock(capi))["now"]) + timedelta(days=5))
    await capi.ok(
        "POST",
        f"/v1/subscriptions/{created['subscription']['id']}/cancel",
        {"cancellationDate": cancel_at},
    )
    assert (await entitlements(capi, "acme"))["accessDeniedReason"] is None
    answer = await advance(capi, to=cancel_at + 1000)
    assert answer["statesChanged"] >= 1
    assert (await entitlements(capi, "acme"))["accessDeniedReason"] == "NO_ACTIVE_SUBSCRIPTION"


async def test_recurring_credits_are_issued_for_the_new_period(capi: Api) -> None:
    await provision(capi, "acme", "pro")
    reply = await capi.post(
        "/v1/usage", {"usages": [{"customerId": "acme", "featureId": "ai-tokens", "value": 4000}]}
    )
    assert reply.status == 200, reply.body
    balance = await capi.ok("GET", "/v1/customers/acme/credits/ai-credits")
    assert balance["remaining"] == 10000 - 4000 * 0.5
    await advance(capi, seconds=32 * DAY)
    balance = await capi.ok("GET", "/v1/customers/acme/credits/ai-credits")
    # Last month's grant expired with its period; this month's is whole.
    assert balance["remaining"] == 10000


# ---------------------------------------------- more due than one batch holds


def test_an_advance_applies_every_due_state_not_just_one_batch(tmp_path: Path) -> None:
    """process_due takes a bounded batch (500 states); an advance must apply them all."""
    start = datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
    test_clock = TestClock(lambda: start)
    store = Store(str(tmp_path / "batch.db"))
    try:
        up = Upstream(store, load_catalog(CATALOG), clock=test_clock.now)
        customers = 620
        for i in range(customers):
            up.provision_customer(
                f"c{i}", subscription=SubscriptionRequest(f"c{i}", "free", skip_trial=True)
            )
        test_clock.advance(3600)  # the calendar-anchored hourly email reset of every customer
        assert up.process_all_due() == customers
        due = up.next_due()
        assert due is not None and due > test_clock.now()
        assert up.process_all_due() == 0
    finally:
        store.close()
