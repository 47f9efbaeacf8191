"""Shared by the persistent cache tests: a live upstream, service settings, state comparison.

Kept out of conftest.py so tests import one module object (see tests/integration/upstream).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from entitlements.model.events import ChangeEvent, EventKind, encode_event
from entitlements.model.state import CustomerSnapshot, EntitlementState, encode_snapshot_dict
from entitlements.redis.store import RedisStore
from entitlements.redis.stream_entry import encode_entry
from persistent_cache.service import PersistentCacheService
from persistent_cache.settings import Settings
from persistent_cache.watchdog import PRIORITY
from tests.redis_server import RedisServer
from upstream.catalog import DEMO_CATALOG
from upstream.metering import Metering, UsageItem
from upstream.server import UpstreamServer
from upstream.service import SubscriptionRequest
from upstream.settings import UpstreamSettings

API_KEY = "pc-test-key"
CATALOG = DEMO_CATALOG
ROOT = Path(__file__).resolve().parents[3]


def service_settings(
    prefix: str, cache: RedisServer, upstream: UpstreamServer | None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "environment_prefix": prefix,
        "api_key": API_KEY,
        "redis_host": "127.0.0.1",
        "redis_port": cache.port,
        # Port 9 (discard) answers nothing: a resync without upstream fails fast.
        "api_url": f"http://127.0.0.1:{upstream.port if upstream else 9}",
        "http_port": 0,
        "http_bind_address": "127.0.0.1",
        "block_ms": 100,
        "claim_idle_ms": 60_000,
        "epoch_check_seconds": 0.2,
        "batch_size": 50,
    }
    values.update(overrides)
    return Settings(**values)


def service_env(
    prefix: str, cache: RedisServer, upstream: UpstreamServer, **extra: str
) -> dict[str, str]:
    """The same configuration as environment variables, for a subprocess."""
    env = {
        "REDIS_ENVIRONMENT_PREFIX": prefix,
        "SERVER_API_KEY": API_KEY,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(cache.port),
        "API_URL": f"http://127.0.0.1:{upstream.port}",
        "HTTP_PORT": "0",
        "HTTP_BIND_ADDRESS": "127.0.0.1",
        "BLOCK_MS": "100",
        "EPOCH_CHECK_SECONDS": "0.2",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
    }
    env.update(extra)
    return env


@asynccontextmanager
async def running_upstream(
    directory: Path, events: RedisServer, prefix: str
) -> AsyncIterator[UpstreamServer]:
    settings = UpstreamSettings(
        api_key=API_KEY,
        port=0,
        database=str(directory / "upstream.db"),
        catalog_path=CATALOG,
        events_redis_url=events.url,
        environment_prefix=prefix,
    )
    async with UpstreamServer(settings) as server:
        yield server


def provision(up: UpstreamServer, customers: Sequence[str], plan: str = "free") -> None:
    for customer in customers:
        up.upstream.provision_customer(customer, subscription=SubscriptionRequest(customer, plan))


def report(up: UpstreamServer, customers: Sequence[str], value: float = 1) -> None:
    """One usage report per customer, in one upstream transaction."""
    Metering(up.upstream).report_usage([UsageItem(c, "api-calls", value) for c in customers])


def state_keys(up: UpstreamServer) -> list[tuple[str, str | None]]:
    with up.store.transaction() as tx:
        return list(tx.all_state_keys())


def _wire(snapshot: CustomerSnapshot | None) -> Any:
    # Compared on the wire format: Redis keeps milliseconds, upstream's objects microseconds.
    # The state's updatedAt is left out: upstream's read path (Upstream.entitlements) does not
    # keep it for a state that did not change, while the event that carried the state did.
    if snapshot is None:
        return None
    return encode_snapshot_dict(replace(snapshot, state=replace(snapshot.state, updated_at=None)))


async def differences(store: RedisStore, up: UpstreamServer) -> list[str]:
    """Keys whose Redis copy differs from upstream's current state."""
    out = []
    for customer, resource in state_keys(up):
        expected = _wire(up.upstream.entitlements(customer, resource))
        if _wire(await store.get(customer, resource)) != expected:
            out.append(f"{customer}/{resource}")
    return out


async def converged(store: RedisStore, up: UpstreamServer) -> bool:
    return not await differences(store, up)


@asynccontextmanager
async def redis_client(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=server.port, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def stream_length(server: RedisServer, stream: str) -> int:
    async with redis_client(server) as client:
        return int(await client.xlen(stream))


def sample(svc: PersistentCacheService, name: str, **labels: str) -> float:
    value = svc.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else float(value)


def resyncs(svc: PersistentCacheService, trigger: str | None = None) -> float:
    """Successful resyncs, of one trigger or of all."""
    triggers = [trigger] if trigger else [*PRIORITY, "http"]
    return sum(
        sample(svc, "persistent_cache_resyncs_total", trigger=t, outcome="succeeded")
        for t in triggers
    )


async def dead_letters(client: aioredis.Redis, stream: str) -> list[tuple[str, dict[str, str]]]:
    """The dead-letter stream's entries (the client decodes responses)."""
    entries = await client.xrange(stream)
    return [(str(i), {str(k): str(v) for k, v in (f or {}).items()}) for i, f in entries or []]


def state_event(customer: str, version: int, seq: int = 1) -> ChangeEvent:
    """An entitlements event carrying an empty state for ``customer``, as upstream would send."""
    now = datetime.now(UTC)
    state = EntitlementState(customer_id=customer, version=version, updated_at=now)
    return ChangeEvent(
        kind=EventKind.ENTITLEMENTS,
        seq=seq,
        customer_id=customer,
        resource_id=None,
        version=version,
        committed_at=now,
        snapshot=CustomerSnapshot(state),
    )


def entry(event: ChangeEvent) -> dict[FieldT, EncodableT]:
    """The stream entry upstream publishes for ``event`` (the envelope layout)."""
    fields: dict[FieldT, EncodableT] = {}
    fields.update(encode_entry(event.seq, encode_event(event)))
    return fields


def legacy_entry(event: ChangeEvent) -> dict[FieldT, EncodableT]:
    """The entry as published before the envelope layout: one ``event`` field."""
    return {"seq": str(event.seq), "event": encode_event(event).decode()}


def event_json(event: ChangeEvent, **changes: Any) -> str:
    body = json.loads(encode_event(event))
    body.update(changes)
    return json.dumps(body)
