"""Moves committed outbox rows to the publishers, then marks them published.

At-least-once: a crash after publishing but before marking re-publishes the
batch on restart; every event carries a per-record version, so consumers treat
the repeat as a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self.published = 0

    def notify(self) -> None:
        """Called after a commit that wrote outbox rows."""
        self._wakeup.set()

    async def drain(self) -> int:
        """Publish everything pending now; returns how many events went out."""
        total = 0
        while True:
            with self._store.transaction() as tx:
                batch = tx.unpublished(self._batch_size)
            if not batch:
                return total
            for publisher in self._publishers:
                await publisher.publish(batch)
            with self._store.transaction() as tx:
                tx.mark_published([seq for seq, _ in batch])
            total += len(batch)
            self.published += len(batch)

    async def run(self, poll_interval: float = 1.0) -> None:
        backoff = 0.1
        while True:
            self._wakeup.clear()
            try:
                await self.drain()
                backoff = 0.1
            except Exception as exc:  # a publisher is down: keep the rows, retry later
                log.warning("relay_publish_failed", error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), poll_interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            # Publishers may be blocked in redis-py, which can swallow a single cancel on 3.11.
            await cancel_and_wait(self._task)
            self._task = None
