"""A live upstream (port 0, a fresh SQLite file, the example catalog) and HTTP clients for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.integration.upstream.support import API_KEY, Api, upstream_settings
from upstream.server import UpstreamServer


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[UpstreamServer]:
    async with UpstreamServer(upstream_settings(tmp_path)) as server:
        yield server


@pytest.fixture
def base_url(upstream: UpstreamServer) -> str:
    return f"http://127.0.0.1:{upstream.port}"


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A session that sends the API key."""
    async with aiohttp.ClientSession(base_url, headers={"X-API-KEY": API_KEY}) as session:
        yield session


@pytest.fixture
async def anonymous(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A session without the API key."""
    async with aiohttp.ClientSession(base_url) as session:
        yield session


@pytest.fixture
def api(http: aiohttp.ClientSession) -> Api:
    return Api(http)
