"""The read path and the write path, independent of any transport.

Reads: hot cache -> source (single-flight per key) -> stale cache -> None (the
caller then serves fallbacks). Writes: forwarded to the source; the usage it
acknowledges is written back so the next read reflects it. With usage buffering, a report
the source cannot be reached for is spooled, acknowledged locally and projected onto the
cached state; its shipper forwards it later and writes upstream's answer back.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from entitlements.errors import (
    InvalidApiKey,
    ResourceExhausted,
    SourceError,
    SourceRejected,
    SourceUnavailable,
)
from entitlements.model.state import CUSTOMER_LEVEL_REASONS, CustomerSnapshot, DenialReason
from entitlements.tasks import cancel_and_wait
from sidecar.cache.hot_cache import HotCache, Key
from sidecar.cache.sizing import snapshot_size
from sidecar.evaluation.rules import stable_until
from sidecar.model.usage import RawEvent, UsageAck, UsageReport
from sidecar.observability import Metrics
from sidecar.service.projection import project_usage
from sidecar.source.base import (
    Change,
    CustomerRemoved,
    EntitlementSource,
    Invalidated,
    Resumed,
    Resync,
    SnapshotChanged,
    UsageChanged,
)
from sidecar.spool.shipper import Shipper, ShipperMetrics, usage_fields
from sidecar.spool.store import Queue, Spool

log = structlog.get_logger("sidecar.service")

_NANOID_ALPHABET = "_-0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


#: Memoized responses per cached snapshot (see CacheEntry.views).
MAX_VIEWS = 32
#: An unconfirmed entry (one the change stream may have missed changes to) is refetched at
#: most this often per key while reads keep asking for it ...
REVALIDATE_INTERVAL_SECONDS = 1.0
#: ... and after a refetch failed, served as it is for this long before the next attempt, so a
#: source that is down (or hangs) costs a key's callers one attempt per interval, not each read.
FAILED_REVALIDATION_BACKOFF_SECONDS = 2.0
#: The entry floor while no change stream is live: nothing held counts as confirmed.
NOTHING_CONFIRMED = float("inf")
#: Upstream's (and Stigg's) limit of usage reports per request: buffered usage ships in these.
MAX_USAGE_SHIP_BATCH = 100
#: With usage buffering, the part of a call's deadline kept for spooling the report when
#: upstream cannot be reached: the caller must get the acknowledgement before it gives up
#: (a caller that saw DEADLINE_EXCEEDED and retries without its key would count twice).
SPOOL_RESERVE_SECONDS = 0.1


class IdempotencyKeys:
    """Keys for reports callers sent without one: unique per call, so only that call's retries
    share it. A random prefix per instance and a counter: as unique as a UUID per call (the
    prefix is one), at a tenth of its cost."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = f"sidecar-{uuid.uuid4()}-"
        self._counter = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter)}"


def local_measurement_id() -> str:
    """A 21-character URL-safe id, the shape Stigg's offline mode hands out."""
    return "".join(secrets.choice(_NANOID_ALPHABET) for _ in range(21))


@dataclass(slots=True)
class CacheEntry:
    snapshot: CustomerSnapshot
    # Earliest valid-until of any entitlement: after it the state must be refetched.
    expires_at: float | None
    # Bytes charged for the snapshot itself; views are charged on top.
    size: int = 0
    # Serialized responses derived from this snapshot alone (the entitlement list, one
    # feature's answer), each with the instant until which it stays right and what the
    # caller needs to know of it besides the bytes. A new snapshot is a new entry, so these
    # never outlive the state they were computed from.
    views: dict[str, tuple[float, bytes, object]] = field(default_factory=dict)
    # stable_until(snapshot, now) as last computed, good until the instant it names.
    horizon: tuple[float, datetime | None] | None = None
    # The stream epoch the state was confirmed in (see EntitlementService._floor), when (wall
    # clock), and the earliest instant to try revalidating it again after a failed attempt.
    epoch: int = -1
    confirmed_at: float = 0.0
    retry_at: float = 0.0


def _view_feature(name: str) -> str | None:
    """The feature (or currency) a memoized answer is about; None for a list of them all.

    Single-feature answers are named ``method\0feature_id\0...`` by the API layer.
    """
    parts = name.split("\x00", 2)
    return parts[1] if len(parts) > 1 else None


def _expiry(snapshot: CustomerSnapshot) -> float | None:
    instants = [e.valid_until for e in snapshot.state.features.values() if e.valid_until]
    instants += [c.valid_until for c in snapshot.state.credits.values() if c.valid_until]
    return min(instants).timestamp() if instants else None


class EntitlementService:
    def __init__(
        self,
        *,
        source: EntitlementSource | None,
        cache: HotCache[CacheEntry],
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        coherent: bool = True,
        spool: Spool | None = None,
        usage_buffering: bool = False,
    ) -> None:
        # No source means offline mode: nothing is ever fetched or forwarded.
        self._source = source
        # With a spool, events are acknowledged once on local disk and shipped in the background.
        self._spool = spool if source is not None else None
        self._shipper = (
            Shipper(spool, source.report_events, metrics)
            if spool is not None and source is not None
            else None
        )
        # With usage buffering, usage the source cannot be reached for waits in the spool's
        # usage queue, shipped by its own shipper to the usage endpoint.
        self._usage_spool: Queue[UsageReport] | None = (
            spool.usage if usage_buffering and spool is not None and source is not None else None
        )
        self._usage_shipper = (
            Shipper(
                self._usage_spool,
                self._ship_usage,
                ShipperMetrics(
                    metrics.spool_usage_shipped,
                    metrics.spool_usage_ship_retries,
                    metrics.spool_usage_rejected,
                    metrics.spool_usage_ship_latency,
                ),
                batch_size=MAX_USAGE_SHIP_BATCH,
                kind="usage",
                fields=usage_fields,
            )
            if self._usage_spool is not None
            else None
        )
        self._cache = cache
        self._metrics = metrics
        self._clock = clock
        self._keys = IdempotencyKeys()
        # Without a change stream a cached entry may be stale at any moment, so
        # it is only a last resort when the source fails.
        self._coherent = coherent
        self._inflight: dict[Key, asyncio.Future[CustomerSnapshot]] = {}
        # Changes that arrive while a key is being fetched; the fetch may predate them.
        self._raced: dict[Key, list[Change]] = {}
        self._watcher: asyncio.Task[None] | None = None
        #: Becomes true once the change stream delivered its first Resync (or at once offline).
        self.synced = asyncio.Event()
        # Whether the source last refused our API key: logged on each change, not each retry.
        self._key_rejected = False
        # Entries are stamped with the epoch they were confirmed in; those at or above the
        # floor are trusted as they are. Losing the change stream raises the floor out of
        # reach (everything held becomes a stale copy, revalidated on read); a lossless resume
        # restores it, a Resync sets it to a new epoch. One comparison on the hot path.
        self._epoch = 0
        self._floor: float = NOTHING_CONFIRMED
        self._floor_before_loss: float = NOTHING_CONFIRMED
        self._oldest_stale_served = 0.0
        if source is None:
            self.synced.set()
        metrics.backend_synced.set(1 if source is None else 0)

    @property
    def offline(self) -> bool:
        return self._source is None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    # ------------------------------------------------------------------ reads

    async def snapshot(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot | None:
        """The state to evaluate, or None when only fallbacks can answer."""
        key = (customer_id, resource_id)
        entry = self._cache.get(key)
        if (
            entry is not None
            and self._coherent
            and (entry.expires_at is None or entry.expires_at > self._clock())
        ):
            if entry.epoch >= self._floor:
                return entry.snapshot
            if not self._due_for_revalidation(entry):
                self._served_stale(entry)
                return entry.snapshot
        if self._source is None:
            return None
        try:
            snapshot = await self._fetch(key)
        except SourceError as exc:
            if not self._note_key_rejected(exc):
                self._metrics.network_errors.inc()
                log.warning(
                    "source_fetch_failed",
                    customer_id=customer_id,
                    resource_id=resource_id,
                    error=str(exc),
                )
            if entry is not None:
                # Stale data is a better answer than a guess.
                entry.retry_at = self._clock() + FAILED_REVALIDATION_BACKOFF_SECONDS
                self._served_stale(entry)
                return entry.snapshot
            return None
        self._note_key_accepted()
        return snapshot

    def _due_for_revalidation(self, entry: CacheEntry) -> bool:
        now = self._clock()
        if now < entry.retry_at:
            return False
        # With the stream live again one refetch confirms an entry for good; while it is down
        # every read would refetch, so each key is refetched at most once per interval.
        stream_live = self._floor != NOTHING_CONFIRMED
        return stream_live or now - entry.confirmed_at >= REVALIDATE_INTERVAL_SECONDS

    def _served_stale(self, entry: CacheEntry) -> None:
        self._metrics.stale_served.inc()
        age = max(self._clock() - entry.confirmed_at, 0.0)
        if age > self._oldest_stale_served:
            self._oldest_stale_served = age
            self._metrics.oldest_stale_served.set(age)

    def _note_key_rejected(self, exc: SourceError) -> bool:
        """Count a refused API key; True when ``exc`` was one. Logged when it starts, once."""
        if not isinstance(exc, InvalidApiKey):
            return False
        self._metrics.invalid_api_key_errors.inc()
        if not self._key_rejected:
            self._key_rejected = True
            log.error("api_key_rejected", error=str(exc), setting="SERVER_API_KEY")
        return True

    def _note_key_accepted(self) -> None:
        if self._key_rejected:
            self._key_rejected = False
            log.info("api_key_accepted")

    async def _fetch(self, key: Key) -> CustomerSnapshot:
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[CustomerSnapshot] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        assert self._source is not None
        # What the fetch reads may predate a Resync that happens meanwhile: stamp it with the
        # epoch it started in, so it is not trusted past that Resync.
        epoch = self._epoch
        started = time.perf_counter()
        try:
            fetched = await self._source.fetch(*key)
        except BaseException as exc:
            del self._inflight[key]
            self._raced.pop(key, None)
            future.set_exception(exc)
            # Every waiter re-raises it; mark it retrieved so asyncio does not warn.
            future.exception()
            raise
        self._metrics.source_latency.observe(time.perf_counter() - started)
        del self._inflight[key]
        self._store(key, fetched, epoch=epoch)
        for change in self._raced.pop(key, ()):
            self._apply(change)
        held = self._cache.peek(key)
        snapshot = held.snapshot if held is not None else fetched
        future.set_result(snapshot)
        return snapshot

    def _store(self, key: Key, snapshot: CustomerSnapshot, *, epoch: int) -> CustomerSnapshot:
        """Put a whole confirmed state in the hot cache, record by record newest-wins against
        what is held; the entry counts as confirmed in ``epoch``."""
        held = self._cache.peek(key)
        if held is not None:
            snapshot = held.snapshot.merged(snapshot)
            if snapshot is held.snapshot:
                self._confirm(held, epoch)
                return snapshot
        self._put(key, snapshot, epoch=epoch)
        return snapshot

    def _confirm(self, entry: CacheEntry, epoch: int) -> None:
        if epoch >= entry.epoch:
            entry.epoch = epoch
            entry.confirmed_at = self._clock()
            entry.retry_at = 0.0

    def _put(self, key: Key, snapshot: CustomerSnapshot, *, epoch: int | None = None) -> None:
        """Cache ``snapshot``; ``epoch`` None: a derived state (a usage update), as trusted as
        what it was derived from."""
        held = self._cache.peek(key)
        # A usage update swaps one record for another of the same shape: the size held is still
        # right, and walking the whole state again would cost more than the update itself.
        size = held.size if epoch is None and held is not None else snapshot_size(snapshot)
        entry = CacheEntry(snapshot, _expiry(snapshot), size)
        if epoch is None:
            if held is not None:
                entry.epoch, entry.confirmed_at = held.epoch, held.confirmed_at
        else:
            entry.epoch, entry.confirmed_at = epoch, self._clock()
        self._cache.put(key, entry, size)

    def view(self, snapshot: CustomerSnapshot, name: str) -> bytes | None:
        """A memoized response derived from ``snapshot``, if it is still right now."""
        found = self.view_with_meta(snapshot, name)
        return None if found is None else found[0]

    def view_with_meta(self, snapshot: CustomerSnapshot, name: str) -> tuple[bytes, object] | None:
        """Like :meth:`view`, with the ``meta`` it was remembered with."""
        entry = self._cache.peek((snapshot.state.customer_id, snapshot.state.resource_id))
        if entry is None or entry.snapshot is not snapshot:
            return None
        found = entry.views.get(name)
        if found is None or found[0] <= self._clock():
            return None
        return found[1], found[2]

    def horizon(self, snapshot: CustomerSnapshot, now: datetime) -> datetime | None:
        """``stable_until(snapshot, now)``, computed once per cached snapshot and period.

        It costs about as much as evaluating a feature, and every memoized answer needs it.
        """
        entry = self._cache.peek((snapshot.state.customer_id, snapshot.state.resource_id))
        if entry is not None and entry.snapshot is snapshot:
            held = entry.horizon
            if held is not None and held[0] > now.timestamp():
                return held[1]
        until = stable_until(snapshot, now)
        if entry is not None and entry.snapshot is snapshot:
            entry.horizon = (until.timestamp() if until else float("inf"), until)
        return until

    def remember_view(
        self,
        snapshot: CustomerSnapshot,
        name: str,
        data: bytes,
        valid_until: datetime | None,
        meta: object = None,
    ) -> None:
        """Memoize a response derived from ``snapshot`` alone, charging its bytes to the cache.

        At most MAX_VIEWS per entry: names carry request parameters (a requested usage, say),
        and callers varying them freely must not grow an entry without bound.
        """
        key = (snapshot.state.customer_id, snapshot.state.resource_id)
        entry = self._cache.peek(key)
        if entry is None or entry.snapshot is not snapshot:
            return
        if name not in entry.views and len(entry.views) >= MAX_VIEWS:
            return
        until = valid_until.timestamp() if valid_until else float("inf")
        entry.views[name] = (until, data, meta)
        charged = entry.size + sum(len(view[1]) + len(n) for n, view in entry.views.items())
        self._cache.put(key, entry, charged)

    async def reload(self, customer_id: str, resource_id: str | None) -> bool:
        """Refetch and overwrite; True when the customer exists (Stigg's rule)."""
        if self._source is None:
            return True
        key = (customer_id, resource_id)
        try:
            snapshot = await self._source.reload(customer_id, resource_id)
        except SourceError as exc:
            self._metrics.network_errors.inc()
            log.warning("reload_failed", customer_id=customer_id, error=str(exc))
            return False
        self._put(key, snapshot, epoch=self._epoch)
        reason = snapshot.state.denial_reason
        return (
            reason is None
            or reason not in CUSTOMER_LEVEL_REASONS
            or (reason is DenialReason.NO_ACTIVE_SUBSCRIPTION)
        )

    # ----------------------------------------------------------------- writes

    async def report_usage(
        self, reports: Sequence[UsageReport], *, deadline: float | None = None
    ) -> list[UsageAck]:
        """Forward usage; ``deadline`` (monotonic) bounds the source's retries."""
        if self._source is None:
            return [
                UsageAck(local_measurement_id(), r.customer_id, r.feature_id, r.resource_id)
                for r in reports
            ]
        # Every forwarded report carries a key, so upstream counts it once however often it is
        # sent: the source may then retry a report whose answer was lost.
        keyed = [r if r.idempotency_key else r.with_key(self._keys.new()) for r in reports]
        buffer = self._usage_spool
        if buffer is not None and (buffer.count or buffer.pending_bytes):
            # Reports are still waiting: this one queues behind them, so upstream applies every
            # customer's reports in the order they were acknowledged (a SET must not overtake).
            return await self._buffer(keyed, None)
        if buffer is not None and deadline is not None:
            deadline -= SPOOL_RESERVE_SECONDS
        try:
            acks = await self._source.report_usage(keyed, deadline=deadline)
        except SourceRejected:
            raise  # upstream said no: buffering it would acknowledge what will never count
        except SourceError as exc:
            self._metrics.network_errors.inc()
            if buffer is None:
                raise
            # Unreachable, or the answer was lost: spooled with the same keys, so a report
            # upstream did process is answered with its first acknowledgement when shipped.
            return await self._buffer(keyed, exc)
        for ack in acks:
            self._write_back(ack)
        return acks

    async def _buffer(
        self, reports: Sequence[UsageReport], cause: SourceError | None
    ) -> list[UsageAck]:
        """Spool ``reports`` (all or none), acknowledge them locally and project them onto
        the cached state, so the next read from this sidecar reflects them."""
        assert self._usage_spool is not None
        was_empty = self._usage_spool.count == 0
        try:
            await self._usage_spool.append(reports)
        except ResourceExhausted as exc:
            self._metrics.spool_full.inc()
            # Retryable like the outage itself: the caller keeps the report (and its key).
            raise SourceUnavailable(
                f"{cause or 'earlier usage reports are still waiting for upstream'}; "
                f"buffering is not possible: {exc}"
            ) from exc
        self._metrics.usage_buffered.inc(len(reports))
        if was_empty and cause is not None:
            log.warning("usage_buffering_started", error=str(cause), reports=len(reports))
        return [self._project(report) for report in reports]

    def _project(self, report: UsageReport) -> UsageAck:
        key = (report.customer_id, report.resource_id)
        held = self._cache.peek(key)
        usage = None
        if held is not None:
            snapshot, currency_id = project_usage(held.snapshot, report, self.now())
            if snapshot is not held.snapshot:
                self._put_usage(key, held, snapshot, {report.feature_id}, currency_id)
                usage = snapshot.feature_usage.get(report.feature_id)
        return UsageAck(
            local_measurement_id(), report.customer_id, report.feature_id, report.resource_id, usage
        )

    async def _ship_usage(self, reports: Sequence[UsageReport]) -> None:
        """Forward buffered reports (with their keys); upstream's answers replace the local
        projection."""
        assert self._source is not None
        for ack in await self._source.report_usage(reports):
            self._write_back(ack)

    def _write_back(self, ack: UsageAck) -> None:
        key = (ack.customer_id, ack.resource_id)
        held = self._cache.peek(key)
        if held is None:
            # Nothing cached: the next read fetches the new usage anyway.
            return
        snapshot = held.snapshot
        if ack.usage is not None:
            snapshot = snapshot.with_feature_usage(ack.feature_id, ack.usage)
        if ack.credit is not None:
            snapshot = snapshot.with_credit_usage(ack.credit.currency_id, ack.credit.record)
        if snapshot is not held.snapshot:
            touched = {ack.feature_id} if ack.usage is not None else set()
            currency = ack.credit.currency_id if ack.credit is not None else None
            self._put_usage(key, held, snapshot, touched, currency)

    async def report_events(self, events: Sequence[RawEvent]) -> None:
        if self._source is None:
            return
        if self._spool is not None:
            try:
                await self._spool.append(events)
            except ResourceExhausted:
                self._metrics.spool_full.inc()
                raise
            return
        try:
            await self._source.report_events(events)
        except SourceRejected:
            raise
        except SourceError:
            self._metrics.network_errors.inc()
            raise

    # ---------------------------------------------------------------- changes

    def apply(self, change: Change) -> None:
        """Keep the hot cache coherent with one upstream change."""
        if isinstance(change, Invalidated) and change.committed_at_ms is not None:
            # Measured on arrival, not on a replay after a raced fetch, so each change counts once.
            lag = self._clock() - change.committed_at_ms / 1000
            self._metrics.propagation.observe(max(lag, 0.0))
        self._apply(change)

    def _apply(self, change: Change) -> None:
        if isinstance(change, Resync):
            # Live again, but what we hold may have missed changes: keep it as a stale copy,
            # trusted again only once refetched.
            self._epoch += 1
            self._floor = self._epoch
            self._stream_live()
        elif isinstance(change, Resumed):
            # Live again and nothing was missed: everything held is as good as before.
            self._floor = self._floor_before_loss
            self._stream_live()
        elif isinstance(change, SnapshotChanged):
            state = change.snapshot.state
            key = (state.customer_id, state.resource_id)
            if key in self._inflight:
                self._raced.setdefault(key, []).append(change)
            elif key in self._cache:
                self._store(key, change.snapshot, epoch=self._epoch)
        elif isinstance(change, UsageChanged):
            self._apply_usage(change)
        elif isinstance(change, CustomerRemoved):
            if change.resource_id is None:
                self._cache.invalidate_customer(change.customer_id)
            else:
                self._cache.invalidate((change.customer_id, change.resource_id))
        elif isinstance(change, Invalidated):
            key = (change.customer_id, change.resource_id)
            if key in self._inflight:
                # The fetch under way may have read the shared tier before this write landed;
                # replayed once it completes, so what it stores is dropped too.
                self._raced.setdefault(key, []).append(change)
            else:
                self._cache.invalidate(key)

    def _apply_usage(self, change: UsageChanged) -> None:
        key = (change.customer_id, change.resource_id)
        if key in self._inflight:
            self._raced.setdefault(key, []).append(change)
            return
        held = self._cache.peek(key)
        if held is None:
            return
        # A record already held (the change of this sidecar's own report, written back from
        # its acknowledgement) changes nothing: replacing it would only drop memoized answers.
        if change.feature_id is not None:
            if held.snapshot.feature_usage.get(change.feature_id) == change.record:
                return
            snapshot = held.snapshot.with_feature_usage(change.feature_id, change.record)
        elif change.currency_id is not None:
            if held.snapshot.credit_usage.get(change.currency_id) == change.record:
                return
            snapshot = held.snapshot.with_credit_usage(change.currency_id, change.record)
        else:
            return
        if snapshot is not held.snapshot:
            touched = {change.feature_id} if change.feature_id is not None else set()
            self._put_usage(key, held, snapshot, touched, change.currency_id)

    def _put_usage(
        self,
        key: Key,
        held: CacheEntry,
        snapshot: CustomerSnapshot,
        features: set[str],
        currency_id: str | None,
    ) -> None:
        """Cache ``snapshot``, ``held`` with new usage for ``features`` (and the wallet of
        ``currency_id``), keeping the memoized answers the change cannot have altered.

        Usage reports replace the snapshot all the time; dropping every answer with it would
        leave the customer's other features to be evaluated again on every read. A feature's
        answer depends on its own usage, and a credit-backed one on its wallet; the entitlement
        lists depend on everything.
        """
        if currency_id is not None:
            state = held.snapshot.state
            features = features | {
                feature_id
                for feature_id, entitlement in state.features.items()
                if entitlement.credit_rate is not None
                and entitlement.credit_rate.currency_id == currency_id
            }
            features.add(currency_id)
        self._put(key, snapshot)
        entry = self._cache.peek(key)
        if entry is None or not held.views:
            return
        kept = {}
        for name, view in held.views.items():
            about = _view_feature(name)
            if about is not None and about not in features:
                kept[name] = view
        if kept:
            entry.views.update(kept)
            charged = entry.size + sum(len(view[1]) + len(n) for n, view in entry.views.items())
            self._cache.put(key, entry, charged)

    async def watch(self) -> None:
        """Apply the source's change stream until cancelled, reconnecting on errors."""
        if self._source is None:
            return
        backoff = 0.1
        while True:
            try:
                async for change in self._source.changes():
                    self.apply(change)
                    backoff = 0.1
            except SourceError as exc:
                if not self._note_key_rejected(exc):
                    log.warning("change_stream_lost", error=str(exc))
            self._stream_lost()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _stream_lost(self) -> None:
        """Until the stream is back, nothing held can be trusted as it is; it stays as a stale
        copy, revalidated on read (a few at a time) and served when the source fails."""
        self._metrics.backend_synced.set(0)
        if self._floor != NOTHING_CONFIRMED:
            self._floor_before_loss = self._floor
        self._floor = NOTHING_CONFIRMED
        # Entries fetched from now on may miss changes too, so they belong to a new epoch.
        self._epoch += 1

    def _stream_live(self) -> None:
        for shipper in (self._shipper, self._usage_shipper):
            if shipper is not None:
                shipper.nudge()  # upstream answers again: ship what waits without delay
        self.synced.set()
        self._metrics.backend_synced.set(1)
        self._oldest_stale_served = 0.0
        self._metrics.oldest_stale_served.set(0)
        self._note_key_accepted()

    def start(self) -> None:
        if self._source is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self.watch())
        for shipper in (self._shipper, self._usage_shipper):
            if shipper is not None:
                shipper.start()

    async def aclose(self, *, drain_seconds: float = 0.0) -> None:
        """Stop; first, for up to ``drain_seconds``, ship what the spool holds."""
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
        shippers = [s for s in (self._shipper, self._usage_shipper) if s is not None]
        if drain_seconds > 0 and shippers:
            await asyncio.gather(*(s.drain(drain_seconds) for s in shippers))
        for shipper in shippers:
            # What is still spooled stays there for the next start.
            await shipper.aclose()
        if self._source is not None:
            await self._source.aclose()
