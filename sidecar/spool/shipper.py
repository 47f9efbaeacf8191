"""Ships spooled events upstream: oldest first, in batches, deleting only what was acknowledged.

Order: one batch at a time, always the oldest events, so each customer's events reach upstream
in the order they were acknowledged. A batch that failed is sent again as it was (with the same
idempotency keys), so a reply lost after upstream committed it costs a duplicate that upstream
drops, never a second count. A SIGKILL between upstream's acknowledgement and the delete does
the same on the next start.

Failures: a transient one (upstream down, a timeout, a refused API key that will be fixed) keeps
the events and waits with exponential backoff and full jitter, or until :meth:`nudge` says
upstream is back. A rejection (4xx) is upstream saying "never": the batch is split in halves
until the events it refuses are alone; those are logged with their keys, counted and dropped,
so one bad event cannot hold up the rest forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import structlog

from entitlements.errors import InvalidApiKey, SourceError, SourceRejected, SpoolUnavailable
from entitlements.tasks import cancel_and_wait
from sidecar.model.usage import RawEvent
from sidecar.observability import Metrics
from sidecar.spool.store import EventSpool, Spooled

log = structlog.get_logger("sidecar.spool")

#: Upstream's (and Stigg's) limit of events per request.
MAX_SHIP_BATCH = 1000

Send = Callable[[Sequence[RawEvent]], Awaitable[None]]


class Shipper:
    def __init__(
        self,
        spool: EventSpool,
        send: Send,
        metrics: Metrics,
        *,
        batch_size: int = MAX_SHIP_BATCH,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_SHIP_BATCH:
            raise ValueError(f"batch_size must be in 1..{MAX_SHIP_BATCH}, got {batch_size}")
        self._spool = spool
        self._send = send
        self._metrics = metrics
        self._batch_size = batch_size
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._random = rng or random.Random()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Since when shipping has been failing (None: it is not).
        self._backing_up_since: float | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def nudge(self) -> None:
        """Upstream looks reachable again: end a backoff pause now."""
        self._wake.set()

    async def aclose(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        failures = 0
        while True:
            await self._spool.not_empty.wait()
            try:
                batch = await self._spool.peek(self._batch_size)
                if not batch:
                    continue
                await self._ship(batch)
            except (SourceError, SpoolUnavailable) as exc:
                failures += 1
                self._metrics.spool_ship_retries.inc()
                self._note_backing_up(exc)
                await self._pause(failures)
                continue
            failures = 0
            if self._spool.events == 0 and self._backing_up_since is not None:
                log.info(
                    "spool_drained",
                    backed_up_seconds=round(time.monotonic() - self._backing_up_since, 3),
                )
                self._backing_up_since = None

    async def _ship(self, batch: Sequence[Spooled]) -> None:
        """Send ``batch`` and delete it; split a rejected one to find the events refused."""
        events = [s.event for s in batch if s.event is not None]
        if len(events) == len(batch):
            started = time.perf_counter()
            try:
                await self._send(events)
            except InvalidApiKey:
                raise  # our key, not these events: keep them until the key is fixed
            except SourceRejected as exc:
                if len(batch) > 1:
                    middle = len(batch) // 2
                    await self._ship(batch[:middle])
                    await self._ship(batch[middle:])
                    return
                self._reject(batch[0], str(exc))
            else:
                self._metrics.spool_ship_latency.observe(time.perf_counter() - started)
                self._metrics.spool_shipped.inc(len(batch))
            await self._spool.delete(batch)
            return
        # Rows that no longer decode (a spool written by a newer version, say) are dropped
        # alone, so the ones around them still go out in order.
        start = 0
        for i, spooled in enumerate(batch):
            if spooled.event is None:
                if start < i:
                    await self._ship(batch[start:i])
                self._reject(spooled, "cannot be decoded")
                await self._spool.delete([spooled])
                start = i + 1
        if start < len(batch):
            await self._ship(batch[start:])

    def _reject(self, spooled: Spooled, reason: str) -> None:
        event = spooled.event
        self._metrics.spool_rejected.inc()
        log.warning(
            "spool_event_rejected",
            reason=reason,
            customer_id=event.customer_id if event else None,
            event_name=event.event_name if event else None,
            idempotency_key=event.idempotency_key if event else None,
        )

    def _note_backing_up(self, exc: Exception) -> None:
        if self._backing_up_since is None:
            self._backing_up_since = time.monotonic()
            log.warning(
                "spool_backing_up",
                error=str(exc),
                events=self._spool.events,
                bytes=self._spool.bytes,
            )

    async def _pause(self, failures: int) -> None:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(failures, 32))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._random.uniform(0, ceiling)):
                await self._wake.wait()
