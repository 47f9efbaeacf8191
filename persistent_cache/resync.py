"""Rebuild the cache from upstream while the stream keeps being consumed.

1. note how far the stream has come (entries ever added),
2. page through ``GET /v1/snapshot`` and write every state (one pipeline per page),
3. page ``GET /v1/changes?after=<first page's seq>`` up to ``head`` and write those events
   (later snapshot pages may hold newer states than that seq: versioned writes make that fine),
4. check the cache still holds the first state written (a flush during the resync would lose the
   earlier writes silently), then set a fresh epoch.

Every write compares versions, so interleaving with the consumer is safe in any order: the newer
record wins whoever writes it last. For the same reason several replicas resyncing at once (they
all notice a flushed cache) only cost upstream and Redis some duplicate work, never correctness;
each process runs at most one resync at a time and callers arriving meanwhile join it.

Stream entries up to the position noted in step 1 were committed before the snapshot was taken,
so the snapshot covers them: ``covered_through`` tells gap detection which trimmed entries no
longer need another resync.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from entitlements.errors import CacheRejected, CacheUnavailable, WritesRejected
from entitlements.model.events import ChangeEvent, decode_event_dict
from entitlements.model.state import CustomerSnapshot, StateDecodeError, decode_snapshot_dict
from entitlements.redis.hash_writes import HashWrite, event_write, snapshot_write
from entitlements.tasks import cancel_and_wait
from persistent_cache.cache import CacheStore
from persistent_cache.errors import PersistentCacheError
from persistent_cache.metrics import Metrics
from persistent_cache.upstream_feed import UpstreamFeed

log = structlog.get_logger("persistent_cache.resync")

PAGE_SIZE = 1000
# States per snapshot page, written in one pipeline (the store packs them into calls of 64).
SNAPSHOT_PAGE = 1000
ATTEMPTS = 3


class CacheLostDuringResync(PersistentCacheError):
    """The cache lost data while the resync was writing it; the resync starts over."""


@dataclass(frozen=True, slots=True)
class ResyncResult:
    trigger: str
    states: int
    events: int
    skipped: int
    epoch: str
    seconds: float


def _event_writes(events: Sequence[ChangeEvent]) -> tuple[list[HashWrite], int]:
    """The writes of decoded events, and how many could not be written (a version out of
    range, an inconsistent event); those are logged and skipped like undecodable ones."""
    writes: list[HashWrite] = []
    for event in events:
        try:
            writes.append(event_write(event))
        except (ValueError, TypeError) as exc:
            log.warning("resync_event_invalid", seq=event.seq, error=str(exc))
    return writes, len(events) - len(writes)


def _decode_states(raw: Sequence[Any], offset: int) -> tuple[list[CustomerSnapshot], int]:
    good: list[CustomerSnapshot] = []
    skipped = 0
    for index, item in enumerate(raw, offset):
        try:
            good.append(decode_snapshot_dict(item, f"$.states[{index}]"))
        except StateDecodeError as exc:
            # One bad state must not keep every other customer out of the cache.
            skipped += 1
            log.error("resync_state_invalid", error=str(exc))
    return good, skipped


def _decode_events(raw: Sequence[Any]) -> tuple[list[ChangeEvent], int]:
    good: list[ChangeEvent] = []
    skipped = 0
    for index, item in enumerate(raw):
        try:
            good.append(decode_event_dict(item, f"$.events[{index}]"))
        except StateDecodeError as exc:
            skipped += 1
            log.error("resync_event_invalid", error=str(exc))
    return good, skipped


class Resyncer:
    def __init__(
        self,
        store: CacheStore,
        feed: UpstreamFeed,
        metrics: Metrics,
        *,
        stream_position: Callable[[], Awaitable[int | None]] | None = None,
    ) -> None:
        self._store = store
        self._feed = feed
        self._metrics = metrics
        self._stream_position = stream_position
        self._task: asyncio.Task[ResyncResult] | None = None
        self.covered_through = 0
        self.completed = 0

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def run(self, trigger: str) -> ResyncResult:
        """Resync now, or join the resync already running in this process."""
        if self._task is None or self._task.done():
            task = asyncio.get_running_loop().create_task(self._attempts(trigger))
            # Callers may go away (an HTTP client hanging up); the resync still completes and
            # its failure must not be reported as "never retrieved".
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._task = task
        return await asyncio.shield(self._task)

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _attempts(self, trigger: str) -> ResyncResult:
        started = time.perf_counter()
        for attempt in range(1, ATTEMPTS + 1):
            try:
                result = await self._resync(trigger, started)
            except CacheLostDuringResync:
                log.warning("resync_restarted", trigger=trigger, attempt=attempt)
                continue
            except (PersistentCacheError, CacheUnavailable) as exc:
                self._metrics.resyncs.labels(trigger, "failed").inc()
                log.warning("resync_failed", trigger=trigger, error=str(exc))
                raise
            self._metrics.resyncs.labels(trigger, "succeeded").inc()
            self._metrics.resync_seconds.observe(result.seconds)
            self.completed += 1
            log.info(
                "resync_done",
                trigger=trigger,
                states=result.states,
                events=result.events,
                skipped=result.skipped,
                seconds=round(result.seconds, 3),
            )
            return result
        self._metrics.resyncs.labels(trigger, "failed").inc()
        raise CacheLostDuringResync(f"the cache kept losing data during {ATTEMPTS} attempts")

    async def _position(self) -> int | None:
        if self._stream_position is None:
            return None
        try:
            return await self._stream_position()
        except PersistentCacheError:
            # Without a position the resync still heals the cache; it just covers no gap.
            return None

    async def _resync(self, trigger: str, started: float) -> ResyncResult:
        log.info("resync_started", trigger=trigger)
        position = await self._position()
        canary: CustomerSnapshot | None = None
        states = skipped = 0
        first_seq: int | None = None
        after: str | None = None
        while True:
            page = await self._feed.snapshot_page(after, SNAPSHOT_PAGE)
            first_seq = page.seq if first_seq is None else first_seq
            chunk, bad = _decode_states(page.states, states + skipped)
            refused = await self._write([snapshot_write(snapshot) for snapshot in chunk])
            skipped += bad + refused
            states += len(chunk) - refused
            canary = canary or (chunk[0] if chunk else None)
            if page.next is None:
                break
            after = page.next
        events, bad = await self._catch_up(first_seq)
        skipped += bad
        if (
            canary is not None
            and await self._store.get(canary.state.customer_id, canary.state.resource_id) is None
        ):
            raise CacheLostDuringResync("the first state written is gone")
        epoch = uuid.uuid4().hex
        await self._store.set_epoch(epoch)
        if position is not None:
            # Assigned, not maxed: a recreated stream counts from zero again.
            self.covered_through = position
        return ResyncResult(trigger, states, events, skipped, epoch, time.perf_counter() - started)

    async def _write(self, writes: Sequence[HashWrite]) -> int:
        """Write; returns how many writes Redis refused for good (a key of the wrong type).

        A refused key must not keep every other customer out of the cache: it is logged and
        counted as skipped, and the epoch still goes up.
        """
        try:
            await self._store.apply_writes(writes)
        except WritesRejected as exc:
            refused = [o for o in exc.outcomes if isinstance(o, CacheRejected)]
            for problem in refused:
                log.warning("resync_state_refused", error=str(problem))
            return len(refused)
        return 0

    async def _catch_up(self, cursor: int) -> tuple[int, int]:
        """Apply the feed from ``cursor`` to its head; returns (events written, skipped)."""
        written = skipped = 0
        while True:
            page = await self._feed.changes(cursor, PAGE_SIZE)
            events, bad = _decode_events(page.events)
            writes, unfit = _event_writes(events)
            refused = await self._write(writes) if writes else 0
            skipped += bad + unfit + refused
            written += len(writes) - refused
            if not page.events or page.next >= page.head:
                return written, skipped
            cursor = page.next
