"""Ships a spool queue upstream (raw events, or buffered usage reports, each queue with its own
shipper and endpoint): oldest first, in batches, deleting only what was acknowledged.

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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from prometheus_client import Counter, Histogram

from entitlements.errors import InvalidApiKey, SourceError, SourceRejected, SpoolUnavailable
from entitlements.tasks import cancel_and_wait
from sidecar.model.usage import RawEvent, UsageReport
from sidecar.observability import Metrics
from sidecar.spool.store import Queue, Spooled

log = structlog.get_logger("sidecar.spool")

#: Upstream's (and Stigg's) limit of events per request.
MAX_SHIP_BATCH = 1000

_Item = TypeVar("_Item")


@dataclass(frozen=True, slots=True)
class ShipperMetrics:
    shipped: Counter
    retries: Counter
    rejected: Counter
    latency: Histogram


def event_fields(event: RawEvent) -> Mapping[str, Any]:
    return {
        "customer_id": event.customer_id,
        "event_name": event.event_name,
        "idempotency_key": event.idempotency_key,
    }


def usage_fields(report: UsageReport) -> Mapping[str, Any]:
    return {
        "customer_id": report.customer_id,
        "feature_id": report.feature_id,
        "idempotency_key": report.idempotency_key,
    }


class Shipper(Generic[_Item]):
    def __init__(
        self,
        spool: Queue[_Item],
        send: Callable[[Sequence[_Item]], Awaitable[object]],
        metrics: Metrics | ShipperMetrics,
        *,
        batch_size: int = MAX_SHIP_BATCH,
        backoff_base: float = 0.1,
        backoff_max: float = 5.0,
        rng: random.Random | None = None,
        kind: str = "event",
        fields: Callable[[Any], Mapping[str, Any]] = event_fields,
    ) -> None:
        if not 1 <= batch_size <= MAX_SHIP_BATCH:
            raise ValueError(f"batch_size must be in 1..{MAX_SHIP_BATCH}, got {batch_size}")
        self._spool = spool
        self._send = send
        self._metrics = (
            ShipperMetrics(
                metrics.spool_shipped,
                metrics.spool_ship_retries,
                metrics.spool_rejected,
                metrics.spool_ship_latency,
            )
            if isinstance(metrics, Metrics)
            else metrics
        )
        # What a log line calls the items ("event", "usage") and the fields naming one.
        self._kind = kind
        self._fields = fields
        self._batch_size = batch_size
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._random = rng or random.Random()
        self._wake = asyncio.Event()
        # Set after every attempt to ship, whatever its outcome: what drain() waits on.
        self._attempted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Since when shipping has been failing (None: it is not).
        self._backing_up_since: float | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def nudge(self) -> None:
        """Upstream looks reachable again: end a backoff pause now."""
        self._wake.set()

    async def drain(self, seconds: float) -> bool:
        """Keep shipping until the spool is empty or ``seconds`` have passed; True when
        nothing is left. For a clean stop: what a pod's spool holds when it is deleted is lost
        with it unless its volume outlives the pod.

        Upstream is tried again at once (a backoff pause ends), then on the usual backoff, so a
        down upstream costs the whole ``seconds`` and no more than that.
        """
        if self._task is None or self._task.done() or self._spool.count == 0 or seconds <= 0:
            return self._spool.count == 0
        held = self._spool.count
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._spool.count > 0 and not self._task.done():
                    self._attempted.clear()
                    await self._attempted.wait()
        left = self._spool.count
        if left:
            log.warning("spool_left_on_stop", kind=self._kind, held=left, waited_seconds=seconds)
        else:
            log.info("spool_drained_on_stop", kind=self._kind, shipped=held)
        return left == 0

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
                self._metrics.retries.inc()
                self._note_backing_up(exc)
                self._attempted.set()
                await self._pause(failures)
                continue
            self._attempted.set()
            failures = 0
            if self._spool.count == 0 and self._backing_up_since is not None:
                log.info(
                    "spool_drained",
                    kind=self._kind,
                    backed_up_seconds=round(time.monotonic() - self._backing_up_since, 3),
                )
                self._backing_up_since = None

    async def _ship(self, batch: Sequence[Spooled[_Item]]) -> None:
        """Send ``batch`` and delete it; split a rejected one to find the items refused."""
        events = [s.item for s in batch if s.item is not None]
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
                self._metrics.latency.observe(time.perf_counter() - started)
                self._metrics.shipped.inc(len(batch))
            await self._spool.delete(batch)
            return
        # Rows that no longer decode (a spool written by a newer version, say) are dropped
        # alone, so the ones around them still go out in order.
        start = 0
        for i, spooled in enumerate(batch):
            if spooled.item is None:
                if start < i:
                    await self._ship(batch[start:i])
                self._reject(spooled, "cannot be decoded")
                await self._spool.delete([spooled])
                start = i + 1
        if start < len(batch):
            await self._ship(batch[start:])

    def _reject(self, spooled: Spooled[_Item], reason: str) -> None:
        item = spooled.item
        self._metrics.rejected.inc()
        fields = self._fields(item) if item is not None else {}
        if self._kind == "event":
            log.warning("spool_event_rejected", reason=reason, **fields)
        else:
            log.error("spool_usage_rejected", reason=reason, **fields)

    def _note_backing_up(self, exc: Exception) -> None:
        if self._backing_up_since is None:
            self._backing_up_since = time.monotonic()
            log.warning(
                "spool_backing_up",
                kind=self._kind,
                error=str(exc),
                held=self._spool.count,
                bytes=self._spool.bytes,
            )

    async def _pause(self, failures: int) -> None:
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** min(failures, 32))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._random.uniform(0, ceiling)):
                await self._wake.wait()
