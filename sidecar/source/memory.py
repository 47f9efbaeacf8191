"""An in-memory entitlement source: a first-class backend for tests and benchmarks.

It behaves like a real upstream (versions every record, applies DELTA/SET usage,
burns credits for credit-backed features, streams changes) without any I/O, and
lets a test inject failures and count fetches.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from entitlements.errors import SourceRejected
from entitlements.model.state import (
    CustomerSnapshot,
    DenialReason,
    EntitlementState,
    UsageRecord,
)
from sidecar.model.usage import CreditAck, RawEvent, UpdateBehavior, UsageAck, UsageReport
from sidecar.source.base import Change, Resync, SnapshotChanged, UsageChanged

Key = tuple[str, str | None]


class InMemorySource:
    def __init__(self) -> None:
        self._snapshots: dict[Key, CustomerSnapshot] = {}
        self._subscribers: list[asyncio.Queue[Change]] = []
        self._version = 0
        self.fetch_count = 0
        self.events: list[RawEvent] = []
        # Acknowledgements by (customer, idempotency key): a repeated key is answered as before.
        self._acks: dict[tuple[str, str], UsageAck] = {}
        #: When set, every call raises it (fault injection).
        self.failure: Exception | None = None
        #: When set, fetches wait on it first (lets tests pile up concurrent misses).
        self.gate: asyncio.Event | None = None

    def _next_version(self) -> int:
        self._version += 1
        return self._version

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def put(self, snapshot: CustomerSnapshot) -> CustomerSnapshot:
        """Store a state as the new truth, versioned, and publish it."""
        state = replace(snapshot.state, version=self._next_version(), updated_at=datetime.now(UTC))
        stored = replace(snapshot, state=state)
        self._snapshots[(state.customer_id, state.resource_id)] = stored
        self._publish(SnapshotChanged(stored))
        return stored

    def get(self, customer_id: str, resource_id: str | None = None) -> CustomerSnapshot | None:
        return self._snapshots.get((customer_id, resource_id))

    def _publish(self, change: Change) -> None:
        for queue in self._subscribers:
            queue.put_nowait(change)

    async def reload(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        return await self.fetch(customer_id, resource_id)

    async def fetch(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        self.fetch_count += 1
        if self.gate is not None:
            await self.gate.wait()
        self._check()
        found = self._snapshots.get((customer_id, resource_id))
        if found is not None:
            return found
        reason = (
            DenialReason.CUSTOMER_RESOURCE_NOT_FOUND
            if resource_id is not None and (customer_id, None) in self._snapshots
            else DenialReason.CUSTOMER_NOT_FOUND
        )
        return CustomerSnapshot(EntitlementState(customer_id, resource_id, reason))

    async def report_usage(
        self, reports: Sequence[UsageReport], *, deadline: float | None = None
    ) -> list[UsageAck]:
        self._check()
        return [self._keyed_usage(report) for report in reports]

    def _keyed_usage(self, report: UsageReport) -> UsageAck:
        if report.idempotency_key is None:
            return self._apply_usage(report)
        key = (report.customer_id, report.idempotency_key)
        if key not in self._acks:
            self._acks[key] = self._apply_usage(report)
        return self._acks[key]

    def _apply_usage(self, report: UsageReport) -> UsageAck:
        key = (report.customer_id, report.resource_id)
        snapshot = self._snapshots.get(key)
        if snapshot is None or report.feature_id not in snapshot.state.features:
            raise SourceRejected(
                f"feature {report.feature_id!r} is not entitled for customer {report.customer_id!r}"
            )
        now = datetime.now(UTC)
        old = snapshot.feature_usage.get(report.feature_id, UsageRecord())
        new_usage = (
            report.value
            if report.behavior is UpdateBehavior.SET
            else old.current_usage + report.value
        )
        record = replace(old, current_usage=new_usage, updated_at=now, version=self._next_version())
        snapshot = snapshot.with_feature_usage(report.feature_id, record)
        self._publish(
            UsageChanged(report.customer_id, report.resource_id, report.feature_id, None, record)
        )
        credit_ack = None
        rate = snapshot.state.features[report.feature_id].credit_rate
        wallet = snapshot.state.credits.get(rate.currency_id) if rate else None
        if rate is not None and wallet is not None:
            cost = (new_usage - old.current_usage) * rate.amount
            spent = snapshot.credit_usage.get(rate.currency_id, UsageRecord())
            credit_record = replace(
                spent,
                current_usage=spent.current_usage + cost,
                updated_at=now,
                version=self._next_version(),
            )
            snapshot = snapshot.with_credit_usage(rate.currency_id, credit_record)
            credit_ack = CreditAck(rate.currency_id, wallet.granted, credit_record, cost)
            self._publish(
                UsageChanged(
                    report.customer_id, report.resource_id, None, rate.currency_id, credit_record
                )
            )
        self._snapshots[key] = snapshot
        return UsageAck(
            measurement_id=str(uuid.uuid4()),
            customer_id=report.customer_id,
            feature_id=report.feature_id,
            resource_id=report.resource_id,
            usage=record,
            credit=credit_ack,
        )

    async def report_events(self, events: Sequence[RawEvent]) -> None:
        self._check()
        self.events.extend(events)

    async def changes(self) -> AsyncIterator[Change]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            yield Resync()
            while True:
                yield await queue.get()
        finally:
            self._subscribers.remove(queue)

    def disconnect_subscribers(self) -> None:
        """Simulate a dropped change stream: subscribers see a fresh Resync."""
        self._publish(Resync())

    async def aclose(self) -> None:
        return None
