"""Redis pub/sub plumbing of the Redis tier: refetch notifications, own-write filtering.

Kept apart from :mod:`sidecar.source.redis_tier` so the source reads as the read/write path
alone; everything here is about listening on channels and surviving their loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from entitlements.errors import CacheUnavailable
from entitlements.redis.invalidation import Invalidation

log = structlog.get_logger("sidecar.source.redis")

# What redis-py raises on a lost or refused connection (OSError covers asyncio timeouts).
PUBSUB_FAILURES = (RedisError, OSError)


class Closable(Protocol):
    async def aclose(self) -> None: ...


class ThrottledWarning:
    """The first failure is logged at once, then one line per interval with a count.

    A down Redis fails every read; a line per read would drown everything else in the log.
    """

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next_at = 0.0
        self._suppressed = 0

    def warn(self, event: str, **fields: Any) -> None:
        now = time.monotonic()
        if now < self._next_at:
            self._suppressed += 1
            return
        log.warning(event, suppressed=self._suppressed, **fields)
        self._suppressed = 0
        self._next_at = now + self._interval


_OwnKey = tuple[str, str | None, int]


class OwnWrites:
    """Invalidations this process's own writes will cause, so they can be skipped on arrival.

    The service already holds what this process wrote; dropping it would only make the next
    read fetch the same thing back from Redis. Each expectation is used up by one message, so
    another writer's change that happens to carry the same key and version costs at most one
    skipped message, and the next (ours) still invalidates.
    """

    def __init__(self, ttl: float = 30.0, limit: int = 10_000) -> None:
        self._ttl = ttl
        self._limit = limit
        self._pending: dict[_OwnKey, float] = {}

    def expect(self, customer_id: str, resource_id: str | None, version: int) -> _OwnKey:
        now = time.monotonic()
        if len(self._pending) >= self._limit:
            self._pending = {k: t for k, t in self._pending.items() if t > now}
            if len(self._pending) >= self._limit:
                # Forgetting only costs a spare invalidation each; memory stays bounded.
                self._pending.clear()
        key = (customer_id, resource_id or None, version)
        self._pending[key] = now + self._ttl
        return key

    def forget(self, key: _OwnKey) -> None:
        self._pending.pop(key, None)

    def consume(self, invalidation: Invalidation) -> bool:
        key = (invalidation.customer_id, invalidation.resource_id or None, invalidation.version)
        expires_at = self._pending.pop(key, None)
        return expires_at is not None and expires_at > time.monotonic()

    def clear(self) -> None:
        self._pending.clear()


@dataclass(eq=False)
class Channel:
    confirmed: asyncio.Future[None]
    waiters: set[asyncio.Future[str]] = field(default_factory=set)


class RefetchListener:
    """One pub/sub connection shared by every refetch wait of this process.

    A connection per wait would be simpler, but misses come in herds (a flushed or new Redis
    makes every key miss at once, in every sidecar) and each would be a connection on Redis.
    """

    def __init__(self, client: aioredis.Redis, *, confirm_timeout: float) -> None:
        self._client = client
        self._confirm_timeout = confirm_timeout
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        # Held while (un)subscribing and while resetting, so the order of SUBSCRIBE and
        # UNSUBSCRIBE on the wire is the order recorded in _channels and _confirms.
        self._lock = asyncio.Lock()
        self._channels: dict[str, Channel] = {}
        # Redis confirms SUBSCRIBEs in the order they were sent, so confirmations are
        # matched to subscribers first-in, first-out per channel.
        self._confirms: dict[str, deque[asyncio.Future[None]]] = {}

    @contextlib.asynccontextmanager
    async def subscription(self, channel: str) -> AsyncIterator[asyncio.Future[str]]:
        """Subscribed to ``channel`` (Redis confirmed it) inside the block.

        Yields the future of the channel's next message; it fails with CacheUnavailable when
        the connection is lost.
        """
        message: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = await self._join(channel, message)
        try:
            await self._confirmed(entry)
            yield message
        finally:
            await self._leave(channel, entry, message)

    async def _join(self, channel: str, message: asyncio.Future[str]) -> Channel:
        async with self._lock:
            entry = self._channels.get(channel)
            if entry is not None:
                entry.waiters.add(message)
                return entry
            try:
                pubsub = await self._connected()
                entry = Channel(asyncio.get_running_loop().create_future(), {message})
                self._confirms.setdefault(channel, deque()).append(entry.confirmed)
                self._channels[channel] = entry
                await pubsub.subscribe(channel)
            except PUBSUB_FAILURES as exc:
                await self._reset(exc)
                raise CacheUnavailable(f"redis SUBSCRIBE: {describe(exc)}") from exc
            return entry

    async def _connected(self) -> PubSub:
        if self._pubsub is None:
            pubsub = self._client.pubsub()
            # The reader cannot start before the connection exists: connect first.
            await pubsub.connect()  # type: ignore[no-untyped-call]
            self._pubsub = pubsub
            self._reader = asyncio.get_running_loop().create_task(self._read(pubsub))
        return self._pubsub

    async def _confirmed(self, entry: Channel) -> None:
        done, _ = await asyncio.wait({entry.confirmed}, timeout=self._confirm_timeout)
        if not done:
            # A connection that cannot confirm one SUBSCRIBE in time is dead or stalled;
            # everything waiting on it would wait out its full timeout.
            failure = TimeoutError("SUBSCRIBE not confirmed")
            async with self._lock:
                await self._reset(failure)
            raise CacheUnavailable(f"redis SUBSCRIBE: {failure}")
        entry.confirmed.result()

    async def _leave(self, channel: str, entry: Channel, message: asyncio.Future[str]) -> None:
        async with self._lock:
            entry.waiters.discard(message)
            if entry.waiters or self._channels.get(channel) is not entry:
                return
            del self._channels[channel]
            if self._pubsub is None:
                return
            try:
                await self._pubsub.unsubscribe(channel)
            except PUBSUB_FAILURES as exc:
                await self._reset(exc)

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                self._dispatch(await pubsub.get_message(timeout=None))
        except PUBSUB_FAILURES as exc:
            async with self._lock:
                if self._pubsub is pubsub:
                    await self._reset(exc)

    def _dispatch(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        kind = message["type"]
        channel = text_of(message["channel"])
        if kind == "subscribe":
            pending = self._confirms.get(channel)
            if pending:
                confirmed = pending.popleft()
                if not pending:
                    del self._confirms[channel]
                if not confirmed.done():
                    confirmed.set_result(None)
        elif kind == "message":
            entry = self._channels.get(channel)
            if entry is not None:
                data = text_of(message["data"])
                for waiter in entry.waiters:
                    if not waiter.done():
                        waiter.set_result(data)

    async def _reset(self, cause: BaseException) -> None:
        """Drop the connection and fail everyone waiting on it; the lock must be held."""
        pubsub, self._pubsub = self._pubsub, None
        reader, self._reader = self._reader, None
        error = CacheUnavailable(f"refetch subscription lost: {describe(cause)}")
        futures: list[asyncio.Future[Any]] = [
            waiter for entry in self._channels.values() for waiter in entry.waiters
        ]
        futures += [confirmed for pending in self._confirms.values() for confirmed in pending]
        for future in futures:
            if not future.done():
                future.set_exception(error)
                # Some of them nobody will await (a waiter still on its confirmation).
                future.exception()
        self._channels.clear()
        self._confirms.clear()
        if reader is not None and reader is not asyncio.current_task():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if pubsub is not None:
            await close_pubsub(pubsub)

    async def aclose(self) -> None:
        async with self._lock:
            await self._reset(CacheUnavailable("source closed"))


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def text_of(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def close_pubsub(pubsub: PubSub) -> None:
    # Best effort: the connection is being given up, usually because it already failed.
    with contextlib.suppress(*PUBSUB_FAILURES):
        await pubsub.aclose()
