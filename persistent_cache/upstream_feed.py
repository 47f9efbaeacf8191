"""Upstream's HTTP export, as much of it as a resync needs: the snapshot and the change feed.

``GET /v1/snapshot?limit=&after=`` -> one page of (customer, resource) states, the feed position
``seq`` current when it was read, and the cursor of the next page (an upstream without paging
answers everything at once, without ``next``); ``GET /v1/changes?after=&limit=`` -> the events
after a position, oldest first.
aiohttp errors, timeouts, non-200 answers and malformed bodies become ``UpstreamUnavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from persistent_cache.errors import UpstreamUnavailable

# A page is bounded, but an upstream without paging sends every state at once: allow for it.
SNAPSHOT_TIMEOUT = aiohttp.ClientTimeout(total=300.0)
PAGE_TIMEOUT = aiohttp.ClientTimeout(total=30.0)


@dataclass(frozen=True, slots=True)
class SnapshotPage:
    seq: int
    states: list[Any]
    #: The cursor of the next page; None on the last one.
    next: str | None


@dataclass(frozen=True, slots=True)
class ChangesPage:
    events: list[Any]
    next: int
    head: int


def _int(body: dict[str, Any], key: str, path: str) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UpstreamUnavailable(f"{path}: '{key}' is not an integer")
    return value


def _list(body: dict[str, Any], key: str, path: str) -> list[Any]:
    value = body.get(key)
    if not isinstance(value, list):
        raise UpstreamUnavailable(f"{path}: '{key}' is not a list")
    return value


class UpstreamFeed:
    def __init__(self, api_url: str, api_key: str) -> None:
        self._api_url = api_url.rstrip("/")
        self._headers = {"X-API-KEY": api_key}
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a ClientSession binds to the running loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        return self._session

    async def _get(
        self, path: str, limit: aiohttp.ClientTimeout, params: dict[str, str] | None = None
    ) -> Any:
        url = self._api_url + path
        try:
            async with self._client().get(url, params=params, timeout=limit) as response:
                if response.status != 200:
                    text = (await response.text())[:200]
                    raise UpstreamUnavailable(f"GET {path}: HTTP {response.status}: {text}")
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise UpstreamUnavailable(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(body, dict):
            raise UpstreamUnavailable(f"GET {path}: expected a JSON object")
        return body

    async def snapshot_page(self, after: str | None, limit: int) -> SnapshotPage:
        path = "/v1/snapshot"
        params = {"limit": str(limit)}
        if after is not None:
            params["after"] = after
        body = await self._get(path, SNAPSHOT_TIMEOUT, params=params)
        cursor = body.get("next")
        if cursor is not None and not isinstance(cursor, str):
            raise UpstreamUnavailable(f"{path}: 'next' is not a string or null")
        return SnapshotPage(_int(body, "seq", path), _list(body, "states", path), cursor)

    async def changes(self, after: int, limit: int) -> ChangesPage:
        path = "/v1/changes"
        body = await self._get(
            path, PAGE_TIMEOUT, params={"after": str(after), "limit": str(limit)}
        )
        return ChangesPage(
            events=_list(body, "events", path),
            next=_int(body, "next", path),
            head=_int(body, "head", path),
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
