"""Moves committed outbox rows to the publishers, then marks them published.

At-least-once: a crash after publishing but before marking re-publishes the
batch on restart; every event carries a per-record version, so consumers treat
the repeat as a no-op. For the same reason marking is not made durable (no fsync
of its own): power loss can only undo it, which is the crash case again; and a
batch is marked with the next read of the outbox, in the same transaction.

Every database access goes through the store's writer thread (``Store.run``);
publishing happens on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Protocol

import structlog

from entitlements.tasks import cancel_and_wait
from upstream.store.sqlite import Store

log = structlog.get_logger("upstream.relay")


class Publisher(Protocol):
    async def publish(self, batch: Sequence[tuple[int, str]]) -> None: ...


class Relay:
    def __init__(
        self, store: Store, publishers: Sequence[Publisher], batch_size: int = 500
    ) -> None:
        self._store = store
        self._publishers = list(publishers)
        self._batch_size = batch_size
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The loop the relay runs on, and its thread: commits happen on the writer thread.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        # Published, not marked yet (see _publish).
        self._unmarked: list[int] = []
        self.published = 0

    def notify(self) -> None:
        """Called after a commit that wrote outbox rows, on whichever thread committed."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            self._wakeup.set()
            return
        # asyncio.Event is not thread-safe: set it from the loop. A loop already closed has
        # no relay left to wake; what was committed goes out on the next start.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wakeup.set)

    async def drain(self) -> int:
        """Publish everything pending now, and mark it; returns how many events went out."""
        return await self._publish(mark_last=True)

    async def _publish(self, *, mark_last: bool) -> int:
        """Publish what is unpublished, batch by batch, marking each batch with the next read.

        Without ``mark_last`` the last batch stays unmarked until the next call (the next
        wake-up): one trip to the writer thread per wake-up, not two. A batch published but not
        yet marked is published again after a crash, as any unmarked one.
        """
        total = 0
        batch = await self._store.run(self._mark_and_read, self._unmarked)
        # Cleared once marked: if this task was cancelled before, the next call marks them.
        self._unmarked = []
        while batch:
            for publisher in self._publishers:
                await publisher.publish(batch)
            self._unmarked = [seq for seq, _ in batch]
            total += len(batch)
            self.published += len(batch)
            if not mark_last and len(batch) < self._batch_size:
                # Whatever committed after this read has woken the relay: marking can wait.
                break
            batch = await self._store.run(self._mark_and_read, self._unmarked)
            self._unmarked = []
        return total

    def _mark_and_read(self, published: Sequence[int]) -> list[tuple[int, str]]:
        """Mark what was published (if anything) and read the next batch, in one transaction."""
        if not published:
            with self._store.read() as tx:
                return tx.unpublished(self._batch_size)
        with self._store.transaction(durable=False) as tx:
            tx.mark_published(published)
            return tx.unpublished(self._batch_size)

    async def run(self, poll_interval: float = 1.0) -> None:
        backoff = 0.1
        while True:
            self._wakeup.clear()
            try:
                await self._publish(mark_last=False)
                backoff = 0.1
            except Exception as exc:  # a publisher is down: keep the rows, retry later
                log.warning("relay_publish_failed", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), poll_interval)

    def start(self, poll_interval: float = 1.0) -> None:
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.get_ident()
            self._task = self._loop.create_task(self.run(poll_interval))

    async def stop(self) -> None:
        if self._task is not None:
            # Publishers may be blocked in redis-py, which can swallow a single cancel on 3.11.
            await cancel_and_wait(self._task)
            self._task = None
