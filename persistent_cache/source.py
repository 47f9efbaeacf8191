"""Where change events come from: a Protocol, and upstream's Redis Stream read by a consumer group.

Every replica joins one consumer group, so each stream entry is delivered to one replica. An
entry stays pending (in the group's PEL) until acked; the consumer acks only after the write to
the cache succeeded. Entries pending on a consumer that died are claimed by a live one after
``claim_idle_ms`` (XAUTOCLAIM); a restarted consumer with the same name re-reads its own pending
entries first.

Trimming: upstream caps the stream (XADD MAXLEN ~1M). Entries trimmed before the group read them
are lost to the stream; :meth:`RedisStreamSource.status` exposes the counters that reveal it
(``trimmed`` beyond ``entries_read``), and the service answers with a full resync.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import structlog
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from entitlements.redis.stream_entry import ENVELOPE_FIELD, LEGACY_EVENT_FIELD
from persistent_cache.errors import StreamUnavailable
from persistent_cache.redis_clients import RedisClient

log = structlog.get_logger("persistent_cache.source")

T = TypeVar("T")

DEAD_LETTER_MAXLEN = 100_000

# Redis failures as redis-py raises them: RedisClusterException is no RedisError, and socket errors
# or timeouts can escape redis-py's own wrapping.
_FAILURES = (RedisError, RedisClusterException, OSError)


class Delivery(NamedTuple):
    """One stream entry handed to this consumer."""

    id: str
    # None: the entry was trimmed or deleted while pending; only its id is left.
    fields: Mapping[str, bytes] | None


class Claimed(NamedTuple):
    deliveries: list[Delivery]
    # More stale entries may be waiting: claim again before reading new ones.
    more: bool


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """The group's position in the stream (XINFO STREAM + XINFO GROUPS)."""

    length: int
    entries_added: int
    # Entries delivered to the group so far; None when Redis cannot tell (before 7.0, XDEL).
    entries_read: int | None
    lag: int | None
    pending: int

    @property
    def trimmed(self) -> int:
        """How many entries were removed from the head of the stream, ever."""
        return max(self.entries_added - self.length, 0)

    @property
    def unread_trimmed(self) -> bool:
        """Entries were trimmed before the group read them: the stream alone cannot catch up."""
        return self.entries_read is not None and self.trimmed > self.entries_read


class EventSource(Protocol):
    async def prepare(self) -> None:
        """Create what consuming needs (the group); idempotent."""
        ...

    async def read(self) -> list[Delivery]:
        """New entries, waiting a bounded time for some."""
        ...

    async def read_own_pending(self, after: str = "0") -> list[Delivery]:
        """Entries delivered to this consumer name and not acked yet, with ids above ``after``."""
        ...

    async def claim(self) -> Claimed:
        """Entries pending too long on other consumers, now owned by this one."""
        ...

    async def ack(self, ids: Sequence[str]) -> None: ...

    async def dead_letter(self, letters: Sequence[tuple[Delivery, str]]) -> None:
        """Park undecodable entries with the reason; the caller acks them afterwards."""
        ...

    async def status(self) -> GroupStatus: ...

    async def prune_consumers(self, idle_ms: int) -> int:
        """Forget consumers of dead processes; returns how many."""
        ...

    def take_group_lost(self) -> bool:
        """True once after the group vanished (stream deleted, Redis restarted or flushed)."""
        ...


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _deliveries(entries: Sequence[Any]) -> list[Delivery]:
    out = []
    for entry_id, fields in entries:
        if entry_id is None:
            continue
        normalized: dict[str, bytes] | None = None
        if fields:
            try:
                # What our clients return (no decode_responses): bytes names and values.
                normalized = {name.decode(): value for name, value in fields.items()}
            except (AttributeError, UnicodeDecodeError):
                normalized = {_text(k): _raw(v) for k, v in fields.items()}
        out.append(Delivery(_text(entry_id), normalized))
    return out


def _read_reply_entries(reply: Any) -> list[Any]:
    """XREADGROUP's entries of our one stream, from redis-py's RESP2 or RESP3 reply shape."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        # RESP3: {stream: [entries]}.
        (value,) = reply.values()
        return list(value[0]) if value and isinstance(value[0], list) else list(value)
    # RESP2: [[stream, entries]].
    return list(reply[0][1])


def _dead_letter_fields(delivery: Delivery, reason: str) -> dict[str, bytes | str]:
    fields = dict(delivery.fields or {})
    parked: dict[str, bytes | str] = {"reason": reason, "source_id": delivery.id}
    if ENVELOPE_FIELD in fields and not parked.keys() & fields.keys():
        # Kept field for field, so replaying a fixed entry is an XADD of the same fields.
        return {**fields, **parked}
    event = fields.get(LEGACY_EVENT_FIELD)
    if event is None:
        # Keep everything that arrived: the entry had no ``event`` field to park.
        event = json.dumps({k: _text(v) for k, v in fields.items()}).encode()
    return {LEGACY_EVENT_FIELD: event, **parked}


class RedisStreamSource:
    def __init__(
        self,
        client: RedisClient,
        *,
        stream: str,
        dead_letter_stream: str,
        group: str,
        consumer: str,
        batch_size: int,
        block_ms: int,
        claim_idle_ms: int,
    ) -> None:
        self._client = client
        self.stream = stream
        self.dead_letter_stream = dead_letter_stream
        self.group = group
        self.consumer = consumer
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._claim_cursor = "0-0"
        self._group_lost = False

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except _FAILURES as exc:
            raise StreamUnavailable(f"{self.stream}: {exc}") from exc

    async def prepare(self) -> None:
        """Create the group at the start of the stream (and the stream itself) unless it exists."""
        try:
            # ENTRIESREAD 0 makes Redis count deliveries from the first entry on, which is what
            # reveals entries trimmed before the group saw them (GroupStatus.unread_trimmed).
            await self._client.xgroup_create(
                self.stream, self.group, id="0", mkstream=True, entries_read=0
            )
        except ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return
            raise StreamUnavailable(f"{self.stream}: {exc}") from exc
        except _FAILURES as exc:
            raise StreamUnavailable(f"{self.stream}: {exc}") from exc
        log.info("consumer_group_created", stream=self.stream, group=self.group)

    async def _group_call(self, call: Awaitable[T], empty: T) -> T:
        """Run a group command; recreate the group if it vanished (a flushed or restarted Redis)."""
        try:
            return await call
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise StreamUnavailable(f"{self.stream}: {exc}") from exc
        except _FAILURES as exc:
            raise StreamUnavailable(f"{self.stream}: {exc}") from exc
        log.warning("consumer_group_lost", stream=self.stream, group=self.group)
        self._group_lost = True
        self._claim_cursor = "0-0"
        await self.prepare()
        return empty

    async def read(self) -> list[Delivery]:
        reply = await self._group_call(
            self._client.xreadgroup(
                self.group,
                self.consumer,
                {self.stream: ">"},
                count=self._batch_size,
                block=self._block_ms,
            ),
            None,
        )
        return _deliveries(_read_reply_entries(reply))

    async def read_own_pending(self, after: str = "0") -> list[Delivery]:
        reply = await self._group_call(
            self._client.xreadgroup(
                self.group, self.consumer, {self.stream: after}, count=self._batch_size
            ),
            None,
        )
        return _deliveries(_read_reply_entries(reply))

    async def claim(self) -> Claimed:
        reply = await self._group_call(
            self._client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self._claim_idle_ms,
                start_id=self._claim_cursor,
                count=self._batch_size,
            ),
            ["0-0", [], []],
        )
        cursor = _text(reply[0])
        deliveries = _deliveries(reply[1])
        # Redis 7 lists pending ids whose entries were trimmed separately (and drops them).
        deleted = [Delivery(_text(i), None) for i in (reply[2] if len(reply) > 2 else [])]
        self._claim_cursor = cursor
        return Claimed(deliveries + deleted, more=cursor != "0-0")

    async def ack(self, ids: Sequence[str]) -> None:
        if ids:
            await self._guard(self._client.xack(self.stream, self.group, *ids))

    async def dead_letter(self, letters: Sequence[tuple[Delivery, str]]) -> None:
        if not letters:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for delivery, reason in letters:
                pipe.xadd(
                    self.dead_letter_stream,
                    _dead_letter_fields(delivery, reason),  # type: ignore[arg-type]
                    maxlen=DEAD_LETTER_MAXLEN,
                    approximate=True,
                )
            await self._guard(pipe.execute())

    async def status(self) -> GroupStatus:
        try:
            stream = await self._client.xinfo_stream(self.stream)
            groups = await self._client.xinfo_groups(self.stream)
        except ResponseError as exc:
            if "no such key" not in str(exc).lower():
                raise StreamUnavailable(f"{self.stream}: {exc}") from exc
            return GroupStatus(length=0, entries_added=0, entries_read=0, lag=0, pending=0)
        except _FAILURES as exc:
            raise StreamUnavailable(f"{self.stream}: {exc}") from exc
        mine = next((g for g in groups if _text(g["name"]) == self.group), None)
        length = int(stream["length"])
        if mine is None:
            added = int(stream.get("entries-added", length))
            return GroupStatus(length, added, entries_read=None, lag=None, pending=0)
        entries_read = mine.get("entries-read")
        lag = mine.get("lag")
        return GroupStatus(
            length=length,
            # Before Redis 7.0 the counters are missing: trimming cannot be detected then.
            entries_added=int(stream.get("entries-added", length)),
            entries_read=None if entries_read is None else int(entries_read),
            lag=None if lag is None else int(lag),
            pending=int(mine["pending"]),
        )

    async def prune_consumers(self, idle_ms: int) -> int:
        """Forget consumers of dead processes: idle that long and owning no pending entry."""
        consumers = await self._guard(self._client.xinfo_consumers(self.stream, self.group))
        removed = 0
        for consumer in consumers:
            name = _text(consumer["name"])
            if name == self.consumer or int(consumer["pending"]) or int(consumer["idle"]) < idle_ms:
                continue
            await self._guard(self._client.xgroup_delconsumer(self.stream, self.group, name))
            removed += 1
        return removed

    def take_group_lost(self) -> bool:
        lost, self._group_lost = self._group_lost, False
        return lost
