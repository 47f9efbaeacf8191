"""The spool in Redis (``SPOOL_BACKEND=redis``): streams shared by every sidecar of the
environment, so what a sidecar acknowledged survives the deletion of its pod.

Layout (``P`` = REDIS_ENVIRONMENT_PREFIX; every key carries the hash tag ``{spool}``, so the
scripts below may touch them together in Redis Cluster): ``P:{spool}:events`` and
``P:{spool}:usage`` hold the items (one stream entry each, field ``p`` = the same JSON the disk
spool stores), ``P:{spool}:events:bytes`` and ``P:{spool}:usage:bytes`` count their payload
bytes (so ``SPOOL_MAX_BYTES`` bounds them together, checked and added in the same script as
the ``XADD``: an append is all or nothing), and ``P:{spool}:lease`` names the one sidecar
shipping at a time.

Why one shipper under a lease instead of a consumer group spreading entries over every
sidecar: upstream must apply each customer's reports in the order they were acknowledged (a
usage SET must not overtake), and readers of one group would ship neighbouring entries
concurrently. The stream's own order is the spool's order; the lease holder reads it from the
head (``XRANGE``), ships, and deletes what upstream acknowledged (``XDEL``). A holder that dies
mid-batch lets its lease lapse; the next holder ships the same head again with the same
idempotency keys, which upstream de-duplicates, so nothing is lost and nothing counted twice.
One shipper is enough: upstream's per-item work bounds the drain rate, not the reader.

Durability is Redis's: an entry is acknowledged once Redis took it, so it is as safe as the
Redis deployment (AOF with ``appendfsync always``, or replicas, for usage that is billing).
Redis unreachable: the append fails and the call answers ``UNAVAILABLE``; nothing falls back to
the local disk, because a local copy is exactly what dies with the pod and two queues would
break per-customer order. ``SPOOL_BACKEND=disk`` (the default) acknowledges without a network
hop and needs nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import structlog
from redis.exceptions import RedisError

from entitlements.errors import ResourceExhausted, SpoolUnavailable
from entitlements.redis import keys
from entitlements.redis.store import RedisClient
from entitlements.tasks import cancel_and_wait
from sidecar.model.usage import RawEvent, UsageReport
from sidecar.spool.store import (
    Spooled,
    decode_event,
    decode_usage,
    encode_event,
    encode_usage,
)

log = structlog.get_logger("sidecar.spool")

_Item = TypeVar("_Item")

#: How long a shipper's lease lasts unless renewed (every peek, and the poll every second while
#: anything waits, renew it, however long a batch takes upstream): a dead holder holds up
#: shipping for at most this long.
LEASE_MS = 5_000
#: How often the depth and the lease are refreshed (the shipper waits on them).
POLL_SECONDS = 1.0

# KEYS[1] stream, KEYS[2] its bytes counter, KEYS[3..] every queue's counter (the bound);
# ARGV[1] max bytes, ARGV[2] size of the payloads, ARGV[3..] payloads.
# Returns {1, bytes held after} or {0, bytes held} when they would not fit.
_APPEND = """
local held = 0
for i = 3, #KEYS do held = held + tonumber(redis.call('GET', KEYS[i]) or '0') end
local size = tonumber(ARGV[2])
if held + size > tonumber(ARGV[1]) then return {0, held} end
for i = 3, #ARGV do redis.call('XADD', KEYS[1], '*', 'p', ARGV[i]) end
redis.call('INCRBY', KEYS[2], size)
return {1, held + size}
"""

# KEYS[1] stream, KEYS[2] its bytes counter; ARGV = id1, size1, id2, size2, ...
# Only entries still there are uncounted: a previous holder may have deleted some already.
_DELETE = """
local freed = 0
for i = 1, #ARGV, 2 do
  if redis.call('XDEL', KEYS[1], ARGV[i]) == 1 then freed = freed + tonumber(ARGV[i + 1]) end
end
if freed > 0 then redis.call('DECRBY', KEYS[2], freed) end
return freed
"""

# KEYS[1] lease; ARGV[1] owner, ARGV[2] ms. 1 when ``owner`` holds it (renewed or taken).
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


def owner_id() -> str:
    """This process, as named in the lease."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisSpoolQueue(Generic[_Item]):
    """One kind of item in its own stream; the same interface as the disk queue."""

    def __init__(
        self,
        spool: RedisSpool,
        kind: str,
        what: str,
        encode: Callable[[_Item], bytes],
        decode: Callable[[bytes], _Item | None],
    ) -> None:
        self._spool = spool
        self.stream = keys.spool_stream(spool.prefix, kind)
        self.bytes_key = keys.spool_bytes(spool.prefix, kind)
        self._what = what
        self._encode = encode
        self._decode = decode
        #: Items and payload bytes in the stream (every sidecar's), as of the last refresh.
        self.count = 0
        self.bytes = 0
        self.pending_bytes = 0
        self.oldest_appended_at: float | None = None
        #: Set while the stream holds items and this sidecar holds the shipping lease.
        self.not_empty = asyncio.Event()

    async def refresh(self) -> None:
        """Read the depth, the oldest entry and (when there is something to ship) the lease."""
        client = self._spool.client
        try:
            count, size, head = await asyncio.gather(
                client.xlen(self.stream),
                client.get(self.bytes_key),
                client.xrange(self.stream, "-", "+", count=1),
            )
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(f"redis spool: {exc}") from exc
        self.count, self.bytes = int(count), int(size or 0)
        first = _entries(head)
        self.oldest_appended_at = _entry_time(first[0][0]) if first else None
        if self.count and await self._spool.hold_lease():
            self.not_empty.set()
        else:
            self.not_empty.clear()

    async def append(self, items: Sequence[_Item]) -> None:
        """Return once Redis holds every item; all or none are kept."""
        if not items:
            return
        payloads = [self._encode(i) for i in items]
        size = sum(len(p) for p in payloads)
        counters = [q.bytes_key for q in self._spool.queues()]
        try:
            taken, held = await self._spool.client.eval(
                _APPEND,
                2 + len(counters),
                self.stream,
                self.bytes_key,
                *counters,
                self._spool.max_bytes,
                size,
                *payloads,
            )
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(
                f"redis spool: cannot append {len(items)} {self._what}: {exc}"
            ) from exc
        if not int(taken):
            raise ResourceExhausted(
                f"spool is full: Redis holds {int(held)} of SPOOL_MAX_BYTES="
                f"{self._spool.max_bytes} bytes waiting for upstream; these {len(items)} "
                f"{self._what} ({size} bytes) were not taken, retry later"
            )
        self.count += len(items)
        self.bytes += size
        if self.oldest_appended_at is None:
            self.oldest_appended_at = self._spool.clock()
        if await self._spool.hold_lease_quietly():
            self.not_empty.set()

    async def peek(self, limit: int) -> list[Spooled[_Item]]:
        """The oldest ``limit`` items of the stream, if this sidecar holds the lease."""
        if not await self._spool.hold_lease():
            self.not_empty.clear()
            return []
        try:
            raw = await self._spool.client.xrange(self.stream, "-", "+", count=limit)
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(f"redis spool: {exc}") from exc
        entries = _entries(raw)
        if not entries:
            self.count = 0
            self.not_empty.clear()
        return [
            Spooled(entry_id, self._decode(payload), len(payload), _entry_time(entry_id))
            for entry_id, payload in entries
        ]

    async def delete(self, shipped: Sequence[Spooled[_Item]]) -> None:
        if not shipped:
            return
        pairs: list[Any] = []
        for s in shipped:
            pairs += [s.id, s.size]
        try:
            await self._spool.client.eval(_DELETE, 2, self.stream, self.bytes_key, *pairs)
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(f"redis spool: {exc}") from exc
        await self.refresh()

    def oldest_age(self) -> float:
        if self.oldest_appended_at is None:
            return 0.0
        return max(self._spool.clock() - self.oldest_appended_at, 0.0)


class RedisSpool(RedisSpoolQueue[RawEvent]):
    """The Redis spool: its event queue (inherited) and :attr:`usage`."""

    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        max_bytes: int,
        *,
        clock: Callable[[], float] = time.time,
        lease_ms: int = LEASE_MS,
        poll_seconds: float = POLL_SECONDS,
        owner: str | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.client = client
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.clock = clock
        self.owner = owner or owner_id()
        self.lease_key = keys.spool_lease(prefix)
        self._lease_ms = lease_ms
        self._poll_seconds = poll_seconds
        self._poller: asyncio.Task[None] | None = None
        super().__init__(self, "events", "events", encode_event, decode_event)
        self.usage: RedisSpoolQueue[UsageReport] = RedisSpoolQueue(
            self, "usage", "usage reports", encode_usage, decode_usage
        )

    @property
    def location(self) -> str:
        return f"redis:{keys.spool_stream(self.prefix, '*')}"

    @property
    def events(self) -> int:
        return self.count

    def queues(self) -> tuple[RedisSpoolQueue[Any], ...]:
        return (self, self.usage)

    def held_bytes(self) -> int:
        return sum(q.bytes for q in self.queues())

    def describe_held(self) -> str:
        return f"{self.count} events, {self.usage.count} usage reports"

    async def hold_lease(self) -> bool:
        """Take or renew the shipping lease; raises SpoolUnavailable when Redis fails."""
        try:
            held = await self.client.eval(_LEASE, 1, self.lease_key, self.owner, self._lease_ms)
        except (RedisError, OSError) as exc:
            raise SpoolUnavailable(f"redis spool: {exc}") from exc
        return bool(int(held))

    async def hold_lease_quietly(self) -> bool:
        try:
            return await self.hold_lease()
        except SpoolUnavailable:
            return False

    async def open(self) -> None:
        """Read the depth once (a Redis down at start-up is not fatal: the poll retries)."""
        for queue in self.queues():
            with contextlib.suppress(SpoolUnavailable):
                await queue.refresh()
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def close(self) -> None:
        if self._poller is not None:
            await cancel_and_wait(self._poller)
        # The lease is let go so another sidecar ships at once, not after it lapses.
        with contextlib.suppress(RedisError, OSError):
            await self.client.eval(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                1,
                self.lease_key,
                self.owner,
            )

    async def _poll(self) -> None:
        # Other sidecars append to the same streams, and a lapsed lease must be taken over:
        # neither announces itself, so the depth and the lease are refreshed periodically.
        while True:
            for queue in self.queues():
                try:
                    await queue.refresh()
                except SpoolUnavailable as exc:
                    log.debug("redis_spool_refresh_failed", error=str(exc))
            await asyncio.sleep(self._poll_seconds)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(raw: Any) -> list[tuple[str, bytes]]:
    """XRANGE's reply as (entry id, payload) pairs."""
    return [(_text(entry_id), bytes(fields[b"p"])) for entry_id, fields in raw or ()]


def _entry_time(entry_id: str | bytes) -> float:
    """When an entry was added: a stream id starts with Redis's clock in milliseconds."""
    return int(_text(entry_id).split("-", 1)[0]) / 1000
