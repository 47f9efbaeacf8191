"""HTTP handlers: parse and check the request, call one operation, render the result.

Operations run on the store's writer thread (:func:`call`): the event loop never waits for
SQLite or its fsync, and keeps serving other requests meanwhile. Reads that write nothing use
the loop's own read-only connection (``Store.snapshot``), which never waits for the writer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from entitlements.model.state import encode_snapshot_dict
from upstream.api import views
from upstream.api.body import Body
from upstream.domain import CreditGrant, GrantType, PromotionalEntitlement
from upstream.errors import Invalid
from upstream.metering import EventItem, Metering, UsageItem
from upstream.service import CANCEL_NOW, SubscriptionRequest, Upstream

MAX_USAGE_BATCH = 100
MAX_EVENT_BATCH = 1000

UPSTREAM = web.AppKey("upstream", Upstream)
METERING = web.AppKey("metering", Metering)

P = ParamSpec("P")
T = TypeVar("T")


async def call(request: web.Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run an operation (anything touching the store) on the store's writer thread."""
    return await request.app[UPSTREAM].store.run(fn, *args, **kwargs)


async def read_body(request: web.Request) -> Body:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):
        raise Invalid("request body is not valid JSON") from None
    return Body(data)


def _query_id(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if len(value) > 256:
        raise Invalid("must be at most 256 characters", field=name)
    return value


def _quantities(body: Body, key: str, id_key: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in body.items(key):
        item_id = item.req_id(id_key)
        if key == "addons":
            out[item_id] = item.integer("quantity", default=1)
        else:
            quantity = item.number("quantity", required=True)
            assert quantity is not None
            out[item_id] = quantity
    return out


def subscription_request(body: Body, customer_id: str | None = None) -> SubscriptionRequest:
    return SubscriptionRequest(
        customer_id=customer_id or body.req_id("customerId"),
        plan_id=body.req_id("planId"),
        resource_id=body.id("resourceId", required=False),
        addons=_quantities(body, "addons", "addonId"),
        billable_quantities=_quantities(body, "billableFeatures", "featureId"),
        skip_trial=body.flag("skipTrial"),
        start_date=body.time("startDate"),
        subscription_id=body.id("id", required=False),
    )


# ------------------------------------------------------------------ customers


async def provision_customer(request: web.Request) -> web.Response:
    body = await read_body(request)
    customer_id = body.req_id("id")
    sub_body = body.obj("subscription")
    sub = subscription_request(sub_body, customer_id) if sub_body is not None else None
    customer, subscription = await call(
        request,
        request.app[UPSTREAM].provision_customer,
        customer_id,
        name=body.text("name"),
        email=body.text("email"),
        metadata=body.string_map("metadata"),
        subscription=sub,
    )
    result = {
        "customer": views.customer(customer),
        "subscription": views.subscription(subscription) if subscription else None,
    }
    return web.json_response(result, status=201)


async def get_customer(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    with upstream.store.snapshot() as tx:
        customer, subs = upstream.read_customer(tx, request.match_info["customer_id"])
    return web.json_response(
        {
            "customer": views.customer(customer),
            "subscriptions": [views.subscription(s) for s in subs],
        }
    )


async def update_customer(request: web.Request) -> web.Response:
    body = await read_body(request)
    customer = await call(
        request,
        request.app[UPSTREAM].update_customer,
        request.match_info["customer_id"],
        name=body.text("name"),
        email=body.text("email"),
        metadata=body.string_map("metadata") if body.has("metadata") else None,
    )
    return web.json_response({"customer": views.customer(customer)})


async def archive_customer(request: web.Request) -> web.Response:
    customer = await call(
        request, request.app[UPSTREAM].archive_customer, request.match_info["customer_id"]
    )
    return web.json_response({"customer": views.customer(customer)})


async def entitlements(request: web.Request) -> web.Response:
    upstream = request.app[UPSTREAM]
    customer_id = request.match_info["customer_id"]
    resource_id = _query_id(request, "resourceId")
    with upstream.store.snapshot() as tx:
        snapshot = upstream.peek_entitlements(tx, customer_id, resource_id)
    if snapshot is None:
        # Time changed the state since it was published: publish it first, on the writer.
        snapshot = await call(request, upstream.entitlements, customer_id, resource_id)
    return web.json_response(encode_snapshot_dict(snapshot))


# -------------------------------------------------------------- subscriptions


async def provision_subscription(request: web.Request) -> web.Response:
    body = subscription_request(await read_body(request))
    sub = await call(request, request.app[UPSTREAM].provision_subscription, body)
    return web.json_response({"subscription": views.subscription(sub)}, status=201)


async def update_subscription(request: web.Request) -> web.Response:
    body = await read_body(request)
    sub = await call(
        request,
        request.app[UPSTREAM].update_subscription,
        request.match_info["subscription_id"],
        addons=_quantities(body, "addons", "addonId") if body.has("addons") else None,
        billable_quantities=(
            _quantities(body, "billableFeatures", "featureId")
            if body.has("billableFeatures")
            else None
        ),
    )
    return web.json_response({"subscription": views.subscription(sub)})


async def cancel_subscription(request: web.Request) -> web.Response:
    body = await read_body(request)
    # Absent: cancel now. null: clear a scheduled cancellation. A date: schedule it.
    at: object = body.time("cancellationDate") if body.has("cancellationDate") else CANCEL_NOW
    sub = await call(
        request,
        request.app[UPSTREAM].cancel_subscription,
        request.match_info["subscription_id"],
        at,
    )
    return web.json_response({"subscription": views.subscription(sub)})


# ----------------------------------------------------------------- promotions


async def grant_promotion(request: web.Request) -> web.Response:
    body = await read_body(request)
    promo = PromotionalEntitlement(
        id=body.id("id", required=False) or f"promo-{uuid.uuid4().hex[:16]}",
        customer_id=body.req_id("customerId"),
        feature_id=body.req_id("featureId"),
        resource_id=body.id("resourceId", required=False),
        value=body.number("value"),
        unlimited=body.flag("unlimited"),
        soft_limit=body.flag("softLimit"),
        enum_values=body.strings("enumValues"),
        reset_period=body.text("resetPeriod"),
        expires_at=body.time("expiresAt"),
    )
    promo = await call(request, request.app[UPSTREAM].grant_promotion, promo)
    return web.json_response({"promotion": views.promotion(promo)}, status=201)


async def revoke_promotion(request: web.Request) -> web.Response:
    promo = await call(
        request, request.app[UPSTREAM].revoke_promotion, request.match_info["promotion_id"]
    )
    return web.json_response({"promotion": views.promotion(promo)})


# -------------------------------------------------------------------- credits


async def grant_credits(request: web.Request) -> web.Response:
    body = await read_body(request)
    grant_type = body.text("grantType") or "PAID"
    if grant_type not in ("PAID", "PROMOTIONAL"):
        raise Invalid("must be PAID or PROMOTIONAL", field="grantType")
    amount = body.number("amount", required=True, exclusive_minimum=0)
    assert amount is not None
    grant = CreditGrant(
        id=f"grant-{uuid.uuid4().hex[:16]}",
        customer_id=body.req_id("customerId"),
        currency_id=body.req_id("currencyId"),
        amount=amount,
        grant_type=GrantType(grant_type),
        resource_id=body.id("resourceId", required=False),
        priority=body.integer("priority", default=0, minimum=0),
        effective_at=body.time("effectiveAt"),
        expires_at=body.time("expiresAt"),
        idempotency_key=body.id("idempotencyKey", required=False),
    )
    grant = await call(request, request.app[METERING].grant_credits, grant)
    return web.json_response({"grant": views.grant(grant)}, status=201)


async def void_grant(request: web.Request) -> web.Response:
    grant = await call(request, request.app[METERING].void_grant, request.match_info["grant_id"])
    return web.json_response({"grant": views.grant(grant)})


async def credit_balance(request: web.Request) -> web.Response:
    currency_id = request.match_info["currency_id"]
    resource_id = _query_id(request, "resourceId")
    with request.app[UPSTREAM].store.snapshot() as tx:
        balance = request.app[METERING].read_balance(
            tx, request.match_info["customer_id"], currency_id, resource_id
        )
    return web.json_response(views.balance(currency_id, balance))


def _int_query(request: web.Request, name: str, default: int, maximum: int = 2**62) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid("must be an integer", field=name) from None
    if not 0 <= value <= maximum:
        raise Invalid(f"must be between 0 and {maximum}", field=name)
    return value


async def credit_ledger(request: web.Request) -> web.Response:
    currency_id = _query_id(request, "currencyId")
    after = _int_query(request, "after", 0)
    limit = _int_query(request, "limit", 100, maximum=1000)
    with request.app[UPSTREAM].store.snapshot() as tx:
        entries = Metering.read_ledger(
            tx, request.match_info["customer_id"], currency_id, after, limit
        )
    return web.json_response({"entries": entries, "next": entries[-1]["id"] if entries else None})


# ---------------------------------------------------------------------- usage


def _usage_item(item: Body) -> UsageItem:
    behavior = item.text("updateBehavior") or "DELTA"
    if behavior not in ("DELTA", "SET"):
        raise Invalid("must be DELTA or SET", field=f"{item.path}.updateBehavior")
    value = item.number("value", required=True)
    assert value is not None
    return UsageItem(
        customer_id=item.req_id("customerId"),
        feature_id=item.req_id("featureId"),
        value=value,
        resource_id=item.id("resourceId", required=False),
        set_value=behavior == "SET",
        idempotency_key=item.id("idempotencyKey", required=False),
        timestamp=item.time("timestamp"),
    )


async def report_usage(request: web.Request) -> web.Response:
    body = await read_body(request)
    items = [_usage_item(i) for i in body.items("usages", limit=MAX_USAGE_BATCH, required=True)]
    if not items:
        raise Invalid("must not be empty", field="usages")
    results = await call(request, request.app[METERING].report_usage, items)
    return web.json_response({"results": results})


async def report_events(request: web.Request) -> web.Response:
    body = await read_body(request)
    events = [
        EventItem(
            event_name=e.req_id("eventName"),
            customer_id=e.req_id("customerId"),
            idempotency_key=e.req_id("idempotencyKey"),
            resource_id=e.id("resourceId", required=False),
            dimensions=e.dimensions("dimensions"),
            timestamp=e.time("timestamp"),
        )
        for e in body.items("events", limit=MAX_EVENT_BATCH, required=True)
    ]
    accepted, duplicates = await call(request, request.app[METERING].report_events, events)
    return web.json_response({"accepted": accepted, "duplicates": duplicates}, status=202)
