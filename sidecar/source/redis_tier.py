"""The Redis tier: a cache shared by every sidecar, in front of upstream, as an EntitlementSource.

With it the read path is hot cache -> Redis -> upstream -> (stale hot copy) -> fallback, and
neither the service nor the API layer knows Redis exists.

* Reads: a Redis hit answers; a miss is refetched from upstream under a cross-process
  single-flight (Stigg's scheme, see :meth:`RedisTieredSource._refetch`) and written back with
  a versioned write that never overwrites newer data. A copy past its valid-until is refetched
  too, but served (as stale) when upstream fails: Redis outlives upstream outages on purpose.
  When Redis fails, reads go straight to upstream: a Redis outage costs latency, never an
  error; and after a few failures in a row a circuit breaker skips Redis altogether until a
  background probe finds it answering again, so a stalled Redis stops costing its timeout.
* Writes: forwarded to upstream; the usage it acknowledges is written back to Redis, best
  effort, so every sidecar (not only this one) reads it next.
* Changes: the invalidation channel the store publishes on after every write. A message drops
  this sidecar's hot copy of that key; losing the subscription drops everything (``Resync``),
  since invalidations may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub

from entitlements.errors import CacheUnavailable, SourceError
from entitlements.model.state import CustomerSnapshot, UsageRecord
from entitlements.redis.invalidation import Invalidation
from entitlements.redis.keys import invalidation_channel, refetch_channel
from entitlements.redis.store import RedisStore
from entitlements.tasks import cancel_and_wait
from sidecar.model.usage import RawEvent, UsageAck, UsageReport
from sidecar.observability import Metrics
from sidecar.source.base import Change, EntitlementSource, Invalidated, Resync
from sidecar.source.breaker import CircuitBreaker
from sidecar.source.redis_pubsub import (
    PUBSUB_FAILURES,
    Closable,
    OwnWrites,
    RefetchListener,
    ThrottledWarning,
    close_pubsub,
    describe,
)

log = structlog.get_logger("sidecar.source.redis")

_KEEPALIVE_MESSAGE = "sidecar-keepalive"
# Probing an open breaker: first after this long, then backing off to the maximum.
PROBE_FIRST_SECONDS = 0.25
PROBE_MAX_SECONDS = 5.0


class RedisTieredSource:
    """:class:`~sidecar.source.base.EntitlementSource`: Redis in front of ``upstream``.

    ``pubsub_client`` is used for subscriptions only (they hold connections of their own). Give
    it no retries and no health check: redis-py would otherwise reconnect and resubscribe
    silently, hiding the gap in which invalidations were lost. ``owned_clients`` are closed
    with the source.
    """

    def __init__(
        self,
        store: RedisStore,
        upstream: EntitlementSource,
        *,
        pubsub_client: aioredis.Redis,
        lock_ttl_ms: int = 5000,
        wait_timeout: float = 10.5,
        confirm_timeout: float = 1.0,
        keepalive_interval: float = 5.0,
        metrics: Metrics | None = None,
        owned_clients: Sequence[Closable] = (),
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.time,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if lock_ttl_ms <= 0:
            raise ValueError(f"lock_ttl_ms must be positive, got {lock_ttl_ms}")
        for name, value in (
            ("wait_timeout", wait_timeout),
            ("confirm_timeout", confirm_timeout),
            ("keepalive_interval", keepalive_interval),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if pubsub_client.connection_pool.connection_kwargs.get("health_check_interval"):
            # redis-py's health check PINGs and reads the answer itself, racing the task
            # that reads the shared subscription; liveness is checked here instead.
            raise ValueError("pubsub_client must not set health_check_interval")
        self._store = store
        self._upstream = upstream
        self._pubsub_client = pubsub_client
        self._lock_ttl_ms = lock_ttl_ms
        self._wait_timeout = wait_timeout
        self._confirm_timeout = confirm_timeout
        self._keepalive = keepalive_interval
        self._metrics = metrics
        self._clock = clock
        self._owned_clients = tuple(owned_clients)
        self._listener = RefetchListener(pubsub_client, confirm_timeout=confirm_timeout)
        self._streams: set[PubSub] = set()
        self._own = OwnWrites()
        # Separate, so a flood of one kind cannot hide the other.
        self._failure_warning = ThrottledWarning(log_interval)
        self._decode_warning = ThrottledWarning(log_interval)
        self._breaker = breaker if breaker is not None else CircuitBreaker()
        self._probe: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ reads

    async def fetch(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        if self._breaker.is_open:
            return await self._upstream.fetch(customer_id, resource_id)
        try:
            cached = await self._store.get(customer_id, resource_id)
        except CacheUnavailable as exc:
            self._redis_failed("get", exc)
            return await self._upstream.fetch(customer_id, resource_id)
        self._redis_answered()
        if cached is not None and not _expired(cached, self._clock()):
            self._count_hit()
            return cached
        if self._metrics is not None:
            self._metrics.redis_misses.inc()
        try:
            return await self._refetch(customer_id, resource_id)
        except SourceError:
            if cached is None:
                raise
            # Upstream cannot say what replaced the expired copy; the copy is still a better
            # answer than a guess (the evaluator rolls usage periods over at read time).
            if self._metrics is not None:
                self._metrics.stale_served_redis.inc()
            return cached

    async def reload(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        """Straight from upstream, then written back (versioned) so Redis catches up too.

        A reload is asked for because the caller suspects what is cached; answering from Redis
        would hand back the copy in doubt. Upstream failing fails the reload (no fallback to
        Redis), as Stigg's reload does.
        """
        return await self._fetch_and_write(customer_id, resource_id)

    async def _refetch(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        """One upstream fetch per key across every process sharing this Redis.

        Subscribe to the key's refetch channel first, then try its lock: subscribing second
        would miss a leader that finishes in between. The leader fetches, writes back and
        publishes; the others wait for that and read Redis. Anything that goes wrong with
        Redis on the way means fetching alone, never failing the read.
        """
        channel = refetch_channel(self._store.prefix, customer_id, resource_id)
        token = secrets.token_hex(16)
        outcome: str | None = None
        try:
            async with self._listener.subscription(channel) as message:
                leader = await self._store.try_lock(
                    customer_id, resource_id, token, self._lock_ttl_ms
                )
                if not leader:
                    if self._metrics is not None:
                        self._metrics.refetch_lock_waits.inc()
                    done, _ = await asyncio.wait({message}, timeout=self._wait_timeout)
                    outcome = message.result() if done else None
        except CacheUnavailable as exc:
            self._redis_failed("refetch_coordination", exc)
            return await self._fetch_and_write(customer_id, resource_id)
        if leader:
            return await self._lead(customer_id, resource_id, token)
        if outcome is not None and _leader_failed(outcome):
            return await self._fetch_and_write(customer_id, resource_id)
        # The leader finished (or the wait timed out: its message may be lost, its write not).
        return await self._read_or_fetch(customer_id, resource_id)

    async def _lead(
        self, customer_id: str, resource_id: str | None, token: str
    ) -> CustomerSnapshot:
        error: str | None = "cancelled"
        try:
            # A leader that finished between our miss and our lock has written already:
            # reading again spares upstream the second fetch Stigg's scheme makes here.
            snapshot = await self._read_or_fetch(customer_id, resource_id)
            error = None
            return snapshot
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            raise
        finally:
            await self._release(customer_id, resource_id, token, error)

    async def _release(
        self, customer_id: str, resource_id: str | None, token: str, error: str | None
    ) -> None:
        payload = "{}" if error is None else json.dumps({"error": error})
        try:
            await self._store.publish_refetch(customer_id, resource_id, payload)
            await self._store.unlock(customer_id, resource_id, token)
        except CacheUnavailable as exc:
            # Waiters time out and the lock expires on its own: slower, still correct.
            self._redis_failed("refetch_release", exc)

    async def _read_or_fetch(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        try:
            cached = await self._get(customer_id, resource_id)
        except CacheUnavailable as exc:
            self._redis_failed("get", exc)
            return await self._upstream.fetch(customer_id, resource_id)
        if cached is not None:
            self._count_hit()
            return cached
        return await self._fetch_and_write(customer_id, resource_id)

    async def _get(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot | None:
        """What Redis holds, unless an entitlement in it is past its valid-until.

        The service refetches an entry at its valid-until because upstream then computes
        another state; answering with the same expired copy from Redis would keep granting
        until someone rewrote the key (up to the keys' TTL without a persistent cache).
        """
        cached = await self._store.get(customer_id, resource_id)
        if cached is None or not _expired(cached, self._clock()):
            return cached
        return None

    async def _fetch_and_write(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        snapshot = await self._upstream.fetch(customer_id, resource_id)
        if self._breaker.is_open:
            return snapshot
        state = snapshot.state
        own = self._own.expect(state.customer_id, state.resource_id, state.version)
        try:
            # Versioned: newer records the persistent cache wrote meanwhile are kept.
            result = await self._store.apply_snapshot(snapshot)
        except CacheUnavailable as exc:
            self._own.forget(own)
            self._redis_failed("write_back", exc)
            return snapshot
        if not result.applied:
            self._own.forget(own)
        if not result.stale:
            return snapshot
        # Redis kept some newer records, so what it holds now is newer than this answer.
        try:
            merged = await self._store.get(customer_id, resource_id)
        except CacheUnavailable as exc:
            self._redis_failed("get", exc)
            merged = None
        return merged if merged is not None else snapshot

    # ----------------------------------------------------------------- writes

    async def report_usage(
        self, reports: Sequence[UsageReport], *, deadline: float | None = None
    ) -> list[UsageAck]:
        acks = await self._upstream.report_usage(reports, deadline=deadline)
        await self._write_usage(acks)
        return acks

    async def _write_usage(self, acks: Sequence[UsageAck]) -> None:
        if self._breaker.is_open:
            return
        try:
            for ack in acks:
                if ack.usage is not None:
                    await self._write_record(ack, ack.usage, feature_id=ack.feature_id)
                if ack.credit is not None:
                    await self._write_record(
                        ack, ack.credit.record, currency_id=ack.credit.currency_id
                    )
        except CacheUnavailable as exc:
            # Upstream has the report, so it must not fail; Redis catches up from the
            # persistent cache or the next miss. The rest is skipped: Redis is down, and each
            # attempt would wait out its timeout.
            self._redis_failed("usage_write_back", exc)

    async def _write_record(
        self,
        ack: UsageAck,
        record: UsageRecord,
        *,
        feature_id: str | None = None,
        currency_id: str | None = None,
    ) -> None:
        own = self._own.expect(ack.customer_id, ack.resource_id, record.version)
        try:
            result = await self._store.apply_usage(
                ack.customer_id,
                ack.resource_id,
                record,
                feature_id=feature_id,
                currency_id=currency_id,
            )
        except CacheUnavailable:
            self._own.forget(own)
            raise
        if not result.applied:
            self._own.forget(own)

    async def report_events(self, events: Sequence[RawEvent]) -> None:
        await self._upstream.report_events(events)

    # ---------------------------------------------------------------- changes

    async def changes(self) -> AsyncIterator[Change]:
        pubsub = self._pubsub_client.pubsub()
        self._streams.add(pubsub)
        try:
            await self._subscribe_invalidations(pubsub)
            log.info("invalidation_stream_connected")
            # Redis answers: reads must use it again before the Resync below empties the hot
            # cache, or they would refill it from upstream behind Redis's back.
            self._redis_answered()
            # Expectations from before may never be met: their messages could be lost.
            self._own.clear()
            yield Resync()
            async for change in self._invalidations(pubsub):
                yield change
        except PUBSUB_FAILURES as exc:
            self._redis_failed("invalidation_stream", exc)
            raise CacheUnavailable(f"invalidation stream lost: {describe(exc)}") from exc
        finally:
            self._streams.discard(pubsub)
            await close_pubsub(pubsub)

    async def _subscribe_invalidations(self, pubsub: PubSub) -> None:
        loop = asyncio.get_running_loop()
        await pubsub.subscribe(invalidation_channel(self._store.prefix))
        deadline = loop.time() + self._confirm_timeout
        # Resync is only true once Redis confirmed: until then a write could go unheard.
        while (remaining := deadline - loop.time()) > 0:
            message = await pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "subscribe":
                return
        raise TimeoutError("SUBSCRIBE to the invalidation channel not confirmed")

    async def _invalidations(self, pubsub: PubSub) -> AsyncIterator[Invalidated]:
        """Invalidations until the connection fails or goes silent.

        A connection can die without a reset (a partition, a stalled server), and then no
        invalidation would ever arrive again: a PING every keepalive interval that goes
        unanswered for another interval counts as a lost connection.
        """
        loop = asyncio.get_running_loop()
        ping_sent: float | None = None
        next_ping = loop.time() + self._keepalive
        while True:
            now = loop.time()
            if ping_sent is not None and now - ping_sent > self._keepalive:
                raise TimeoutError("no answer to a keepalive PING")
            if ping_sent is None and now >= next_ping:
                await pubsub.ping(_KEEPALIVE_MESSAGE)
                ping_sent = now
            wake = (ping_sent + self._keepalive) if ping_sent is not None else next_ping
            message = await pubsub.get_message(timeout=max(wake - now, 0.01))
            if message is None:
                continue
            # Anything read proves the connection alive; the PONG arrives after it anyway.
            if message["type"] != "message":
                ping_sent = None
                next_ping = loop.time() + self._keepalive
                continue
            change = self._decode_invalidation(message["data"])
            if change is not None:
                yield change

    def _decode_invalidation(self, data: str | bytes) -> Invalidated | None:
        try:
            invalidation = Invalidation.decode(data)
        except ValueError as exc:
            # Skipping one is safe enough: the writer's next change to that key invalidates again.
            self._decode_warning.warn("invalidation_invalid", error=str(exc))
            return None
        if self._own.consume(invalidation):
            return None
        return Invalidated(
            invalidation.customer_id, invalidation.resource_id, invalidation.committed_at_ms
        )

    # ---------------------------------------------------------------- helpers

    def _count_hit(self) -> None:
        if self._metrics is not None:
            self._metrics.redis_hits.inc()

    def _redis_failed(self, operation: str, exc: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.redis_client_errors.inc()
        self._failure_warning.warn("redis_failed", operation=operation, error=str(exc))
        if self._breaker.record_failure():
            log.warning("redis_breaker_opened", operation=operation, error=str(exc))
            self._breaker_changed()
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_closed())

    def _redis_answered(self) -> None:
        if self._breaker.record_success():
            log.info("redis_breaker_closed")
            self._breaker_changed()

    def _breaker_changed(self) -> None:
        if self._metrics is not None:
            self._metrics.redis_breaker_open.set(1 if self._breaker.is_open else 0)

    async def _probe_until_closed(self) -> None:
        """PING an open breaker's Redis, backing off, until it answers; then close it."""
        delay = PROBE_FIRST_SECONDS
        while self._breaker.is_open:
            await asyncio.sleep(delay)
            delay = min(delay * 2, PROBE_MAX_SECONDS)
            try:
                answered = await self._store.ping()
            except CacheUnavailable:
                continue
            if answered:
                self._redis_answered()

    async def aclose(self) -> None:
        if self._probe is not None:
            await cancel_and_wait(self._probe)
        for pubsub in list(self._streams):
            await close_pubsub(pubsub)
        await self._listener.aclose()
        try:
            await self._upstream.aclose()
        finally:
            for client in self._owned_clients:
                with contextlib.suppress(*PUBSUB_FAILURES):
                    await client.aclose()


def _expired(snapshot: CustomerSnapshot, now: float) -> bool:
    state = snapshot.state
    instants = [e.valid_until for e in state.features.values() if e.valid_until]
    instants += [c.valid_until for c in state.credits.values() if c.valid_until]
    return bool(instants) and min(instants).timestamp() <= now


def _leader_failed(payload: str) -> bool:
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") is not None
