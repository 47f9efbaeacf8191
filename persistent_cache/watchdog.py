"""Decides when the cache needs a full resync, every ``EPOCH_CHECK_SECONDS`` and on request.

Triggers (the label of ``persistent_cache_resyncs_total``):
- ``startup``: the first check found no epoch (a new environment, or a cache that was lost while
  no replica ran);
- ``epoch_missing``: the epoch key vanished later (Redis restarted without persistence, FLUSHALL,
  eviction): the cache no longer holds a complete copy;
- ``group_lost``: the consumer group vanished (the stream's Redis restarted or was flushed):
  entries published before it came back were never read;
- ``gap``: entries were trimmed from the stream before the group read them;
- ``pending_trimmed``: entries delivered but not yet written were trimmed (a consumer far behind).
A failed resync keeps its reasons for the next check.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from entitlements.errors import CacheUnavailable
from persistent_cache.cache import CacheStore
from persistent_cache.errors import PersistentCacheError, StreamUnavailable
from persistent_cache.resync import Resyncer
from persistent_cache.source import EventSource

log = structlog.get_logger("persistent_cache.watchdog")

# When several reasons hold at once the resync is counted under the first of these.
PRIORITY = ("startup", "epoch_missing", "group_lost", "gap", "pending_trimmed")


class Watchdog:
    def __init__(
        self, store: CacheStore, source: EventSource, resyncer: Resyncer, *, interval: float
    ) -> None:
        self._store = store
        self._source = source
        self._resyncer = resyncer
        self._interval = interval
        self._requested: set[str] = set()
        self._wake = asyncio.Event()
        self._first = True

    def request(self, reason: str) -> None:
        """Ask for a resync at the next check, which happens now."""
        self._requested.add(reason)
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            await self.check()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # arrives as the event fires, and the task would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wake.wait()

    async def check(self) -> str | None:
        """One round of checks; returns the trigger of the resync it ran, if any."""
        reasons = self._requested
        self._requested = set()
        try:
            if await self._store.get_epoch() is None:
                reasons.add("startup" if self._first else "epoch_missing")
        except CacheUnavailable as exc:
            # Nothing can be rebuilt into a Redis that does not answer; the consumer backs off too.
            log.warning("epoch_check_failed", error=str(exc))
            self._requested |= reasons
            return None
        self._first = False
        if self._source.take_group_lost():
            reasons.add("group_lost")
        reasons |= await self._gap()
        if not reasons:
            return None
        trigger = min(reasons, key=PRIORITY.index)
        try:
            await self._resyncer.run(trigger)
        except (PersistentCacheError, CacheUnavailable):
            self._requested |= reasons
            return None
        return trigger

    async def _gap(self) -> set[str]:
        try:
            status = await self._source.status()
        except StreamUnavailable as exc:
            log.warning("gap_check_failed", error=str(exc))
            return set()
        # Entries beyond what the last resync covered were trimmed before anyone read them.
        if status.unread_trimmed and status.trimmed > self._resyncer.covered_through:
            log.warning(
                "stream_gap",
                trimmed=status.trimmed,
                entries_read=status.entries_read,
                covered_through=self._resyncer.covered_through,
            )
            return {"gap"}
        return set()
