"""What the service needs of the cache: the part of ``RedisStore`` (sidecar.cache) it calls.

Spelled out as a Protocol so each module states its dependency by shape, not by import of the
Redis adapter; every write compares versions inside Redis, which is what lets replicas, retries
and resyncs overlap freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from entitlements.model.state import CustomerSnapshot
from entitlements.redis.hash_writes import HashWrite


class ApplyOutcome(Protocol):
    @property
    def applied(self) -> int: ...

    @property
    def stale(self) -> int: ...


class EventWriter(Protocol):
    async def apply_writes(self, writes: Sequence[HashWrite]) -> Sequence[ApplyOutcome]: ...


class CacheStore(EventWriter, Protocol):
    async def get(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot | None: ...

    async def get_epoch(self) -> str | None: ...

    async def set_epoch(self, value: str) -> None: ...

    async def ping(self) -> bool: ...
