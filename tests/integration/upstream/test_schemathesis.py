"""Schemathesis against the live server's own ``/openapi.json``.

For every documented operation, hypothesis generates requests from the document
(valid ones, and for operations with a body or query also invalid ones) and each
response must: not be a 5xx, carry a documented status, the documented content
type, and match the documented schema. That keeps the document honest in both
directions: the server must accept what it documents and answer as documented.

The server runs on its own event loop in a thread because schemathesis calls it
synchronously (``requests``); the test blocks, the server keeps serving.

Generated ids are steered, by a hypothesis draw, to ids that exist (seeded
customers, the catalog's plans, add-ons, features, currencies) so requests get
past "not found" and into the operations. Nothing generated is filtered out: the
overflow and encoding inputs that once produced 5xx are now refused with 400
(regression cases in ``test_http_contract.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.upstream.support import API_KEY, CATALOG, Api, upstream_settings
from upstream.api.openapi import OPENAPI
from upstream.catalog.loader import load_catalog
from upstream.server import UpstreamServer

T = TypeVar("T")

#: Examples per operation: all valid, or 20 valid + 10 invalid where there is a body or query.
MAX_EXAMPLES = 30
NEGATIVE_SHARE = 10
# The SSE stream never ends, so a request/response tool cannot test it; the contract
# tests cover its 401, the relay tests cover its events.
SKIPPED = {("GET", "/v1/changes/stream")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Invalid requests must also be refused (4xx): the documented constraints are enforced.
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]
AUTH = {"X-API-KEY": API_KEY}



def _operations() -> list[tuple[str, str, bool]]:
    """(method, path, has something to make invalid) for every documented operation."""
    out = []
    for path, item in OPENAPI["paths"].items():
        for method, op in item.items():
            if (method.upper(), path) in SKIPPED:
                continue
            negatable = "requestBody" in op or any(
                p["in"] == "query" for p in op.get("parameters", [])
            )
            out.append((method.upper(), path, negatable))
    return out


def _cases() -> list[Any]:
    cases = []
    for method, path, negatable in _operations():
        budgets = {GenerationMode.POSITIVE: MAX_EXAMPLES}
        if negatable:
            budgets = {
                GenerationMode.POSITIVE: MAX_EXAMPLES - NEGATIVE_SHARE,
                GenerationMode.NEGATIVE: NEGATIVE_SHARE,
            }
        cases += [
            pytest.param(method, path, mode, examples, id=f"{mode.value}-{method} {path}")
            for mode, examples in budgets.items()
        ]
    return cases


# --------------------------------------------------------------- the server


@dataclass(frozen=True)
class Live:
    url: str
    #: generated-id field -> ids that exist on the server
    known: dict[str, list[str]]


def _in_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)


async def _start(directory: Path, *, test_clock: bool = False) -> UpstreamServer:
    settings = dataclasses.replace(upstream_settings(directory), test_clock_enabled=test_clock)
    server = UpstreamServer(settings)
    await server.start()
    return server


async def _seed(url: str) -> dict[str, list[str]]:
    catalog = load_catalog(CATALOG)
    async with aiohttp.ClientSession(url, headers=AUTH) as session:
        api = Api(session)
        subs = [
            (
                await api.ok(
                    "POST",
                    "/v1/customers",
                    {"id": customer, "subscription": {"planId": plan, "id": f"sub-{customer}"}},
                    201,
                )
            )["subscription"]["id"]
            for customer, plan in (("acme", "pro"), ("globex", "enterprise"), ("hooli", "free"))
        ]
        await api.ok("POST", "/v1/customers", {"id": "initech"}, 201)
        ws = await api.ok(
            "POST",
            "/v1/subscriptions",
            {"customerId": "acme", "planId": "workspace-plus", "resourceId": "ws-1"},
            201,
        )
        promo = await api.ok(
            "POST", "/v1/promotions", {"customerId": "acme", "featureId": "sso"}, 201
        )
        grant = await api.ok(
            "POST",
            "/v1/credits/grants",
            {"customerId": "acme", "currencyId": "ai-credits", "amount": 100},
            201,
        )
    customers = ["acme", "globex", "hooli", "initech"]
    currencies = sorted(catalog.currencies)
    features = sorted(catalog.features)
    return {
        "customerId": customers,
        "customer_id": customers,
        "planId": sorted(catalog.plans),
        "addonId": sorted(catalog.addons),
        "featureId": features,
        "currencyId": currencies,
        "currency_id": currencies,
        "eventName": sorted(
            {f.event_meter.event_name for f in catalog.features.values() if f.event_meter}
        ),
        "resourceId": ["ws-1", "ws-2"],
        "subscription_id": [*subs, ws["subscription"]["id"]],
        "promotion_id": [promo["promotion"]["id"]],
        "grant_id": [grant["grant"]["id"]],
        "updateBehavior": ["DELTA", "SET"],
    }


def _live(directory: Path, *, test_clock: bool) -> Iterator[Live]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="upstream-under-test", daemon=True)
    thread.start()
    try:
        server = _in_loop(loop, _start(directory, test_clock=test_clock))
        try:
            url = f"http://127.0.0.1:{server.port}"
            yield Live(url, _in_loop(loop, _seed(url)))
        finally:
            _in_loop(loop, server.stop())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    yield from _live(tmp_path_factory.mktemp("schemathesis"), test_clock=False)


@pytest.fixture(scope="module")
def live_clock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A second server with TEST_CLOCK_ENABLED=1 for the test-clock operations, so that the
    time they move (up to the clock's limit) does not change what the others are fuzzed with."""
    yield from _live(tmp_path_factory.mktemp("schemathesis-clock"), test_clock=True)


def _server_for(path: str, request: pytest.FixtureRequest) -> Live:
    name = "live_clock" if path.startswith("/v1/test-clock") else "live"
    server: Live = request.getfixturevalue(name)
    return server


@pytest.fixture(scope="module")
def api_schema(live: Live) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    schema.validate()
    return schema


# ---------------------------------------------------- steering and filtering


def _steer(value: Any, known: dict[str, list[str]], data: st.DataObject) -> Any:
    """Swap, by a draw, values under known keys for ids that exist; recurse into containers."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            choices = known.get(key) if isinstance(key, str) else None
            if choices and isinstance(item, str) and data.draw(st.booleans()):
                item = data.draw(st.sampled_from(choices))
            out[key] = _steer(item, known, data)
        return out
    if isinstance(value, list):
        return [_steer(item, known, data) for item in value]
    return value











# -------------------------------------------------------------------- tests


@pytest.mark.parametrize(("method", "path", "mode", "examples"), _cases())
def test_operation_conforms_to_the_document(
    api_schema: schemathesis.BaseSchema,
    request: pytest.FixtureRequest,
    method: str,
    path: str,
    mode: GenerationMode,
    examples: int,
) -> None:
    live = _server_for(path, request)
    operation = api_schema[path][method]
    strategy = operation.as_strategy(mode, headers=AUTH)
    checks = NEGATIVE_CHECKS if mode is GenerationMode.NEGATIVE else CHECKS

    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @given(case=strategy, data=st.data())
    def conforms(case: schemathesis.Case[Any], data: st.DataObject) -> None:
        if isinstance(case.body, dict | list):
            case.body = _steer(case.body, live.known, data)
        if case.path_parameters:
            case.path_parameters = _steer(case.path_parameters, live.known, data)
        if case.query:
            case.query = _steer(case.query, live.known, data)
        case.call_and_validate(base_url=live.url, checks=checks, timeout=30)

    conforms()


def test_every_operation_is_exercised() -> None:
    documented = {
        (method.upper(), path) for path, item in OPENAPI["paths"].items() for method in item
    }
    tested = {(method, path) for method, path, _ in _operations()}
    assert documented - tested == SKIPPED
