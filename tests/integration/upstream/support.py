"""Shared by the upstream contract tests: settings for a test server and a JSON client.

Kept out of conftest.py so that tests import one module object: pytest imports
conftest under its own name, and a sentinel imported from there would be a copy.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from upstream.catalog import DEMO_CATALOG
from upstream.settings import UpstreamSettings

API_KEY = "contract-test-key"
CATALOG = DEMO_CATALOG

#: Marks "send no body at all" apart from "send JSON null".
NO_BODY: Any = object()


def upstream_settings(directory: Path) -> UpstreamSettings:
    return UpstreamSettings(
        api_key=API_KEY,
        port=0,
        database=str(directory / "upstream.db"),
        catalog_path=CATALOG,
    )


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def error(self) -> dict[str, Any]:
        """The ``error`` object of a failure body (fails the test if there is none)."""
        assert isinstance(self.body, dict) and isinstance(self.body.get("error"), dict), self.body
        error: dict[str, Any] = self.body["error"]
        return error


class Api:
    """Thin JSON client: every call returns status, decoded body and headers."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self,
        method: str,
        path: str,
        body: Any = NO_BODY,
        *,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data: bytes | None = raw
        send_headers = dict(headers or {})
        if body is not NO_BODY:
            data = json.dumps(body).encode()
        if data is not None:
            send_headers.setdefault("Content-Type", "application/json")
        # A stream, not bytes: aiohttp warns about sending large bytes bodies in one go.
        stream = io.BytesIO(data) if data is not None else None
        async with self.session.request(
            method, path, data=stream, params=params, headers=send_headers
        ) as response:
            text = await response.text()
            decoded: Any = text
            if response.content_type == "application/json":
                decoded = json.loads(text)
            # A copy keeps the headers case-insensitive.
            return Reply(response.status, decoded, response.headers.copy())

    async def get(self, path: str, **params: str) -> Reply:
        return await self.call("GET", path, params=params or None)

    async def post(self, path: str, body: Any = NO_BODY) -> Reply:
        return await self.call("POST", path, body)

    async def patch(self, path: str, body: Any) -> Reply:
        return await self.call("PATCH", path, body)

    async def delete(self, path: str) -> Reply:
        return await self.call("DELETE", path)

    async def ok(self, method: str, path: str, body: Any = NO_BODY, status: int = 200) -> Any:
        """Call and insist on ``status``; returns the body."""
        reply = await self.call(method, path, body)
        assert reply.status == status, (method, path, reply.status, reply.body)
        return reply.body
