"""Upstream's HTTP contract, end to end against a live server.

Happy paths first (customers, subscriptions, promotions, credits, usage, events,
entitlement state, change feed, snapshot), then every 4xx with its JSON body,
then all-or-nothing batches, then regression cases for server bugs found by this suite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.integration.upstream.support import API_KEY, NO_BODY, Api, Reply
from upstream.api.app import MAX_BODY_BYTES
from upstream.api.routes import MAX_EVENT_BATCH, MAX_USAGE_BATCH

DAY_MS = 24 * 3600 * 1000
LONG_ID = "x" * 257
MAX_ID = "x" * 256

# ------------------------------------------------------------------- helpers


def usage_item(customer: str, feature: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"customerId": customer, "featureId": feature, "value": value, **extra}


def event(customer: str, name: str, key: str, **dimensions: Any) -> dict[str, Any]:
    return {
        "eventName": name,
        "customerId": customer,
        "idempotencyKey": key,
        "dimensions": dimensions,
    }


def features(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["feature"]["id"]: f for f in snapshot["features"]}


def feature_usage(snapshot: dict[str, Any], feature_id: str) -> float | None:
    record = snapshot["featureUsage"].get(feature_id)
    return None if record is None else float(record["currentUsage"])


def future_iso(days: int) -> tuple[str, int]:
    """An ISO-8601 instant ``days`` from now (whole seconds) and its epoch milliseconds."""
    at = (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)
    return at.isoformat().replace("+00:00", "Z"), int(at.timestamp()) * 1000


async def provision(api: Api, customer: str, plan: str | None = None, **subscription: Any) -> Any:
    body: dict[str, Any] = {"id": customer}
    if plan is not None:
        body["subscription"] = {"planId": plan, **subscription}
    return await api.ok("POST", "/v1/customers", body, 201)


async def entitlements(api: Api, customer: str, resource: str | None = None) -> Any:
    path = f"/v1/customers/{customer}/entitlements"
    reply = await (api.get(path, resourceId=resource) if resource else api.get(path))
    assert reply.status == 200, reply.body
    return reply.body


async def balance(api: Api, customer: str, currency: str) -> dict[str, Any]:
    body: dict[str, Any] = await api.ok("GET", f"/v1/customers/{customer}/credits/{currency}")
    return body


async def report(api: Api, *items: dict[str, Any]) -> Reply:
    return await api.post("/v1/usage", {"usages": list(items)})


# -------------------------------------------------------------- customers


async def test_customer_provision_get_update_archive(api: Api) -> None:
    created = await api.ok(
        "POST",
        "/v1/customers",
        {"id": "acme", "name": "Acme", "email": "ops@acme.test", "metadata": {"tier": "gold"}},
        201,
    )
    customer = created["customer"]
    assert created["subscription"] is None
    assert customer == {
        "id": "acme",
        "name": "Acme",
        "email": "ops@acme.test",
        "metadata": {"tier": "gold"},
        "createdAt": customer["createdAt"],
        "archivedAt": None,
    }
    assert isinstance(customer["createdAt"], int)

    assert await api.ok("GET", "/v1/customers/acme") == {"customer": customer, "subscriptions": []}
    state = await entitlements(api, "acme")
    assert state["accessDeniedReason"] == "NO_ACTIVE_SUBSCRIPTION"
    assert state["features"] == []

    # Absent fields stay as they were; metadata, when present, is replaced whole.
    renamed = await api.ok("PATCH", "/v1/customers/acme", {"name": "Acme Inc"})
    assert renamed["customer"] == {**customer, "name": "Acme Inc"}
    remeta = await api.ok("PATCH", "/v1/customers/acme", {"metadata": {"region": "eu"}})
    assert remeta["customer"] == {**customer, "name": "Acme Inc", "metadata": {"region": "eu"}}

    archived = (await api.ok("POST", "/v1/customers/acme/archive"))["customer"]
    assert isinstance(archived["archivedAt"], int)
    # Archiving is idempotent: the first instant stays.
    again = (await api.ok("POST", "/v1/customers/acme/archive"))["customer"]
    assert again == archived
    assert (await entitlements(api, "acme"))["accessDeniedReason"] == "CUSTOMER_IS_ARCHIVED"


async def test_customer_ids_up_to_256_characters(api: Api) -> None:
    created = await api.ok("POST", "/v1/customers", {"id": MAX_ID}, 201)
    assert created["customer"]["id"] == MAX_ID
    assert (await api.ok("GET", f"/v1/customers/{MAX_ID}"))["customer"]["id"] == MAX_ID


async def test_customer_with_initial_subscription(api: Api) -> None:
    created = await provision(api, "acme", "enterprise", id="sub-acme")
    sub = created["subscription"]
    assert sub["id"] == "sub-acme"
    assert (sub["customerId"], sub["planId"], sub["status"]) == ("acme", "enterprise", "TRIAL")
    assert sub["trialEnd"] == sub["startDate"] + 14 * DAY_MS
    got = await api.ok("GET", "/v1/customers/acme")
    assert got["subscriptions"] == [sub]
    state = await entitlements(api, "acme")
    assert state["accessDeniedReason"] is None
    assert {"sso", "audit-log", "gpu-minutes", "active-users"} <= set(features(state))


# ---------------------------------------------------------- subscriptions


@dataclass(frozen=True)
class TrialCase:
    plan: str
    skip_trial: bool
    status: str
    trial_days: int | None
    resource: str | None = None


TRIALS = [
    TrialCase("enterprise", False, "TRIAL", 14),
    TrialCase("enterprise", True, "ACTIVE", None),
    TrialCase("pro", False, "ACTIVE", None),
    TrialCase("workspace-plus", False, "TRIAL", 7, resource="ws-1"),
    TrialCase("workspace-plus", True, "ACTIVE", None, resource="ws-1"),
]


@pytest.mark.parametrize("case", TRIALS, ids=lambda c: f"{c.plan}-skip{c.skip_trial}")
async def test_subscription_trial_or_skip_trial(api: Api, case: TrialCase) -> None:
    await provision(api, "acme")
    body: dict[str, Any] = {"customerId": "acme", "planId": case.plan, "skipTrial": case.skip_trial}
    if case.resource:
        body["resourceId"] = case.resource
    sub = (await api.ok("POST", "/v1/subscriptions", body, 201))["subscription"]
    assert sub["status"] == case.status
    assert sub["resourceId"] == case.resource
    assert sub["endedAt"] is None and sub["cancellationDate"] is None
    if case.trial_days is None:
        assert sub["trialEnd"] is None
    else:
        assert sub["trialEnd"] == sub["startDate"] + case.trial_days * DAY_MS


async def test_subscription_replaces_the_same_products_subscription(api: Api) -> None:
    first = (await provision(api, "acme", "pro"))["subscription"]
    second = (
        await api.ok(
            "POST", "/v1/subscriptions", {"customerId": "acme", "planId": "enterprise"}, 201
        )
    )["subscription"]
    # One trial per customer and product: the returning customer starts paid.
    assert second["status"] == "ACTIVE" and second["trialEnd"] is None
    subs = {s["id"]: s for s in (await api.ok("GET", "/v1/customers/acme"))["subscriptions"]}
    assert subs[first["id"]]["status"] == "REPLACED"
    assert subs[first["id"]]["endedAt"] == second["startDate"]
    assert subs[second["id"]] == second
    assert "sso" in features(await entitlements(api, "acme"))
    # A replaced subscription can no longer be changed.
    reply = await api.patch(f"/v1/subscriptions/{first['id']}", {"addons": []})
    assert (reply.status, reply.error["code"]) == (400, "INVALID_ARGUMENT")


async def test_resource_scoped_subscriptions_are_per_resource(api: Api) -> None:
    await provision(api, "acme")
    one = await api.ok(
        "POST",
        "/v1/subscriptions",
        {"customerId": "acme", "planId": "workspace-basic", "resourceId": "ws-1"},
        201,
    )
    two = await api.ok(
        "POST",
        "/v1/subscriptions",
        {"customerId": "acme", "planId": "workspace-basic", "resourceId": "ws-2"},
        201,
    )
    subs = {s["id"]: s for s in (await api.ok("GET", "/v1/customers/acme"))["subscriptions"]}
    assert subs[one["subscription"]["id"]]["status"] == "ACTIVE"
    assert subs[two["subscription"]["id"]]["status"] == "ACTIVE"
    ws1 = await entitlements(api, "acme", "ws-1")
    assert ws1["resourceId"] == "ws-1"
    assert features(ws1)["max-projects"]["usageLimit"] == 5.0
    # Workspace subscriptions grant nothing at the account level.
    account = await entitlements(api, "acme")
    assert (account["accessDeniedReason"], account["features"]) == ("NO_ACTIVE_SUBSCRIPTION", [])
    # Upgrading one workspace replaces only that workspace's subscription.
    plus = await api.ok(
        "POST",
        "/v1/subscriptions",
        {"customerId": "acme", "planId": "workspace-plus", "resourceId": "ws-1"},
        201,
    )
    subs = {s["id"]: s for s in (await api.ok("GET", "/v1/customers/acme"))["subscriptions"]}
    assert subs[one["subscription"]["id"]]["status"] == "REPLACED"
    assert subs[two["subscription"]["id"]]["status"] == "ACTIVE"
    # ws-1 had a subscription of the product already: no second trial (plus has 7 days).
    assert subs[plus["subscription"]["id"]]["status"] == "ACTIVE"
    assert features(await entitlements(api, "acme", "ws-1"))["storage-gb"]["usageLimit"] == 250.0


async def test_update_addons_and_billable_quantities(api: Api) -> None:
    sub = (
        await provision(
            api, "acme", "pro", billableFeatures=[{"featureId": "seats", "quantity": 4}]
        )
    )["subscription"]
    state = features(await entitlements(api, "acme"))
    assert state["seats"]["usageLimit"] == 4.0  # pro: 1 seat per purchased unit
    assert state["api-calls"]["usageLimit"] == 100000.0

    path = f"/v1/subscriptions/{sub['id']}"
    updated = await api.ok(
        "PATCH", path, {"addons": [{"addonId": "extra-api-calls", "quantity": 2}]}
    )
    assert updated["subscription"]["addons"] == [{"addonId": "extra-api-calls", "quantity": 2}]
    assert updated["subscription"]["billableFeatures"] == [{"featureId": "seats", "quantity": 4}]
    assert features(await entitlements(api, "acme"))["api-calls"]["usageLimit"] == 200000.0

    # Quantities replace; add-ons not mentioned stay.
    updated = await api.ok(
        "PATCH", path, {"billableFeatures": [{"featureId": "seats", "quantity": 10}]}
    )
    assert updated["subscription"]["addons"] == [{"addonId": "extra-api-calls", "quantity": 2}]
    state = features(await entitlements(api, "acme"))
    assert state["seats"]["usageLimit"] == 10.0
    assert state["api-calls"]["usageLimit"] == 200000.0

    # An add-on without a quantity counts once; an empty list removes them all.
    await api.ok("PATCH", path, {"addons": [{"addonId": "extra-api-calls"}]})
    assert features(await entitlements(api, "acme"))["api-calls"]["usageLimit"] == 150000.0
    await api.ok("PATCH", path, {"addons": []})
    assert features(await entitlements(api, "acme"))["api-calls"]["usageLimit"] == 100000.0


async def test_cancel_schedule_clear_and_cancel_now(api: Api) -> None:
    sub = (await provision(api, "acme", "pro"))["subscription"]
    path = f"/v1/subscriptions/{sub['id']}/cancel"
    iso, ms = future_iso(30)

    scheduled = (await api.ok("POST", path, {"cancellationDate": iso}))["subscription"]
    assert (scheduled["status"], scheduled["cancellationDate"]) == ("ACTIVE", ms)
    assert scheduled["endedAt"] is None
    assert (await entitlements(api, "acme"))["accessDeniedReason"] is None

    # Epoch milliseconds work too.
    _, later = future_iso(60)
    rescheduled = (await api.ok("POST", path, {"cancellationDate": later}))["subscription"]
    assert rescheduled["cancellationDate"] == later

    cleared = (await api.ok("POST", path, {"cancellationDate": None}))["subscription"]
    assert (cleared["status"], cleared["cancellationDate"]) == ("ACTIVE", None)

    cancelled = (await api.ok("POST", path))["subscription"]
    assert cancelled["status"] == "CANCELLED"
    assert cancelled["endedAt"] is not None
    assert cancelled["cancellationDate"] == cancelled["endedAt"]
    assert (await entitlements(api, "acme"))["accessDeniedReason"] == "NO_ACTIVE_SUBSCRIPTION"


# -------------------------------------------------------------- promotions


async def test_promotions_grant_and_revoke(api: Api) -> None:
    await provision(api, "acme", "free")
    assert "sso" not in features(await entitlements(api, "acme"))

    promo = (
        await api.ok(
            "POST",
            "/v1/promotions",
            {"id": "promo-sso", "customerId": "acme", "featureId": "sso"},
            201,
        )
    )["promotion"]
    assert promo == {
        "id": "promo-sso",
        "customerId": "acme",
        "featureId": "sso",
        "resourceId": None,
        "value": None,
        "unlimited": False,
        "softLimit": False,
        "enumValues": [],
        "resetPeriod": None,
        "expiresAt": None,
        "revokedAt": None,
    }
    seats = (
        await api.ok(
            "POST", "/v1/promotions", {"customerId": "acme", "featureId": "seats", "value": 50}, 201
        )
    )["promotion"]
    assert seats["id"].startswith("promo-") and seats["value"] == 50.0
    state = features(await entitlements(api, "acme"))
    assert "sso" in state
    assert state["seats"]["usageLimit"] == 50.0  # most generous of plan (3) and promotion

    revoked = (await api.ok("DELETE", "/v1/promotions/promo-sso"))["promotion"]
    assert isinstance(revoked["revokedAt"], int)
    assert (await api.ok("DELETE", "/v1/promotions/promo-sso"))["promotion"] == revoked
    state = features(await entitlements(api, "acme"))
    assert "sso" not in state
    assert state["seats"]["usageLimit"] == 50.0


# ----------------------------------------------------------------- credits


@pytest.mark.parametrize("grant_type", ["PAID", "PROMOTIONAL"])
async def test_credit_grant_is_idempotent_by_key(api: Api, grant_type: str) -> None:
    await provision(api, "acme")
    body = {
        "customerId": "acme",
        "currencyId": "ai-credits",
        "amount": 100,
        "grantType": grant_type,
        "idempotencyKey": "topup-1",
    }
    first = (await api.ok("POST", "/v1/credits/grants", body, 201))["grant"]
    assert (first["grantType"], first["amount"], first["consumed"]) == (grant_type, 100.0, 0.0)
    assert first["idempotencyKey"] == "topup-1"
    second = (await api.ok("POST", "/v1/credits/grants", {**body, "amount": 999}, 201))["grant"]
    assert second == first
    assert await balance(api, "acme", "ai-credits") == {
        "currencyId": "ai-credits",
        "granted": 100.0,
        "consumed": 0.0,
        "remaining": 100.0,
    }


async def test_credit_grants_void_balance_and_ledger(api: Api) -> None:
    await provision(api, "acme")
    paid = (
        await api.ok(
            "POST",
            "/v1/credits/grants",
            {"customerId": "acme", "currencyId": "ai-credits", "amount": 100},
            201,
        )
    )["grant"]
    assert paid["grantType"] == "PAID"  # the default
    promo = (
        await api.ok(
            "POST",
            "/v1/credits/grants",
            {
                "customerId": "acme",
                "currencyId": "ai-credits",
                "amount": 50,
                "grantType": "PROMOTIONAL",
                "priority": 1,
            },
            201,
        )
    )["grant"]
    await api.ok(
        "POST",
        "/v1/credits/grants",
        {"customerId": "acme", "currencyId": "gpu-credits", "amount": 7},
        201,
    )
    assert (await balance(api, "acme", "ai-credits"))["granted"] == 150.0
    assert (await balance(api, "acme", "gpu-credits"))["granted"] == 7.0
    # A currency never granted has a zero balance.
    assert (await balance(api, "acme", "never-granted"))["granted"] == 0.0

    voided = (await api.ok("POST", f"/v1/credits/grants/{paid['id']}/void"))["grant"]
    assert isinstance(voided["voidedAt"], int)
    assert (await api.ok("POST", f"/v1/credits/grants/{paid['id']}/void"))["grant"] == voided
    assert await balance(api, "acme", "ai-credits") == {
        "currencyId": "ai-credits",
        "granted": 50.0,
        "consumed": 0.0,
        "remaining": 50.0,
    }

    ledger = await api.ok("GET", "/v1/customers/acme/credits/ledger?currencyId=ai-credits")
    entries = ledger["entries"]
    assert [(e["eventType"], e["grantId"], e["amount"]) for e in entries] == [
        ("CREDITS_GRANTED", paid["id"], 100.0),
        ("CREDITS_GRANTED", promo["id"], 50.0),
        ("CREDITS_VOIDED", paid["id"], 100.0),
    ]
    assert ledger["next"] == entries[-1]["id"]
    assert all(e["currencyId"] == "ai-credits" for e in entries)

    # Paging by cursor walks every entry (all currencies) exactly once, in order.
    seen: list[int] = []
    after = 0
    while True:
        page = await api.ok("GET", f"/v1/customers/acme/credits/ledger?after={after}&limit=2")
        if not page["entries"]:
            assert page["next"] is None
            break
        assert len(page["entries"]) <= 2
        seen += [e["id"] for e in page["entries"]]
        after = page["next"]
    assert seen == sorted(set(seen)) and len(seen) == 4


# ------------------------------------------------------------------- usage


async def test_usage_delta_set_and_idempotency(api: Api) -> None:
    await provision(api, "acme", "pro")
    reply = await report(api, usage_item("acme", "api-calls", 5))
    assert reply.status == 200, reply.body
    (result,) = reply.body["results"]
    assert (result["customerId"], result["featureId"], result["resourceId"]) == (
        "acme",
        "api-calls",
        None,
    )
    assert result["usage"]["currentUsage"] == 5.0
    assert result["credit"] is None  # not credit-backed
    assert isinstance(result["measurementId"], str)

    # Bulk: applied in order, one result per item.
    bulk = await report(
        api,
        usage_item("acme", "api-calls", 3),
        usage_item("acme", "storage-gb", 40, updateBehavior="SET"),
        usage_item("acme", "api-calls", 2, updateBehavior="SET"),
    )
    assert bulk.status == 200, bulk.body
    assert [r["usage"]["currentUsage"] for r in bulk.body["results"]] == [8.0, 40.0, 2.0]

    keyed = usage_item("acme", "api-calls", 10, idempotencyKey="u-1")
    first = await report(api, keyed)
    replay = await report(api, keyed)
    assert first.body["results"][0]["usage"]["currentUsage"] == 12.0
    assert replay.body["results"] == first.body["results"]
    # The same key twice in one batch counts once as well.
    twice = await report(
        api,
        usage_item("acme", "api-calls", 1, idempotencyKey="u-2"),
        usage_item("acme", "api-calls", 1, idempotencyKey="u-2"),
    )
    assert [r["usage"]["currentUsage"] for r in twice.body["results"]] == [13.0, 13.0]

    state = await entitlements(api, "acme")
    assert feature_usage(state, "api-calls") == 13.0
    assert feature_usage(state, "storage-gb") == 40.0


async def test_credit_backed_usage_burns_credits(api: Api) -> None:
    await provision(api, "acme", "pro")  # 10000 ai-credits a month; ai-tokens cost 0.5 each
    keyed = usage_item("acme", "ai-tokens", 10, idempotencyKey="tok-1")
    reply = await report(api, keyed)
    assert reply.status == 200, reply.body
    (result,) = reply.body["results"]
    assert result["usage"]["currentUsage"] == 10.0
    credit = result["credit"]
    assert (credit["currencyId"], credit["granted"], credit["consumed"]) == (
        "ai-credits",
        10000.0,
        5.0,
    )
    assert credit["usage"]["currentUsage"] == 5.0

    # A replay answers as before but charges nothing again.
    replay = (await report(api, keyed)).body["results"][0]
    assert replay["credit"]["consumed"] == 0.0
    assert replay["usage"] == result["usage"]
    assert await balance(api, "acme", "ai-credits") == {
        "currencyId": "ai-credits",
        "granted": 10000.0,
        "consumed": 5.0,
        "remaining": 9995.0,
    }
    state = await entitlements(api, "acme")
    assert state["creditUsage"]["ai-credits"]["currentUsage"] == 5.0
    assert feature_usage(state, "ai-tokens") == 10.0

    ledger = (await api.ok("GET", "/v1/customers/acme/credits/ledger"))["entries"]
    consumed = [e for e in ledger if e["eventType"] == "CREDITS_CONSUMED"]
    assert [(e["featureId"], e["amount"]) for e in consumed] == [("ai-tokens", 5.0)]


async def test_usage_batch_of_100_is_accepted(api: Api) -> None:
    await provision(api, "acme", "pro")
    reply = await report(api, *[usage_item("acme", "api-calls", 1)] * MAX_USAGE_BATCH)
    assert reply.status == 200, reply.body
    assert reply.body["results"][-1]["usage"]["currentUsage"] == float(MAX_USAGE_BATCH)


# ------------------------------------------------------------------ events


async def test_events_batch_with_duplicate_idempotency_keys(api: Api) -> None:
    await provision(api, "acme", "pro")
    batch = [
        event("acme", "api_request", "e-1", billable=True),
        event("acme", "api_request", "e-1", billable=True),  # duplicate within the batch
        event("acme", "api_request", "e-2", billable=True),
        event("acme", "api_request", "e-3", billable=False),  # filtered out by the meter
        event("acme", "pipeline_run", "e-1", gigabytes=2.5),  # keys are per event name
    ]
    reply = await api.post("/v1/events", {"events": batch})
    assert (reply.status, reply.body) == (202, {"accepted": 4, "duplicates": 1})
    again = await api.post("/v1/events", {"events": batch})
    assert (again.status, again.body) == (202, {"accepted": 0, "duplicates": 5})
    state = await entitlements(api, "acme")
    assert feature_usage(state, "api-calls") == 2.0
    assert feature_usage(state, "data-processed-gb") == 2.5

    empty = await api.post("/v1/events", {"events": []})
    assert (empty.status, empty.body) == (202, {"accepted": 0, "duplicates": 0})


async def test_events_batch_of_1000_is_accepted(api: Api) -> None:
    await provision(api, "acme", "pro")
    batch = [event("acme", "api_request", f"k-{i}", billable=True) for i in range(MAX_EVENT_BATCH)]
    reply = await api.post("/v1/events", {"events": batch})
    assert (reply.status, reply.body) == (202, {"accepted": MAX_EVENT_BATCH, "duplicates": 0})
    assert feature_usage(await entitlements(api, "acme"), "api-calls") == float(MAX_EVENT_BATCH)


# ---------------------------------------------- state, change feed, snapshot


async def test_entitlement_state_reflects_everything(api: Api) -> None:
    await provision(api, "acme", "pro", addons=[{"addonId": "priority-support", "quantity": 1}])
    await api.ok(
        "POST",
        "/v1/promotions",
        {"customerId": "acme", "featureId": "gpu-minutes", "value": 30, "resetPeriod": "MONTH"},
        201,
    )
    await api.ok(
        "POST",
        "/v1/credits/grants",
        {"customerId": "acme", "currencyId": "ai-credits", "amount": 500},
        201,
    )
    await report(api, usage_item("acme", "api-calls", 7), usage_item("acme", "ai-tokens", 4))

    state = await entitlements(api, "acme")
    assert (state["schemaVersion"], state["customerId"], state["resourceId"]) == (1, "acme", None)
    assert state["accessDeniedReason"] is None
    got = features(state)
    assert "sso" in got  # from the priority-support add-on
    assert set(got["support-tier"]["enumValues"]) == {"community", "standard", "priority"}
    assert got["gpu-minutes"]["usageLimit"] == 30.0
    assert got["gpu-minutes"]["resetPeriod"] == "MONTH"
    assert got["ai-tokens"]["creditRate"] == {"amount": 0.5, "currencyId": "ai-credits"}
    assert got["api-calls"]["resetPeriod"] == "MONTH"
    credits = {c["currency"]["currencyId"]: c for c in state["credits"]}
    assert credits["ai-credits"]["granted"] == 10500.0
    assert feature_usage(state, "api-calls") == 7.0
    assert feature_usage(state, "ai-tokens") == 4.0
    assert state["creditUsage"]["ai-credits"]["currentUsage"] == 2.0

    unknown = await entitlements(api, "nobody")
    assert unknown["accessDeniedReason"] == "CUSTOMER_NOT_FOUND"
    assert (unknown["features"], unknown["credits"], unknown["version"]) == ([], [], 0)


async def test_changes_cursor_paging(api: Api) -> None:
    await provision(api, "acme", "pro")
    await provision(api, "globex", "free")
    await report(api, usage_item("acme", "api-calls", 1), usage_item("globex", "api-calls", 2))

    head = (await api.ok("GET", "/v1/changes?after=0&limit=0"))["head"]
    assert head >= 4
    seqs: list[int] = []
    after = 0
    while True:
        page = await api.ok("GET", f"/v1/changes?after={after}&limit=3")
        assert page["head"] >= head
        if not page["events"]:
            assert page["next"] == after
            break
        assert len(page["events"]) <= 3
        seqs += [e["seq"] for e in page["events"]]
        assert page["next"] == page["events"][-1]["seq"]
        after = page["next"]
    assert seqs == list(range(1, len(seqs) + 1))  # gapless, oldest first, each once
    assert seqs[-1] >= head

    page = await api.ok("GET", "/v1/changes")  # defaults: after=0, limit=500
    kinds = {(e["kind"], e["customerId"]) for e in page["events"]}
    assert {("entitlements.updated", "acme"), ("entitlements.updated", "globex")} <= kinds
    assert ("usage.updated", "acme") in kinds
    usage_events = [e for e in page["events"] if e["kind"] == "usage.updated"]
    assert {"featureId", "currencyId", "usage"} <= set(usage_events[0])
    snapshot_events = [e for e in page["events"] if e["kind"] == "entitlements.updated"]
    assert snapshot_events[0]["snapshot"]["customerId"] == snapshot_events[0]["customerId"]

    beyond = await api.ok("GET", f"/v1/changes?after={seqs[-1]}")
    assert (beyond["events"], beyond["next"]) == ([], seqs[-1])


async def test_snapshot_holds_every_state_at_the_feed_head(api: Api) -> None:
    # Workspace plans only: no hourly reset, so no time-driven change can land mid-test.
    await provision(api, "acme")
    await provision(api, "globex")
    for customer, plan, resource in (
        ("acme", "workspace-basic", "ws-1"),
        ("globex", "workspace-plus", "ws-2"),
    ):
        await api.ok(
            "POST",
            "/v1/subscriptions",
            {"customerId": customer, "planId": plan, "resourceId": resource},
            201,
        )
    await report(api, usage_item("acme", "storage-gb", 3, resourceId="ws-1", updateBehavior="SET"))

    snap = await api.ok("GET", "/v1/snapshot")
    assert snap["seq"] == (await api.ok("GET", "/v1/changes?limit=0"))["head"]
    changes = await api.ok("GET", f"/v1/changes?after={snap['seq']}")
    assert changes["events"] == []  # nothing after the snapshot's position
    states = {(s["customerId"], s["resourceId"]): s for s in snap["states"]}
    assert set(states) == {("acme", None), ("acme", "ws-1"), ("globex", None), ("globex", "ws-2")}
    for (customer, resource), state in states.items():
        assert state == await entitlements(api, customer, resource)
    assert feature_usage(states[("acme", "ws-1")], "storage-gb") == 3.0
    assert states[("globex", None)]["accessDeniedReason"] == "NO_ACTIVE_SUBSCRIPTION"


async def test_snapshot_pages_cover_every_state_once_in_order(api: Api) -> None:
    customers = [f"page-{n:02d}" for n in range(7)]
    for customer in customers:
        await provision(api, customer)
    whole = await api.ok("GET", "/v1/snapshot")
    assert whole["next"] is None
    first = await api.ok("GET", "/v1/snapshot?limit=3")
    pages, after = [first], first["next"]
    while after is not None:
        page = await api.ok("GET", f"/v1/snapshot?limit=3&after={after}")
        pages.append(page)
        after = page["next"]
    paged = [state for page in pages for state in page["states"]]

    def key(state: dict[str, Any]) -> tuple[str, str]:
        return state["customerId"], state["resourceId"] or ""

    assert [key(s) for s in paged] == sorted(key(s) for s in whole["states"])
    assert sorted(paged, key=key) == sorted(whole["states"], key=key)
    assert [len(page["states"]) for page in pages][:2] == [3, 3]
    assert first["seq"] == whole["seq"]


# -------------------------------------------------------- every 4xx, as JSON

SEED_SUB = "sub-acme"
CANCELLED_SUB = "sub-globex"
ANY_FIELD = object()


async def seed(api: Api) -> None:
    """acme on pro (sub-acme) with promotion promo-acme; globex with a cancelled sub-globex."""
    await provision(api, "acme", "pro", id=SEED_SUB)
    await api.ok(
        "POST",
        "/v1/promotions",
        {"id": "promo-acme", "customerId": "acme", "featureId": "sso"},
        201,
    )
    await provision(api, "globex", "pro", id=CANCELLED_SUB)
    await api.ok("POST", f"/v1/subscriptions/{CANCELLED_SUB}/cancel")


@dataclass(frozen=True)
class Bad:
    name: str
    method: str
    path: str
    body: Any = NO_BODY
    status: int = 400
    code: str = "INVALID_ARGUMENT"
    field: object = None  # None: the error names no field; ANY_FIELD: not checked
    raw: bytes | None = None
    params: dict[str, str] = dataclass_field(default_factory=dict)


def sub(**extra: Any) -> dict[str, Any]:
    return {"customerId": "acme", "planId": "pro", **extra}


def addon(quantity: Any, addon_id: str = "extra-seats") -> dict[str, Any]:
    return sub(addons=[{"addonId": addon_id, "quantity": quantity}])


def billable(feature: str, quantity: Any) -> dict[str, Any]:
    return sub(billableFeatures=[{"featureId": feature, "quantity": quantity}])


def grant(**extra: Any) -> dict[str, Any]:
    return {"customerId": "acme", "currencyId": "ai-credits", "amount": 10, **extra}


def promotion(**extra: Any) -> dict[str, Any]:
    return {"customerId": "acme", "featureId": "seats", **extra}


def usage(**item: Any) -> dict[str, Any]:
    return {"usages": [{**usage_item("acme", "api-calls", 1), **item}]}


def one_event(**item: Any) -> dict[str, Any]:
    return {"events": [{**event("acme", "api_request", "k", billable=True), **item}]}


def oversized(prefix: bytes) -> bytes:
    return prefix + b" " * (MAX_BODY_BYTES + 1 - len(prefix))


PAST = "2001-01-01T00:00:00Z"
CUSTOMERS = "/v1/customers"
SUBS = "/v1/subscriptions"
GRANTS = "/v1/credits/grants"
PROMOS = "/v1/promotions"
USAGE = "/v1/usage"
EVENTS = "/v1/events"

# fmt: off
BAD_REQUESTS = [
    # ------------------------------------------------ request bodies in general
    Bad("malformed-json", "POST", CUSTOMERS, raw=b'{"id": "x",'),
    Bad("not-utf8", "POST", CUSTOMERS, raw=b"\xff\xfe\x00"),
    Bad("body-is-an-array", "POST", CUSTOMERS, raw=b'[{"id": "x"}]'),
    Bad("body-is-a-string", "POST", CUSTOMERS, raw=b'"acme"'),
    Bad("body-is-null", "POST", CUSTOMERS, raw=b"null"),
    Bad("usage-body-is-an-array", "POST", USAGE, raw=b"[]"),
    Bad("patch-body-is-a-number", "PATCH", "/v1/customers/acme", raw=b"42"),
    Bad("oversized-customer", "POST", CUSTOMERS, raw=oversized(b"{}"), status=413,
        code="REQUEST_ENTITY_TOO_LARGE"),
    Bad("oversized-usage", "POST", USAGE, raw=oversized(b'{"usages": []}'), status=413,
        code="REQUEST_ENTITY_TOO_LARGE"),
    Bad("oversized-events", "POST", EVENTS, raw=oversized(b'{"events": []}'), status=413,
        code="REQUEST_ENTITY_TOO_LARGE"),
    # ------------------------------------------------------------------ routing
    Bad("unknown-route", "GET", "/v1/nothing", status=404, code="NOT_FOUND"),
    Bad("unknown-route-post", "POST", "/v2/customers", {"id": "x"}, status=404, code="NOT_FOUND"),
    Bad("wrong-method-put", "PUT", CUSTOMERS, {"id": "x"}, status=405, code="METHOD_NOT_ALLOWED"),
    Bad("wrong-method-get-usage", "GET", USAGE, status=405, code="METHOD_NOT_ALLOWED"),
    Bad("wrong-method-delete-customer", "DELETE", "/v1/customers/acme", status=405,
        code="METHOD_NOT_ALLOWED"),
    # ---------------------------------------------------------------- customers
    Bad("customer-duplicate", "POST", CUSTOMERS, {"id": "acme"}, 409, "CONFLICT", "id"),
    Bad("customer-id-missing", "POST", CUSTOMERS, {}, field="id"),
    Bad("customer-id-null", "POST", CUSTOMERS, {"id": None}, field="id"),
    Bad("customer-id-empty", "POST", CUSTOMERS, {"id": ""}, field="id"),
    Bad("customer-id-not-a-string", "POST", CUSTOMERS, {"id": 7}, field="id"),
    Bad("customer-id-too-long", "POST", CUSTOMERS, {"id": LONG_ID}, field="id"),
    Bad("customer-name-not-a-string", "POST", CUSTOMERS, {"id": "n", "name": ["x"]}, field="name"),
    Bad("customer-metadata-not-strings", "POST", CUSTOMERS, {"id": "n", "metadata": {"t": 1}},
        field="metadata"),
    Bad("customer-subscription-not-an-object", "POST", CUSTOMERS,
        {"id": "n", "subscription": "pro"}, field="subscription"),
    Bad("customer-subscription-plan-missing", "POST", CUSTOMERS, {"id": "n", "subscription": {}},
        field="subscription.planId"),
    Bad("customer-subscription-addon-fraction", "POST", CUSTOMERS,
        {"id": "n", "subscription": {"planId": "pro", "addons": [{"addonId": "a", "quantity": 0.5}]}},
        field="subscription.addons[0].quantity"),
    # The field is wrong here (see test_known_bugs); status and code are right.
    Bad("customer-subscription-unknown-plan", "POST", CUSTOMERS,
        {"id": "n", "subscription": {"planId": "platinum"}}, code="UNKNOWN_PLAN", field=ANY_FIELD),
    Bad("customer-get-unknown", "GET", "/v1/customers/ghost", status=404, code="NOT_FOUND",
        field="customerId"),
    Bad("customer-patch-unknown", "PATCH", "/v1/customers/ghost", {"name": "x"}, 404, "NOT_FOUND",
        "customerId"),
    Bad("customer-patch-email-not-a-string", "PATCH", "/v1/customers/acme", {"email": 5},
        field="email"),
    Bad("customer-patch-metadata-not-an-object", "PATCH", "/v1/customers/acme",
        {"metadata": ["a"]}, field="metadata"),
    Bad("customer-archive-unknown", "POST", "/v1/customers/ghost/archive", status=404,
        code="NOT_FOUND", field="customerId"),
    Bad("entitlements-resource-too-long", "GET", "/v1/customers/acme/entitlements",
        params={"resourceId": LONG_ID}, field="resourceId"),
    # ------------------------------------------------------------ subscriptions
    Bad("sub-unknown-plan", "POST", SUBS, sub(planId="platinum"), code="UNKNOWN_PLAN",
        field="planId"),
    Bad("sub-plan-missing", "POST", SUBS, {"customerId": "acme"}, field="planId"),
    Bad("sub-customer-missing", "POST", SUBS, {"planId": "pro"}, field="customerId"),
    Bad("sub-unknown-customer", "POST", SUBS, sub(customerId="ghost"), 404, "NOT_FOUND",
        "customerId"),
    Bad("sub-unknown-addon", "POST", SUBS, addon(1, "turbo"), code="UNKNOWN_ADDON", field="addons"),
    Bad("sub-addon-of-another-product", "POST", SUBS, addon(1, "gpu-pack"), field="addons"),
    Bad("sub-addon-quantity-zero", "POST", SUBS, addon(0), field="addons"),
    Bad("sub-addon-quantity-negative", "POST", SUBS, addon(-2), field="addons"),
    Bad("sub-addon-quantity-fraction", "POST", SUBS, addon(1.5), field="addons[0].quantity"),
    Bad("sub-addon-quantity-string", "POST", SUBS, addon("2"), field="addons[0].quantity"),
    Bad("sub-addon-quantity-nan-string", "POST", SUBS, addon("NaN"), field="addons[0].quantity"),
    Bad("sub-addon-quantity-boolean", "POST", SUBS, addon(True), field="addons[0].quantity"),
    Bad("sub-addon-quantity-huge", "POST", SUBS, addon(2**53), field="addons[0].quantity"),
    Bad("sub-addon-id-missing", "POST", SUBS, sub(addons=[{"quantity": 1}]),
        field="addons[0].addonId"),
    Bad("sub-addons-not-an-array", "POST", SUBS, sub(addons="extra-seats"), field="addons"),
    Bad("sub-addon-not-an-object", "POST", SUBS, sub(addons=["extra-seats"]), field="addons[0]"),
    Bad("sub-billable-negative", "POST", SUBS, billable("seats", -1), field="billableFeatures"),
    Bad("sub-billable-unknown-feature", "POST", SUBS, billable("warp", 1),
        field="billableFeatures"),
    Bad("sub-billable-quantity-missing", "POST", SUBS,
        sub(billableFeatures=[{"featureId": "seats"}]), field="billableFeatures[0].quantity"),
    Bad("sub-billable-quantity-nan-string", "POST", SUBS, billable("seats", "NaN"),
        field="billableFeatures[0].quantity"),
    Bad("sub-billable-quantity-nan-literal", "POST", SUBS,
        raw=b'{"customerId": "acme", "planId": "pro",'
        b' "billableFeatures": [{"featureId": "seats", "quantity": NaN}]}',
        field="billableFeatures[0].quantity"),
    Bad("sub-resource-required", "POST", SUBS, sub(planId="workspace-basic"), field="resourceId"),
    Bad("sub-resource-not-allowed", "POST", SUBS, sub(resourceId="ws-1"), field="resourceId"),
    Bad("sub-resource-too-long", "POST", SUBS, sub(planId="workspace-basic", resourceId=LONG_ID),
        field="resourceId"),
    Bad("sub-skip-trial-not-boolean", "POST", SUBS, sub(skipTrial="yes"), field="skipTrial"),
    Bad("sub-start-date-garbage", "POST", SUBS, sub(startDate="soon"), field="startDate"),
    Bad("sub-start-date-without-zone", "POST", SUBS, sub(startDate="2030-01-01T00:00:00"),
        field="startDate"),
    Bad("sub-start-date-float", "POST", SUBS, sub(startDate=1.5e12), field="startDate"),
    Bad("sub-start-date-out-of-range", "POST", SUBS, sub(startDate=10**18), field="startDate"),
    Bad("sub-duplicate-id", "POST", SUBS, sub(id=SEED_SUB), 409, "CONFLICT", "id"),
    Bad("sub-id-too-long", "POST", SUBS, sub(id=LONG_ID), field="id"),
    Bad("sub-update-unknown", "PATCH", f"{SUBS}/ghost", {"addons": []}, 404, "NOT_FOUND",
        "subscriptionId"),
    Bad("sub-update-unknown-addon", "PATCH", f"{SUBS}/{SEED_SUB}",
        {"addons": [{"addonId": "turbo"}]}, code="UNKNOWN_ADDON", field="addons"),
    Bad("sub-update-quantity-zero", "PATCH", f"{SUBS}/{SEED_SUB}",
        {"addons": [{"addonId": "extra-seats", "quantity": 0}]}, field="addons"),
    Bad("sub-update-billable-negative", "PATCH", f"{SUBS}/{SEED_SUB}",
        {"billableFeatures": [{"featureId": "seats", "quantity": -1}]}, field="billableFeatures"),
    Bad("sub-update-cancelled", "PATCH", f"{SUBS}/{CANCELLED_SUB}", {"addons": []}),
    Bad("sub-cancel-unknown", "POST", f"{SUBS}/ghost/cancel", status=404, code="NOT_FOUND",
        field="subscriptionId"),
    Bad("sub-cancel-past-date", "POST", f"{SUBS}/{SEED_SUB}/cancel", {"cancellationDate": PAST},
        field="cancellationDate"),
    Bad("sub-cancel-past-epoch", "POST", f"{SUBS}/{SEED_SUB}/cancel", {"cancellationDate": 0},
        field="cancellationDate"),
    Bad("sub-cancel-date-boolean", "POST", f"{SUBS}/{SEED_SUB}/cancel",
        {"cancellationDate": True}, field="cancellationDate"),
    Bad("sub-cancel-cancelled", "POST", f"{SUBS}/{CANCELLED_SUB}/cancel"),
    # --------------------------------------------------------------- promotions
    Bad("promo-unknown-feature", "POST", PROMOS, promotion(featureId="warp"), field="featureId"),
    Bad("promo-feature-missing", "POST", PROMOS, {"customerId": "acme"}, field="featureId"),
    Bad("promo-unknown-customer", "POST", PROMOS, promotion(customerId="ghost"), 404, "NOT_FOUND",
        "customerId"),
    Bad("promo-past-expiry", "POST", PROMOS, promotion(expiresAt=PAST), field="expiresAt"),
    Bad("promo-duplicate-id", "POST", PROMOS, promotion(id="promo-acme"), 409, "CONFLICT", "id"),
    Bad("promo-value-nan-string", "POST", PROMOS, promotion(value="NaN"), field="value"),
    Bad("promo-value-infinity-literal", "POST", PROMOS,
        raw=b'{"customerId": "acme", "featureId": "seats", "value": Infinity}', field="value"),
    Bad("promo-enum-values-not-strings", "POST", PROMOS, promotion(enumValues=[1]),
        field="enumValues"),
    Bad("promo-unlimited-not-boolean", "POST", PROMOS, promotion(unlimited="true"),
        field="unlimited"),
    Bad("promo-id-too-long", "POST", PROMOS, promotion(id=LONG_ID), field="id"),
    Bad("promo-revoke-unknown", "DELETE", f"{PROMOS}/ghost", status=404, code="NOT_FOUND",
        field="promotionId"),
    # ------------------------------------------------------------------ credits
    Bad("grant-unknown-currency", "POST", GRANTS, grant(currencyId="doubloons"),
        field="currencyId"),
    Bad("grant-unknown-customer", "POST", GRANTS, grant(customerId="ghost"), 404, "NOT_FOUND",
        "customerId"),
    Bad("grant-amount-zero", "POST", GRANTS, grant(amount=0), field="amount"),
    Bad("grant-amount-negative", "POST", GRANTS, grant(amount=-5), field="amount"),
    Bad("grant-amount-missing", "POST", GRANTS, {"customerId": "acme", "currencyId": "ai-credits"},
        field="amount"),
    Bad("grant-amount-string", "POST", GRANTS, grant(amount="10"), field="amount"),
    Bad("grant-amount-nan-string", "POST", GRANTS, grant(amount="NaN"), field="amount"),
    Bad("grant-amount-infinity-string", "POST", GRANTS, grant(amount="Infinity"), field="amount"),
    Bad("grant-amount-nan-literal", "POST", GRANTS,
        raw=b'{"customerId": "acme", "currencyId": "ai-credits", "amount": NaN}', field="amount"),
    Bad("grant-amount-overflowing-literal", "POST", GRANTS,
        raw=b'{"customerId": "acme", "currencyId": "ai-credits", "amount": 1e400}',
        field="amount"),
    Bad("grant-amount-huge-integer", "POST", GRANTS, grant(amount=2**63), field="amount"),
    Bad("grant-type-unknown", "POST", GRANTS, grant(grantType="BONUS"), field="grantType"),
    Bad("grant-type-recurring", "POST", GRANTS, grant(grantType="RECURRING"), field="grantType"),
    Bad("grant-priority-negative", "POST", GRANTS, grant(priority=-1), field="priority"),
    Bad("grant-priority-fraction", "POST", GRANTS, grant(priority=0.5), field="priority"),
    Bad("grant-past-expiry", "POST", GRANTS, grant(expiresAt=PAST), field="expiresAt"),
    Bad("grant-idempotency-key-too-long", "POST", GRANTS, grant(idempotencyKey=LONG_ID),
        field="idempotencyKey"),
    Bad("grant-currency-id-too-long", "POST", GRANTS, grant(currencyId=LONG_ID),
        field="currencyId"),
    Bad("grant-void-unknown", "POST", f"{GRANTS}/ghost/void", status=404, code="NOT_FOUND",
        field="grantId"),
    Bad("balance-unknown-customer", "GET", "/v1/customers/ghost/credits/ai-credits", status=404,
        code="NOT_FOUND", field="customerId"),
    Bad("balance-resource-too-long", "GET", "/v1/customers/acme/credits/ai-credits",
        params={"resourceId": LONG_ID}, field="resourceId"),
    Bad("ledger-unknown-customer", "GET", "/v1/customers/ghost/credits/ledger", status=404,
        code="NOT_FOUND", field="customerId"),
    Bad("ledger-after-negative", "GET", "/v1/customers/acme/credits/ledger",
        params={"after": "-1"}, field="after"),
    Bad("ledger-after-not-an-integer", "GET", "/v1/customers/acme/credits/ledger",
        params={"after": "abc"}, field="after"),
    Bad("ledger-limit-too-large", "GET", "/v1/customers/acme/credits/ledger",
        params={"limit": "1001"}, field="limit"),
    Bad("ledger-currency-too-long", "GET", "/v1/customers/acme/credits/ledger",
        params={"currencyId": LONG_ID}, field="currencyId"),
    # -------------------------------------------------------------------- usage
    Bad("usage-missing", "POST", USAGE, {}, field="usages"),
    Bad("usage-empty", "POST", USAGE, {"usages": []}, field="usages"),
    Bad("usage-not-an-array", "POST", USAGE, {"usages": {}}, field="usages"),
    Bad("usage-batch-101", "POST", USAGE,
        {"usages": [usage_item("acme", "api-calls", 1)] * (MAX_USAGE_BATCH + 1)}, field="usages"),
    Bad("usage-item-not-an-object", "POST", USAGE, {"usages": [5]}, field="usages[0]"),
    Bad("usage-behavior-unknown", "POST", USAGE, usage(updateBehavior="ADD"),
        field="usages[0].updateBehavior"),
    Bad("usage-value-missing", "POST", USAGE, usage(value=None), field="usages[0].value"),
    Bad("usage-value-string", "POST", USAGE, usage(value="5"), field="usages[0].value"),
    Bad("usage-value-nan-string", "POST", USAGE, usage(value="NaN"), field="usages[0].value"),
    Bad("usage-value-nan-literal", "POST", USAGE,
        raw=b'{"usages": [{"customerId": "acme", "featureId": "api-calls", "value": NaN}]}',
        field="usages[0].value"),
    Bad("usage-value-negative-infinity-literal", "POST", USAGE,
        raw=b'{"usages": [{"customerId": "acme", "featureId": "api-calls", "value": -Infinity}]}',
        field="usages[0].value"),
    Bad("usage-value-boolean", "POST", USAGE, usage(value=True), field="usages[0].value"),
    Bad("usage-unknown-feature", "POST", USAGE, usage(featureId="warp"),
        field="usages[0].featureId"),
    Bad("usage-unmetered-feature", "POST", USAGE, usage(featureId="seats"),
        field="usages[0].featureId"),
    Bad("usage-set-negative", "POST", USAGE, usage(updateBehavior="SET", value=-1),
        field="usages[0].value"),
    Bad("usage-unknown-customer", "POST", USAGE, usage(customerId="ghost"), 404, "NOT_FOUND",
        "usages[0].customerId"),
    Bad("usage-customer-id-too-long", "POST", USAGE, usage(customerId=LONG_ID),
        field="usages[0].customerId"),
    Bad("usage-idempotency-key-too-long", "POST", USAGE, usage(idempotencyKey=LONG_ID),
        field="usages[0].idempotencyKey"),
    Bad("usage-timestamp-garbage", "POST", USAGE, usage(timestamp="now"),
        field="usages[0].timestamp"),
    # ------------------------------------------------------------------- events
    Bad("events-missing", "POST", EVENTS, {}, field="events"),
    Bad("events-not-an-array", "POST", EVENTS, {"events": "x"}, field="events"),
    Bad("events-batch-1001", "POST", EVENTS,
        {"events": [event("acme", "api_request", "k")] * (MAX_EVENT_BATCH + 1)}, field="events"),
    Bad("event-idempotency-key-missing", "POST", EVENTS, one_event(idempotencyKey=None),
        field="events[0].idempotencyKey"),
    Bad("event-name-missing", "POST", EVENTS, one_event(eventName=None),
        field="events[0].eventName"),
    Bad("event-name-too-long", "POST", EVENTS, one_event(eventName=LONG_ID),
        field="events[0].eventName"),
    Bad("event-dimensions-not-an-object", "POST", EVENTS, one_event(dimensions=[1]),
        field="events[0].dimensions"),
    Bad("event-dimension-nested", "POST", EVENTS, one_event(dimensions={"x": {"y": 1}}),
        field="events[0].dimensions.x"),
    Bad("event-dimension-null", "POST", EVENTS, one_event(dimensions={"x": None}),
        field="events[0].dimensions.x"),
    Bad("event-unknown-customer", "POST", EVENTS, one_event(customerId="ghost"), 404, "NOT_FOUND",
        "events[0].customerId"),
    # ------------------------------------------------------------------ changes
    Bad("changes-after-negative", "GET", "/v1/changes", params={"after": "-1"}, field="after"),
    Bad("changes-after-fraction", "GET", "/v1/changes", params={"after": "1.5"}, field="after"),
    Bad("changes-limit-too-large", "GET", "/v1/changes", params={"limit": "5001"}, field="limit"),
    Bad("changes-limit-negative", "GET", "/v1/changes", params={"limit": "-1"}, field="limit"),
    Bad("snapshot-limit-zero", "GET", "/v1/snapshot", params={"limit": "0"}, field="limit"),
    Bad("snapshot-limit-too-large", "GET", "/v1/snapshot", params={"limit": "5001"},
        field="limit"),
    Bad("snapshot-cursor-garbage", "GET", "/v1/snapshot", params={"after": "!!"}, field="after"),
    Bad("snapshot-cursor-not-a-pair", "GET", "/v1/snapshot", params={"after": "WzFd"},
        field="after"),
]


def test_bad_request_names_are_unique() -> None:
    names = [b.name for b in BAD_REQUESTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda b: b.name)
async def test_every_4xx_is_json(api: Api, bad: Bad) -> None:
    await seed(api)
    reply = await api.call(bad.method, bad.path, bad.body, raw=bad.raw, params=bad.params or None)
    assert reply.status == bad.status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.error
    assert error["code"] == bad.code, error
    assert isinstance(error["message"], str) and error["message"], error
    if bad.field is None:
        assert "field" not in error, error
    elif bad.field is not ANY_FIELD:
        assert error.get("field") == bad.field, error
    assert set(reply.body) == {"error"}
    assert set(error) <= {"code", "message", "field"}


async def test_a_body_of_exactly_the_limit_is_read(api: Api) -> None:
    await provision(api, "acme", "pro")
    body = json.dumps({"events": [event("acme", "api_request", "k", billable=True)]}).encode()
    reply = await api.call("POST", "/v1/events", raw=body + b" " * (MAX_BODY_BYTES - len(body)))
    assert (reply.status, reply.body) == (202, {"accepted": 1, "duplicates": 0})


AUTH_ROUTES = [
    ("GET", "/v1/customers/acme"),
    ("POST", "/v1/customers"),
    ("GET", "/v1/customers/acme/entitlements"),
    ("POST", "/v1/usage"),
    ("POST", "/v1/events"),
    ("GET", "/v1/changes"),
    ("GET", "/v1/changes/stream"),
    ("GET", "/v1/snapshot"),
    ("POST", "/v1/catalog/reload"),
    # The key is checked before routing: unknown routes answer 401 too.
    ("GET", "/v1/nothing"),
]


@pytest.mark.parametrize("key", [None, "", "wrong", API_KEY + "x"], ids=repr)
@pytest.mark.parametrize(("method", "path"), AUTH_ROUTES, ids=lambda v: str(v))
async def test_missing_or_wrong_api_key_is_401(
    anonymous: aiohttp.ClientSession, method: str, path: str, key: str | None
) -> None:
    headers = {} if key is None else {"X-API-KEY": key}
    reply = await Api(anonymous).call(method, path, {"id": "x"}, headers=headers)
    assert reply.status == 401
    assert reply.body == {
        "error": {"code": "UNAUTHENTICATED", "message": "missing or wrong X-API-KEY"}
    }


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/openapi.json"])
async def test_open_paths_need_no_key(anonymous: aiohttp.ClientSession, path: str) -> None:
    reply = await Api(anonymous).get(path)
    assert reply.status == 200
    if path in ("/livez", "/readyz"):
        assert reply.body == {"status": "UP"}
    if path == "/metrics":
        assert "upstream_http_requests_total" in reply.body
        for name in ("process_cpu_seconds_total", "python_gc_objects_collected_total", "python_info{"):
            assert name in reply.body, name


# ------------------------------------------------- nothing half-applied


@pytest.mark.parametrize(
    ("bad_item", "status", "field_name"),
    [
        pytest.param(usage_item("acme", "warp", 1), 400, "usages[2].featureId", id="unknown-feature"),
        pytest.param(usage_item("acme", "seats", 1), 400, "usages[2].featureId", id="unmetered"),
        pytest.param(
            usage_item("ghost", "api-calls", 1), 404, "usages[2].customerId", id="unknown-customer"
        ),
        pytest.param(
            usage_item("acme", "api-calls", -1, updateBehavior="SET"),
            400,
            "usages[2].value",
            id="set-negative",
        ),
    ],
)
async def test_rejected_usage_batch_changes_nothing(
    api: Api, bad_item: dict[str, Any], status: int, field_name: str
) -> None:
    await provision(api, "acme", "pro")
    assert (await report(api, usage_item("acme", "api-calls", 5))).status == 200
    before = await entitlements(api, "acme")
    before_balance = await balance(api, "acme", "ai-credits")
    before_ledger = await api.ok("GET", "/v1/customers/acme/credits/ledger")

    reply = await report(
        api,
        usage_item("acme", "api-calls", 100, idempotencyKey="batch-key"),
        usage_item("acme", "ai-tokens", 8),  # burns credits before the bad item fails
        bad_item,
    )
    assert reply.status == status, reply.body
    assert reply.error["field"] == field_name

    after = await entitlements(api, "acme")
    assert feature_usage(after, "api-calls") == 5.0
    assert after["featureUsage"] == before["featureUsage"]
    assert after["creditUsage"] == before["creditUsage"]
    assert await balance(api, "acme", "ai-credits") == before_balance
    assert await api.ok("GET", "/v1/customers/acme/credits/ledger") == before_ledger
    # The idempotency key of the rolled-back item was not remembered either.
    retry = await report(api, usage_item("acme", "api-calls", 100, idempotencyKey="batch-key"))
    assert retry.body["results"][0]["usage"]["currentUsage"] == 105.0


async def test_rejected_events_batch_changes_nothing(api: Api) -> None:
    await provision(api, "acme", "pro")
    batch = [
        event("acme", "api_request", "ev-1", billable=True),
        event("acme", "pipeline_run", "ev-2", gigabytes=4),
        event("ghost", "api_request", "ev-3", billable=True),
    ]
    before = (await entitlements(api, "acme"))["featureUsage"]
    reply = await api.post("/v1/events", {"events": batch})
    assert (reply.status, reply.error["field"]) == (404, "events[2].customerId")
    assert (await entitlements(api, "acme"))["featureUsage"] == before
    # Keys of the rolled-back events are free: the same events count now.
    again = await api.post("/v1/events", {"events": batch[:2]})
    assert (again.status, again.body) == (202, {"accepted": 2, "duplicates": 0})


async def test_rejected_provisioning_changes_nothing(api: Api) -> None:
    sub_body = {"planId": "pro", "addons": [{"addonId": "turbo"}]}
    reply = await api.post("/v1/customers", {"id": "acme", "subscription": sub_body})
    assert reply.status == 400
    # The customer row written before the subscription failed is rolled back.
    assert (await api.get("/v1/customers/acme")).status == 404
    assert (await entitlements(api, "acme"))["accessDeniedReason"] == "CUSTOMER_NOT_FOUND"
    head = (await api.ok("GET", "/v1/changes"))["head"]
    assert head == 0

    # A failed replacement leaves the current subscription in force.
    current = (await provision(api, "acme", "pro"))["subscription"]
    bad = await api.post(
        "/v1/subscriptions",
        {"customerId": "acme", "planId": "enterprise", "addons": [{"addonId": "gpu-pack"}]},
    )
    assert bad.status == 400
    subs = (await api.ok("GET", "/v1/customers/acme"))["subscriptions"]
    assert subs == [current]


async def test_rejected_credit_grant_consumes_no_idempotency_key(api: Api) -> None:
    await provision(api, "acme")
    bad = grant(idempotencyKey="g-1", expiresAt=PAST)
    assert (await api.post("/v1/credits/grants", bad)).status == 400
    assert (await balance(api, "acme", "ai-credits"))["granted"] == 0.0
    good = await api.ok("POST", "/v1/credits/grants", grant(idempotencyKey="g-1"), 201)
    assert good["grant"]["amount"] == 10.0


# ------------------------------------------------------ fixed bugs (regressions)


@dataclass(frozen=True)
class Bug:
    name: str
    reason: str
    method: str
    path: str
    body: Any = NO_BODY
    raw: bytes | None = None
    plan: str = "pro"
    repeat: int = 1  # the request is sent this many times; the last reply is judged
    field: str | None = None


def _bug(name: str, reason: str, method: str, path: str, **kw: Any) -> Any:
    return pytest.param(
        Bug(name, reason, method, path, **kw),
        id=name,
    )


# fmt: off
KNOWN_BUGS = [
    _bug(
        "changes-after-beyond-int64",
        "routes.py _int_query has no upper bound for `after`; changes.py passes 2**63 to "
        "SQLite (store/sqlite.py changes_after) -> OverflowError -> 500",
        "GET", "/v1/changes?after=9223372036854775808", field="after",
    ),
    _bug(
        "ledger-after-beyond-int64",
        "same unbounded `after` in routes.py credit_ledger -> store/sqlite.py ledger -> 500",
        "GET", "/v1/customers/acme/credits/ledger?after=9223372036854775808", field="after",
    ),
    _bug(
        "id-with-lone-surrogate",
        'body.py Body.id accepts "\\ud800"; SQLite cannot encode it (UnicodeEncodeError) -> 500',
        "POST", "/v1/customers", raw=b'{"id": "\\ud800"}', field="id",
    ),
    _bug(
        "usage-delta-overflows-to-infinity",
        "metering.py _write_counter adds two finite DELTAs (1e308 + 1e308 = inf); encoding "
        "the change event (allow_nan=False) raises ValueError -> 500",
        "POST", "/v1/usage",
        body={"usages": [usage_item("acme", "api-calls", 1e308)] * 2},
    ),
    _bug(
        "credit-cost-overflows-to-infinity",
        "metering.py _charge: 1e308 gpu-minutes x creditRate 2 = inf; credits.burn raises "
        "ValueError -> 500",
        "POST", "/v1/usage", plan="enterprise",
        body={"usages": [usage_item("acme", "gpu-minutes", 1e308)]},
    ),
    _bug(
        "credit-grants-sum-overflows",
        "two grants of 1e308: credits.balance math.fsum raises OverflowError "
        "(metering.py _wallet_changed) -> 500 on the second grant",
        "POST", "/v1/credits/grants", repeat=2,
        body={"customerId": "acme", "currencyId": "ai-credits", "amount": 1e308},
    ),
    _bug(
        "billable-quantity-overflows-limit",
        "compute/effective.py _from_def: per-unit limit 10000 x quantity 1e305 = inf; the "
        "state cannot be JSON-encoded -> 500 (enterprise gpu-minutes)",
        "POST", "/v1/subscriptions",
        body={"customerId": "acme", "planId": "enterprise",
              "billableFeatures": [{"featureId": "gpu-minutes", "quantity": 1e305}]},
    ),
    _bug(
        "timestamp-beyond-year-9999-in-utc",
        "body.py Body.time: parsed.astimezone(UTC) overflows for 9999-12-31T23:59:59-05:00 "
        "(OverflowError) -> 500",
        "POST", "/v1/credits/grants", field="expiresAt",
        body={"customerId": "acme", "currencyId": "ai-credits", "amount": 1,
              "expiresAt": "9999-12-31T23:59:59-05:00"},
    ),
    _bug(
        "timestamp-before-year-1-in-utc",
        "body.py Body.time: astimezone(UTC) underflows for 0001-01-01T00:00:00+01:00 -> 500",
        "POST", "/v1/subscriptions", field="startDate",
        body={"customerId": "acme", "planId": "pro", "startDate": "0001-01-01T00:00:00+01:00"},
    ),
    _bug(
        "event-sum-overflows-to-infinity",
        "meters SUM of two finite dimensions (1e308 + 1e308) = inf; the usage change event "
        "cannot be JSON-encoded -> 500",
        "POST", "/v1/events",
        body={"events": [event("acme", "pipeline_run", "a", gigabytes=1e308),
                         event("acme", "pipeline_run", "b", gigabytes=1e308)]},
    ),
]
# fmt: on


@pytest.mark.parametrize("bug", KNOWN_BUGS)
async def test_former_bugs_answer_400_not_500(api: Api, bug: Bug) -> None:
    await provision(api, "acme", bug.plan, skipTrial=True)
    for _ in range(bug.repeat):
        reply = await api.call(bug.method, bug.path, bug.body, raw=bug.raw)
    assert reply.status == 400, reply.body
    assert reply.error["code"] == "INVALID_ARGUMENT"
    if bug.field is not None:
        assert reply.error.get("field") == bug.field


async def test_405_carries_an_allow_header(api: Api) -> None:
    reply = await api.call("PUT", "/v1/customers", {"id": "x"})
    assert reply.status == 405
    assert reply.headers.get("Allow") == "POST"


async def test_nested_subscription_errors_name_the_nested_field(api: Api) -> None:
    reply = await api.post("/v1/customers", {"id": "n", "subscription": {"planId": "platinum"}})
    assert (reply.status, reply.error["code"]) == (400, "UNKNOWN_PLAN")
    assert reply.error["field"] == "subscription.planId"
