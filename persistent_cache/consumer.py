"""The consumer loop: stream entries -> versioned writes to the cache -> acks.

Guarantees:
- an entry is acked only after its write succeeded (or after it was parked as a dead letter), so
  a crash or a Redis outage leaves it pending, to be retried by this consumer or claimed by another;
- a batch is written with one ``apply_writes`` call (one pipeline); every write compares
  versions, so applying an entry twice, or out of order, is harmless;
- an entry that can never be written (undecodable, or rejected by the write itself) is parked in
  the dead-letter stream instead of blocking the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

import structlog

from entitlements.errors import CacheRejected, CacheUnavailable, WritesRejected
from entitlements.redis.hash_writes import HashWrite
from persistent_cache.cache import ApplyOutcome, EventWriter
from persistent_cache.decoding import Poison, decode_delivery
from persistent_cache.errors import StreamUnavailable
from persistent_cache.metrics import Metrics
from persistent_cache.source import Delivery, EventSource

log = structlog.get_logger("persistent_cache.consumer")

#: Consumers of dead processes are forgotten once idle this long with nothing pending.
PRUNE_IDLE_MS = 3_600_000
PRUNE_EVERY_SECONDS = 300.0
BACKOFF_FIRST_SECONDS = 0.1
BACKOFF_MAX_SECONDS = 5.0


class Consumer:
    def __init__(
        self,
        source: EventSource,
        writer: EventWriter,
        metrics: Metrics,
        *,
        claim_interval: float,
        on_loss: Callable[[str], None],
        lanes: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lanes < 1:
            raise ValueError("a consumer needs at least one lane")
        self._lanes = lanes
        self._source = source
        self._writer = writer
        self._metrics = metrics
        self._claim_interval = claim_interval
        # Called when entries were lost to the stream (trimmed while pending): asks for a resync.
        self._on_loss = on_loss
        self._clock = clock
        self._stop = asyncio.Event()
        self._prepared = False
        # Entries of ours are pending unwritten (a restart, a failed write): re-read them first,
        # rather than leaving them for a claim CLAIM_IDLE_MS later.
        self._own_pending = True
        # Set while the extra lanes may read: the group exists and no own pending entries wait.
        self._steady = asyncio.Event()
        # Ids of the entries some lane is writing now; re-reading our pending entries skips them.
        self._in_flight: set[str] = set()
        # Failed batches so far: tells the leader whether one failed while it re-read.
        self._failures = 0
        self._running = False
        self._next_claim = 0.0
        self._next_prune = 0.0

    @property
    def running(self) -> bool:
        """The loop runs and the group is in place (the readiness half owned by the consumer)."""
        return self._running and self._prepared

    def request_stop(self) -> None:
        """Stop reading; the batches in hand are still written and acked."""
        self._stop.set()
        self._steady.set()  # wakes the extra lanes, which then see the stop

    async def run(self) -> None:
        """Consume until stopped, with ``lanes`` batches in flight at once.

        One lane alone alternates between its own CPU work (decoding, packing commands) and
        waiting for Redis to run the batch's scripts; a second lane does its CPU work while the
        first one waits, which is most of the throughput a process can get. Order between lanes
        does not matter: every write compares versions, deletions included. The first lane also
        prepares the group, re-reads this consumer's pending entries and claims dead consumers'.
        """
        self._running = True
        try:
            async with asyncio.TaskGroup() as lanes:
                for index in range(self._lanes):
                    lanes.create_task(self._lane(leader=index == 0))
        finally:
            self._running = False

    async def _lane(self, *, leader: bool) -> None:
        delay = BACKOFF_FIRST_SECONDS
        while not self._stop.is_set():
            try:
                if leader:
                    await self._step()
                else:
                    await self._follow()
                delay = BACKOFF_FIRST_SECONDS
                continue
            except (CacheUnavailable, StreamUnavailable) as exc:
                self._needs_own_pending()
                component = "cache" if isinstance(exc, CacheUnavailable) else "stream"
                self._metrics.errors.labels(component).inc()
                log.warning("consume_failed", component=component, error=str(exc))
            except Exception:
                # A bug must not end consumption for good: log it and carry on.
                self._needs_own_pending()
                self._metrics.errors.labels("consumer").inc()
                log.exception("consume_crashed")
            await self._pause(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    def _needs_own_pending(self) -> None:
        # A failed batch stays pending on this consumer: the leader re-reads it, and the other
        # lanes wait for that so nothing is written twice at once.
        self._own_pending = True
        self._failures += 1
        if not self._stop.is_set():
            self._steady.clear()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _step(self) -> None:
        if not self._prepared:
            await self._source.prepare()
            self._prepared = True
        if self._own_pending:
            # Also what a previous process of the same name left behind. Entries another lane
            # is writing right now are pending too, and are left to it.
            failures = self._failures
            cursor = "0"
            while not self._stop.is_set() and (own := await self._source.read_own_pending(cursor)):
                cursor = own[-1].id
                await self._handle([d for d in own if d.id not in self._in_flight])
            # A lane that failed meanwhile may have left entries behind the cursor: go again.
            if self._failures == failures:
                self._own_pending = False
                self._steady.set()
        if self._clock() >= self._next_claim:
            await self._maintain()
            self._next_claim = self._clock() + self._claim_interval
        if not self._stop.is_set():
            await self._handle(await self._source.read())

    async def _follow(self) -> None:
        await self._steady.wait()
        if not self._stop.is_set():
            await self._handle(await self._source.read())

    async def _maintain(self) -> None:
        while not self._stop.is_set():
            claimed = await self._source.claim()
            await self._handle(claimed.deliveries, reclaimed=True)
            if not claimed.more:
                break
        status = await self._source.status()
        self._metrics.lag.set(status.lag if status.lag is not None else status.pending)
        self._metrics.pending.set(status.pending)
        if self._clock() >= self._next_prune:
            await self._source.prune_consumers(PRUNE_IDLE_MS)
            self._next_prune = self._clock() + PRUNE_EVERY_SECONDS

    async def _handle(self, deliveries: Sequence[Delivery], *, reclaimed: bool = False) -> None:
        """Write one batch and ack it; raises (acking nothing written) if the cache failed."""
        if not deliveries:
            return
        ids = [delivery.id for delivery in deliveries]
        self._in_flight.update(ids)
        try:
            await self._handle_batch(deliveries, reclaimed)
        finally:
            self._in_flight.difference_update(ids)

    async def _handle_batch(self, deliveries: Sequence[Delivery], reclaimed: bool) -> None:
        self._metrics.consumed.inc(len(deliveries))
        if reclaimed:
            self._metrics.reclaimed.inc(len(deliveries))
        events: list[tuple[Delivery, HashWrite]] = []
        poison: list[tuple[Delivery, str]] = []
        lost: list[str] = []
        for delivery in deliveries:
            if delivery.fields is None:
                lost.append(delivery.id)
                continue
            decoded = decode_delivery(delivery.fields)
            if isinstance(decoded, Poison):
                poison.append((delivery, decoded.reason))
            else:
                events.append((delivery, decoded))
        if lost:
            log.warning("pending_entries_trimmed", count=len(lost))
            self._on_loss("pending entries trimmed")
        settled = lost + await self._park(poison)
        try:
            written, rejected = await self._write(events)
        except CacheUnavailable:
            # Parked and lost entries are done whatever the cache does; the rest stays pending.
            await self._source.ack(settled)
            raise
        await self._source.ack(settled + written + await self._park(rejected))

    async def _park(self, letters: Sequence[tuple[Delivery, str]]) -> list[str]:
        if not letters:
            return []
        await self._source.dead_letter(letters)
        self._metrics.dead_lettered.inc(len(letters))
        for delivery, reason in letters:
            log.warning("dead_lettered", entry_id=delivery.id, reason=reason)
        return [delivery.id for delivery, _ in letters]

    async def _write(
        self, events: Sequence[tuple[Delivery, HashWrite]]
    ) -> tuple[list[str], list[tuple[Delivery, str]]]:
        """Write the batch; returns the ids written and the entries the write itself rejected."""
        if not events:
            return [], []
        started = time.perf_counter()
        try:
            outcomes = await self._writer.apply_writes([write for _, write in events])
        except WritesRejected as exc:
            # The rest of the batch went through; only the refused entries are parked.
            self._metrics.apply_seconds.observe(time.perf_counter() - started)
            return self._settle(events, exc.outcomes)
        except CacheUnavailable:
            raise
        except Exception as exc:
            # Not an outage: something in the batch cannot be written. Isolate it so the
            # rest of the batch goes through and the bad entry stops blocking the group.
            log.warning("batch_write_rejected", error=str(exc), size=len(events))
            return await self._write_one_by_one(events)
        self._metrics.apply_seconds.observe(time.perf_counter() - started)
        self._count(list(zip((event for _, event in events), outcomes, strict=True)))
        return [delivery.id for delivery, _ in events], []

    def _settle(
        self, events: Sequence[tuple[Delivery, HashWrite]], outcomes: Sequence[object]
    ) -> tuple[list[str], list[tuple[Delivery, str]]]:
        written: list[str] = []
        rejected: list[tuple[Delivery, str]] = []
        counted: list[tuple[HashWrite, ApplyOutcome]] = []
        for (delivery, write), outcome in zip(events, outcomes, strict=True):
            if isinstance(outcome, CacheRejected):
                rejected.append((delivery, f"write rejected: {outcome}"))
            else:
                written.append(delivery.id)
                counted.append((write, outcome))  # type: ignore[arg-type]
        self._count(counted)
        return written, rejected

    async def _write_one_by_one(
        self, events: Sequence[tuple[Delivery, HashWrite]]
    ) -> tuple[list[str], list[tuple[Delivery, str]]]:
        written: list[str] = []
        rejected: list[tuple[Delivery, str]] = []
        for delivery, event in events:
            try:
                (outcome,) = await self._writer.apply_writes([event])
            except CacheRejected as exc:
                rejected.append((delivery, f"write rejected: {exc}"))
                continue
            except CacheUnavailable:
                raise
            except Exception as exc:
                rejected.append((delivery, f"write rejected: {type(exc).__name__}: {exc}"))
                continue
            self._count([(event, outcome)])
            written.append(delivery.id)
        return written, rejected

    def _count(self, results: Sequence[tuple[HashWrite, ApplyOutcome]]) -> None:
        now = self._clock()
        stale = 0
        for write, outcome in results:
            if outcome.applied == 0 and outcome.stale > 0:
                stale += 1
            if write.committed_at_ms is not None:
                delay = now - write.committed_at_ms / 1000
                self._metrics.commit_to_redis.observe(max(delay, 0.0))
        self._metrics.stale.inc(stale)
        self._metrics.applied.inc(len(results) - stale)
