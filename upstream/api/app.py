"""The aiohttp application: routes, API-key check, uniform JSON errors, health and metrics."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from entitlements.metrics import service_registry
from upstream.api import changes, clock, routes
from upstream.api.openapi import OPENAPI
from upstream.catalog.loader import load_catalog
from upstream.catalog.model import CatalogError
from upstream.errors import Invalid, Unauthorized, UpstreamError
from upstream.events.hub import Hub
from upstream.metering import Metering
from upstream.service import Upstream
from upstream.testclock import TestClock

log = structlog.get_logger("upstream.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
API_KEY = web.AppKey("api_key", str)
CATALOG_PATH = web.AppKey("catalog_path", Path)
REGISTRY = web.AppKey("registry", CollectorRegistry)
REQUESTS = web.AppKey("requests", Counter)
MAX_BODY_BYTES = 4 * 2**20
OPEN_PATHS = frozenset({"/livez", "/readyz", "/metrics", "/openapi.json"})


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except UpstreamError as exc:
        response = web.json_response(exc.body(), status=exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.upper().replace(" ", "_")
        response = _error(exc.status, code, exc.text or exc.reason)
        # Keep what the status needs besides the body, e.g. Allow on a 405.
        for name in ("Allow", "Retry-After"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
    except Exception:
        log.exception("request_failed", path=request.path)
        response = _error(500, "INTERNAL", "internal error")
    route = request.match_info.route.resource
    template = route.canonical if route is not None else "unmatched"
    request.app[REQUESTS].labels(request.method, template, str(response.status)).inc()
    return response


@web.middleware
async def api_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path not in OPEN_PATHS:
        given = request.headers.get("X-API-KEY", "")
        if not hmac.compare_digest(given.encode(), request.app[API_KEY].encode()):
            raise Unauthorized("missing or wrong X-API-KEY")
    return await handler(request)


async def livez(_: web.Request) -> web.Response:
    return web.json_response({"status": "UP"})


def _check_database(upstream: Upstream) -> None:
    with upstream.store.transaction() as tx:
        tx.head_seq()


async def readyz(request: web.Request) -> web.Response:
    try:
        await routes.call(request, _check_database, request.app[routes.UPSTREAM])
    except Exception as exc:  # the database is what readiness is about
        return web.json_response({"status": "DOWN", "reason": str(exc)}, status=503)
    return web.json_response({"status": "UP"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(_: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


async def reload_catalog(request: web.Request) -> web.Response:
    try:
        catalog = load_catalog(request.app[CATALOG_PATH])
    except CatalogError as exc:
        # The old catalog stays in force: a bad edit must not take the service down.
        raise Invalid("; ".join(exc.problems), code="INVALID_CATALOG") from None
    except OSError as exc:
        raise Invalid(f"cannot read catalog: {exc}", code="INVALID_CATALOG") from None
    # On the writer thread: the swap and the republishing are ordered with every other write.
    changed = await routes.call(request, request.app[routes.UPSTREAM].reload_catalog, catalog)
    return web.json_response({"reloaded": True, "statesChanged": changed})


def build_app(
    upstream: Upstream,
    hub: Hub,
    *,
    api_key_value: str,
    catalog_path: Path,
    registry: CollectorRegistry | None = None,
    ping_seconds: float = 15.0,
    test_clock: TestClock | None = None,
) -> web.Application:
    """The API; ``test_clock`` (only with ``TEST_CLOCK_ENABLED``) switches /v1/test-clock on.

    Upstream must then read its time from that clock (``Upstream(clock=test_clock.now)``).
    """
    app = web.Application(middlewares=[errors, api_key], client_max_size=MAX_BODY_BYTES)
    app[routes.UPSTREAM] = upstream
    app[routes.METERING] = Metering(upstream)
    app[changes.HUB] = hub
    app[changes.PING_SECONDS] = ping_seconds
    app[API_KEY] = api_key_value
    app[CATALOG_PATH] = catalog_path
    app[clock.TEST_CLOCK] = test_clock
    app[REGISTRY] = registry or service_registry()
    app[REQUESTS] = Counter(
        "upstream_http_requests",
        "HTTP requests by route and status.",
        ["method", "route", "status"],
        registry=app[REGISTRY],
    )
    r = app.router
    r.add_get("/livez", livez)
    r.add_get("/readyz", readyz)
    r.add_get("/metrics", metrics)
    r.add_get("/openapi.json", openapi)
    r.add_post("/v1/customers", routes.provision_customer)
    r.add_get("/v1/customers/{customer_id}", routes.get_customer)
    r.add_patch("/v1/customers/{customer_id}", routes.update_customer)
    r.add_post("/v1/customers/{customer_id}/archive", routes.archive_customer)
    r.add_get("/v1/customers/{customer_id}/entitlements", routes.entitlements)
    r.add_get("/v1/customers/{customer_id}/credits/ledger", routes.credit_ledger)
    r.add_get("/v1/customers/{customer_id}/credits/{currency_id}", routes.credit_balance)
    r.add_post("/v1/subscriptions", routes.provision_subscription)
    r.add_patch("/v1/subscriptions/{subscription_id}", routes.update_subscription)
    r.add_post("/v1/subscriptions/{subscription_id}/cancel", routes.cancel_subscription)
    r.add_post("/v1/promotions", routes.grant_promotion)
    r.add_delete("/v1/promotions/{promotion_id}", routes.revoke_promotion)
    r.add_post("/v1/credits/grants", routes.grant_credits)
    r.add_post("/v1/credits/grants/{grant_id}/void", routes.void_grant)
    r.add_post("/v1/usage", routes.report_usage)
    r.add_post("/v1/events", routes.report_events)
    r.add_get("/v1/changes", changes.changes)
    r.add_get("/v1/changes/stream", changes.stream)
    r.add_get("/v1/snapshot", changes.snapshot)
    r.add_post("/v1/catalog/reload", reload_catalog)
    r.add_get("/v1/test-clock", clock.get_clock)
    r.add_post("/v1/test-clock/advance", clock.advance_clock)
    return app
