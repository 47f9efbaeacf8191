"""Fixtures for the HTTP source tests: a running fake upstream and sources pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from sidecar.source.http_upstream import HttpUpstreamSource
from tests.unit.source.fake_upstream import API_KEY, FakeUpstream

MakeSource = Callable[..., HttpUpstreamSource]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    server = FakeUpstream()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def make_source(fake: FakeUpstream) -> AsyncIterator[MakeSource]:
    """Sources aimed at the fake with test-sized timings; all closed after the test."""
    made: list[HttpUpstreamSource] = []

    def make(**overrides: Any) -> HttpUpstreamSource:
        options: dict[str, Any] = {
            "api_url": fake.url,
            "api_key": API_KEY,
            "timeout": 5.0,
            "backoff_base": 0.001,
            "backoff_max": 0.01,
        }
        options.update(overrides)
        source = HttpUpstreamSource(**options)
        made.append(source)
        return source

    yield make
    for source in made:
        await source.aclose()
