"""The OpenAPI document: valid OpenAPI 3.0.3, and exactly the routes build_app serves."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema_rs
import pytest
import schemathesis
from aiohttp import hdrs

from tests.integration.upstream.support import CATALOG, Api
from upstream.api import app as app_module
from upstream.api import body, routes
from upstream.api.app import OPEN_PATHS, build_app
from upstream.api.openapi import OPENAPI
from upstream.catalog.loader import load_catalog
from upstream.events.hub import Hub
from upstream.service import Upstream
from upstream.store.sqlite import Store

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


def _served_routes(tmp_path: Path) -> set[tuple[str, str]]:
    store = Store(str(tmp_path / "routes.db"))
    try:
        app = build_app(
            Upstream(store, load_catalog(CATALOG)),
            Hub(),
            api_key_value="k",
            catalog_path=CATALOG,
        )
        return {
            (route.resource.canonical, route.method.lower())
            for route in app.router.routes()
            # aiohttp adds HEAD beside every GET (allow_head); HEAD is implied by GET in HTTP.
            if route.resource is not None and route.method != hdrs.METH_HEAD
        }
    finally:
        store.close()


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_document_is_valid_openapi_3_0() -> None:
    assert OPENAPI["openapi"] == "3.0.3"
    # The OpenAPI 3.0 meta-schema shipped with schemathesis (jsonschema-rs under the hood).
    schemathesis.openapi.from_dict(copy.deepcopy(OPENAPI)).validate()
    # ...and plain JSON: no NaN, no tuples or other Python-only values.
    assert json.loads(json.dumps(OPENAPI, allow_nan=False)) == OPENAPI


def test_the_validator_is_not_vacuous() -> None:
    broken = copy.deepcopy(OPENAPI)
    broken["paths"]["/livez"]["get"]["responses"]["200"] = {"content": {}}  # no description
    with pytest.raises(jsonschema_rs.ValidationError):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_route_is_documented_and_nothing_else(tmp_path: Path) -> None:
    served = _served_routes(tmp_path)
    documented = {(path, method) for path, method, _ in _operations(OPENAPI)}
    assert served - documented == set(), "routes missing from the document"
    assert documented - served == set(), "documented operations that are not served"


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for _, _, op in _operations(OPENAPI)]
    assert len(ids) == len(set(ids))


def test_security_is_global_except_the_open_paths() -> None:
    assert OPENAPI["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-KEY",
    }
    assert OPENAPI["security"] == [{"ApiKey": []}]
    for path, method, op in _operations(OPENAPI):
        if path in OPEN_PATHS:
            assert op.get("security") == [], (path, method)
            assert "401" not in op["responses"], (path, method)
        else:
            assert "security" not in op, (path, method)
            assert "401" in op["responses"], (path, method)


def test_path_parameters_match_the_templates() -> None:
    for path, method, op in _operations(OPENAPI):
        placeholders = set(re.findall(r"{(\w+)}", path))
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == placeholders, (path, method)


def test_every_body_taking_operation_documents_400_and_413() -> None:
    for path, method, op in _operations(OPENAPI):
        if "requestBody" in op:
            assert {"400", "413"} <= set(op["responses"]), (path, method)


def test_every_reference_resolves_and_every_component_is_used() -> None:
    components = OPENAPI["components"]
    refs = set(_refs(OPENAPI))
    for ref in refs:
        _, section, name = ref.removeprefix("#/").split("/")
        assert name in components[section], ref
    used = {ref.rsplit("/", 1)[1] for ref in refs}
    assert set(components["schemas"]) - used == set(), "unused schemas"
    assert set(components["responses"]) - used == set(), "unused responses"


def test_limits_match_the_code() -> None:
    schemas = OPENAPI["components"]["schemas"]
    assert schemas["UsageReport"]["properties"]["usages"]["maxItems"] == routes.MAX_USAGE_BATCH
    assert schemas["EventBatch"]["properties"]["events"]["maxItems"] == routes.MAX_EVENT_BATCH
    customer_id = schemas["CustomerCreate"]["properties"]["id"]
    assert (customer_id["minLength"], customer_id["maxLength"]) == (1, body.MAX_ID)
    grant = schemas["CreditGrantCreate"]["properties"]
    assert grant["grantType"]["enum"] == ["PAID", "PROMOTIONAL", None]  # null: the default
    assert grant["amount"] == {**grant["amount"], "minimum": 0, "exclusiveMinimum": True}
    behavior = schemas["UsageItem"]["properties"]["updateBehavior"]
    assert behavior["enum"] == ["DELTA", "SET", None]
    assert str(app_module.MAX_BODY_BYTES) in OPENAPI["info"]["description"]


async def test_the_document_is_served_without_a_key(anonymous: aiohttp.ClientSession) -> None:
    reply = await Api(anonymous).get("/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.body == OPENAPI
