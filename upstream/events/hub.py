"""In-process fan-out of change events to push-channel subscribers (SSE)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Subscription:
    """One subscriber's queue; overflowing it disconnects the subscriber.

    A slow consumer must not hold events in upstream's memory without bound,
    and dropping some events silently would leave its cache wrong; cutting it
    off makes it reconnect and resynchronize, which is always correct.
    """

    def __init__(self, capacity: int) -> None:
        self.queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue(capacity)
        self.overflowed = False

    def offer(self, seq: int, payload: str) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((seq, payload))
        except asyncio.QueueFull:
            self.end()

    def end(self) -> None:
        """Discard what is queued and post the end-of-stream marker."""
        self.overflowed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Hub:
    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._subscribers: set[Subscription] = set()

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, seq: int, payload: str) -> None:
        for subscriber in list(self._subscribers):
            subscriber.offer(seq, payload)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        subscription = Subscription(self._capacity)
        self._subscribers.add(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.discard(subscription)

    def close(self) -> None:
        """End every subscriber's stream (shutdown)."""
        for subscriber in list(self._subscribers):
            subscriber.end()
