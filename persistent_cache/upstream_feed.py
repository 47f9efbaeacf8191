"""Upstream's HTTP export, as much of it as a resync needs: the snapshot and the change feed.

``GET /v1/snapshot`` -> every (customer, resource) state plus the feed position ``seq`` it is
consistent with; ``GET /v1/changes?after=&limit=`` -> the events after a position, oldest first.
aiohttp errors, timeouts, non-200 answers and malformed bodies become ``UpstreamUnavailable``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from persistent_cache.errors import UpstreamUnavailable

# The snapshot holds every state of the environment: allow it time to arrive.
SNAPSHOT_TIMEOUT = aiohttp.ClientTimeout(total=300.0)
PAGE_TIMEOUT = aiohttp.ClientTimeout(total=30.0)


@dataclass(frozen=True, slots=True)
class SnapshotExport:
    seq: int
    states: list[Any]


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

    async def snapshot(self) -> SnapshotExport:
        body = await self._get("/v1/snapshot", SNAPSHOT_TIMEOUT)
        path = "/v1/snapshot"
        return SnapshotExport(seq=_int(body, "seq", path), states=_list(body, "states", path))

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
