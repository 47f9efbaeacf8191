"""The persistent cache: entitlement snapshots and usage records in Redis.

One hash per (customer, resource) (layout in :mod:`entitlements.redis.keys`). Every write is one
Lua script (:mod:`entitlements.redis.scripts`) that compares versions and writes in a single
atomic step, so writers may deliver records in any order, any number of times, from any number
of processes, and Redis still ends up holding the newest copy of every record.

Works with a plain ``redis.asyncio.Redis`` and with ``redis.asyncio.cluster.RedisCluster``: each
script touches a single key, and a batch is a non-transactional pipeline, which a cluster client
splits by node. Every Redis failure surfaces as :class:`~entitlements.errors.CacheUnavailable`; a
NOSCRIPT answer (the server restarted or was flushed and lost its script cache) is not a failure
and is handled here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

import structlog
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError, ResponseError

from entitlements.errors import CacheRejected, CacheUnavailable, WritesRejected
from entitlements.model.events import ChangeEvent
from entitlements.model.state import (
    CustomerSnapshot,
    StateDecodeError,
    UsageRecord,
    decode_state,
    decode_usage,
)
from entitlements.redis.hash_writes import (
    HashWrite,
    event_write,
    snapshot_write,
    usage_write,
    version_text,
)
from entitlements.redis.invalidation import Invalidation
from entitlements.redis.keys import (
    CREDIT_USAGE_PREFIX,
    FEATURE_USAGE_PREFIX,
    STATE_FIELD,
    epoch_key,
    invalidation_channel,
    lock_key,
    refetch_channel,
    state_key,
    ttl_ms,
    version_field,
)
from entitlements.redis.scripts import UNLOCK_SCRIPT, WRITE_SCRIPT, LuaScript

log = structlog.get_logger("entitlements.redis")

RedisClient: TypeAlias = Redis | RedisCluster


class HashReader(Protocol):
    """What :meth:`RedisStore.get` reads with: redis-py's clients, or a leaner one."""

    def hgetall(self, name: str) -> Any: ...


# Redis failures as redis-py raises them. RedisClusterException is not a RedisError (a cluster
# that cannot be reached or has uncovered slots raises it); OSError covers socket errors and
# asyncio timeouts that escape redis-py's own wrapping.
_REDIS_FAILURES = (RedisError, RedisClusterException, OSError)

# Script errors caused by the key's content: the same write fails the same way every time.
_FINAL_ERRORS = ("WRONGTYPE",)

# Corrupt keys are logged once each; the set is reset when it reaches this size so a flood of
# distinct corrupt keys cannot grow memory without bound.
_MAX_LOGGED_CORRUPT = 4096

# Writes per script call, and arguments per call: a call holds Redis while it runs, so it is
# kept to a few milliseconds; both bounds are far above what one write needs.
WRITES_PER_CALL = 64
ARGS_PER_CALL = 4096


@dataclass(slots=True)
class _Call:
    script: LuaScript
    keys: list[str]
    args: list[str | bytes | int]
    #: For WRITE calls: where each write this call carries sits in the caller's list.
    writes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """How many records a write stored, and how many it skipped because Redis held them newer."""

    applied: int
    stale: int


class RedisStore:
    """Versioned reads and writes of customer state in Redis; see the module docstring.

    The client is borrowed, not owned: whoever created it closes it. Give it socket timeouts
    (``socket_timeout``, ``socket_connect_timeout``) so an unreachable Redis fails fast rather
    than stalling callers, and a retry policy of at least one retry: after a Redis restart the
    pooled connections are dead, and it is the client's retry that replaces them.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str,
        ttl_seconds: int,
        publish: bool = True,
        reader: HashReader | None = None,
    ) -> None:
        self._client: RedisClient = client
        # Reads may go through a leaner client (entitlements.redis.reader) than the writes.
        self._reader: HashReader = reader if reader is not None else client
        self.prefix = prefix
        self.ttl_ms = ttl_ms(ttl_seconds)
        self.publish = publish
        #: Reads that found an undecodable value and answered "miss" instead.
        self.decode_errors = 0
        self._channel = invalidation_channel(prefix) if publish else ""
        self._logged_corrupt: set[str] = set()

    # ------------------------------------------------------------------ reads

    async def get(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot | None:
        """The stored snapshot, or None when there is none or it cannot be decoded."""
        key = state_key(self.prefix, customer_id, resource_id)
        try:
            with _translate("HGETALL"):
                raw: Mapping[Any, Any] = await self._reader.hgetall(key)
            if not raw:
                return None
            return _decode_hash(raw, customer_id, resource_id)
        except (ValueError, TypeError, CacheRejected) as exc:
            # Corrupt content, or a key of another type, must read as a miss: handing it on
            # would put garbage in a cache.
            self.decode_errors += 1
            if key not in self._logged_corrupt:
                if len(self._logged_corrupt) >= _MAX_LOGGED_CORRUPT:
                    self._logged_corrupt.clear()
                self._logged_corrupt.add(key)
                log.warning("redis_state_corrupt", key=key, error=str(exc))
            return None

    # ------------------------------------------------------------------ writes

    async def apply_snapshot(
        self, snapshot: CustomerSnapshot, *, committed_at_ms: int | None = None
    ) -> ApplyResult:
        """Write the state and every usage record of ``snapshot``, each only if newer."""
        (result,) = await self.apply_writes([snapshot_write(snapshot, committed_at_ms)])
        return result

    async def apply_usage(
        self,
        customer_id: str,
        resource_id: str | None,
        record: UsageRecord,
        *,
        feature_id: str | None = None,
        currency_id: str | None = None,
        committed_at_ms: int | None = None,
    ) -> ApplyResult:
        """Write one usage record (of a feature, or of a credit currency) if newer."""
        write = usage_write(
            customer_id,
            resource_id,
            record,
            feature_id=feature_id,
            currency_id=currency_id,
            committed_at_ms=committed_at_ms,
        )
        (result,) = await self.apply_writes([write])
        return result

    async def apply_events(self, events: Sequence[ChangeEvent]) -> list[ApplyResult]:
        """Apply change events in one pipelined round trip; one result per event, in order.

        Every event is checked before anything is sent, so a malformed event (ValueError) leaves
        Redis untouched. A deletion's result counts a removed state as one applied record, and
        a deletion older than the stored state as stale.
        """
        return await self.apply_writes([event_write(event) for event in events])

    async def apply_writes(self, writes: Sequence[HashWrite]) -> list[ApplyResult]:
        """Send already-encoded writes in one pipelined round trip; one result per write.

        Raises CacheUnavailable when Redis failed (nothing is known to be written), and
        :class:`WritesRejected` when Redis refused some writes for good: its ``outcomes`` hold
        an ApplyResult for each write that went through and the CacheRejected of each refused.
        """
        calls = self._plan(writes)
        replies = await self._run_many(calls)
        slots: dict[int, ApplyResult | CacheRejected] = {}
        rejected: CacheRejected | None = None
        for call, reply in zip(calls, replies, strict=True):
            for offset, index in enumerate(call.writes):
                outcome = _write_outcome(call, offset, reply)
                if isinstance(outcome, CacheRejected):
                    rejected = rejected or outcome
                slots[index] = outcome
        outcomes = [slots[index] for index in range(len(writes))]
        if rejected is not None:
            raise WritesRejected(str(rejected), outcomes)
        return outcomes  # type: ignore[return-value]

    async def delete(self, customer_id: str, resource_id: str | None) -> None:
        """Drop the stored hash; publishes nothing (deletion events go through apply_events)."""
        with _translate("DEL"):
            await self._client.delete(state_key(self.prefix, customer_id, resource_id))

    # ------------------------------------------------------------------ epoch

    async def get_epoch(self) -> str | None:
        with _translate("GET"):
            value = await self._client.get(epoch_key(self.prefix))
        return None if value is None else _text(value)

    async def set_epoch(self, value: str) -> None:
        # A plain SET also clears any TTL: the epoch must outlive every state key.
        with _translate("SET"):
            await self._client.set(epoch_key(self.prefix), value)

    # ------------------------------------------------------------------ refetch coordination

    async def try_lock(
        self, customer_id: str, resource_id: str | None, token: str, ttl_ms: int
    ) -> bool:
        """Take the key's refetch lock for ``ttl_ms``; False when someone else holds it."""
        if ttl_ms <= 0:
            raise ValueError("a lock needs a positive TTL, or a crashed holder keeps it forever")
        with _translate("SET NX"):
            taken = await self._client.set(
                lock_key(self.prefix, customer_id, resource_id), token, nx=True, px=ttl_ms
            )
        return bool(taken)

    async def unlock(self, customer_id: str, resource_id: str | None, token: str) -> None:
        """Release the lock if ``token`` still holds it; otherwise do nothing."""
        key = lock_key(self.prefix, customer_id, resource_id)
        await self._run_one(_Call(UNLOCK_SCRIPT, [key], [token]))

    async def publish_refetch(
        self, customer_id: str, resource_id: str | None, payload: str
    ) -> None:
        with _translate("PUBLISH"):
            await self._client.publish(
                refetch_channel(self.prefix, customer_id, resource_id), payload
            )

    async def ping(self) -> bool:
        """True when Redis answers; raises CacheUnavailable when it does not."""
        with _translate("PING"):
            return bool(await self._client.ping())

    # ------------------------------------------------------------------ script calls

    def _segment(self, write: HashWrite) -> list[str | bytes | int]:
        """One write's part of a WRITE call's arguments (see redis_scripts.WRITE)."""
        payload = ""
        if self._channel:
            payload = Invalidation(
                write.customer_id, write.resource_id, write.version, write.committed_at_ms
            ).encode()
        if write.delete:
            return ["d", payload, version_text(write.version)]
        return ["a", payload, len(write.records) // 3, *write.records]

    def _plan(self, writes: Sequence[HashWrite]) -> list[_Call]:
        """Pack the writes into WRITE calls, in order, each within the size bounds.

        On a cluster the writes are first grouped by hash slot (a call's keys must share one),
        which keeps every key's writes in their original order.
        """
        groups: list[list[int]]
        keys = [state_key(self.prefix, w.customer_id, w.resource_id) for w in writes]
        if isinstance(self._client, RedisCluster):
            by_slot: dict[int, list[int]] = {}
            for index, key in enumerate(keys):
                by_slot.setdefault(key_slot(key.encode()), []).append(index)
            groups = list(by_slot.values())
        else:
            groups = [list(range(len(writes)))]
        calls: list[_Call] = []
        for group in groups:
            call: _Call | None = None
            for index in group:
                segment = self._segment(writes[index])
                if (
                    call is None
                    or len(call.writes) >= WRITES_PER_CALL
                    or len(call.args) + len(segment) > ARGS_PER_CALL
                ):
                    call = _Call(WRITE_SCRIPT, [], [self.ttl_ms, self._channel])
                    calls.append(call)
                call.keys.append(keys[index])
                call.args += segment
                call.writes.append(index)
        return calls

    async def _run_one(self, call: _Call) -> Any:
        script, keys, args = call.script, call.keys, call.args
        with _translate(script.name):
            try:
                return await self._client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                # EVAL runs the script and puts it back into this server's script cache.
                return await self._client.eval(script.source, len(keys), *keys, *args)

    async def _run_many(self, calls: Sequence[_Call]) -> list[Any]:
        """The calls' replies in order, a CacheRejected for a call Redis refused for good;
        raises CacheUnavailable when Redis failed."""
        if not calls:
            return []
        results = await self._pipeline(calls, by_sha=True)
        first = next((i for i, r in enumerate(results) if isinstance(r, NoScriptError)), None)
        if first is not None:
            # Re-run everything from the first NOSCRIPT on, in order, with EVAL. Redoing calls
            # that already ran is harmless (a versioned write repeats as stale), and redoing the
            # whole tail keeps every key's writes in order.
            again = await self._pipeline(calls[first:], by_sha=False)
            for offset, result in enumerate(again):
                # A call that succeeded the first time keeps that result: it reports what the
                # call actually changed, the rerun would only report a stale repeat.
                if isinstance(results[first + offset], Exception):
                    results[first + offset] = result
        for index, (call, result) in enumerate(zip(calls, results, strict=True)):
            if isinstance(result, Exception):
                failure = _failure(call, result)
                if not isinstance(failure, CacheRejected):
                    raise failure
                results[index] = failure
        return results

    async def _pipeline(self, calls: Sequence[_Call], *, by_sha: bool) -> list[Any]:
        with _translate("pipeline"):
            async with self._client.pipeline(transaction=False) as pipe:
                for call in calls:
                    # execute_command rather than pipe.evalsha(): redis-py's cluster pipeline
                    # refuses the EVALSHA method outright because a script may touch keys in
                    # several slots. Ours touch keys of one slot, which the pipeline routes by.
                    head = call.script.sha if by_sha else call.script.source
                    command = "EVALSHA" if by_sha else "EVAL"
                    pipe.execute_command(command, head, len(call.keys), *call.keys, *call.args)
                return list(await pipe.execute(raise_on_error=False))


@contextmanager
def _translate(operation: str) -> Iterator[None]:
    try:
        yield
    except CacheUnavailable:
        raise
    except _REDIS_FAILURES as exc:
        message = f"redis {operation}: {type(exc).__name__}: {exc}"
        if _final(exc):
            raise CacheRejected(message) from exc
        raise CacheUnavailable(message) from exc


def _failure(call: _Call, error: object, key: str | None = None) -> CacheUnavailable:
    """The error a call (or one write in it) answered with, as the store reports it."""
    detail = _text(error) if isinstance(error, bytes) else str(error)
    message = f"redis {call.script.name} on {key or call.keys[0]}: {detail}"
    # Only errors that name the data itself are final. Everything else (OOM, BUSY, LOADING,
    # READONLY, CLUSTERDOWN, ACL, "max clients"...) may pass, and parking entries because of
    # it would throw away good events, so it stays an outage.
    return CacheRejected(message) if _final(error) else CacheUnavailable(message)


def _final(error: object) -> bool:
    if isinstance(error, bytes):
        error = _text(error)
    if isinstance(error, str | ResponseError):
        return str(error).startswith(_FINAL_ERRORS)
    return False


def _write_outcome(call: _Call, offset: int, reply: Any) -> ApplyResult | CacheRejected:
    """What the WRITE call's ``offset``-th write did; raises when Redis failed outright."""
    if isinstance(reply, CacheRejected):
        return reply
    applied, stale, problem = reply[offset * 3 : offset * 3 + 3]
    if problem:
        failure = _failure(call, problem, call.keys[offset])
        if not isinstance(failure, CacheRejected):
            raise failure
        return failure
    return ApplyResult(applied=int(applied), stale=int(stale))


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode_hash(
    raw: Mapping[Any, Any], customer_id: str, resource_id: str | None
) -> CustomerSnapshot | None:
    fields: dict[str, Any] = {_text(name): value for name, value in raw.items()}
    state_raw = fields.get(STATE_FIELD)
    if state_raw is None:
        # Usage records can arrive before any state; without a state there is nothing to serve.
        return None
    state = decode_state(state_raw)
    if (state.customer_id, state.resource_id or None) != (customer_id, resource_id or None):
        raise StateDecodeError("$", "state belongs to another customer or resource")
    feature_usage: dict[str, UsageRecord] = {}
    credit_usage: dict[str, UsageRecord] = {}
    for name, value in fields.items():
        # A value counts once its version is there (a write stores both at once).
        if version_field(name) not in fields:
            continue
        if name.startswith(FEATURE_USAGE_PREFIX):
            feature_usage[name[len(FEATURE_USAGE_PREFIX) :]] = decode_usage(value)
        elif name.startswith(CREDIT_USAGE_PREFIX):
            credit_usage[name[len(CREDIT_USAGE_PREFIX) :]] = decode_usage(value)
    return CustomerSnapshot(state, feature_usage, credit_usage)
