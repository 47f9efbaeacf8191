"""Usage reports, raw events and credit grants: everything that moves a counter or a wallet."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from entitlements.model.state import (
    FeatureEntitlement,
    UsageRecord,
    encode_usage_record,
)
from entitlements.periods import current_period
from upstream import credits, meters
from upstream.domain import CreditGrant, CustomerFacts, GrantType, UsageCounter
from upstream.errors import Invalid, NotFound
from upstream.publisher import CREDIT_PREFIX, StatePublisher, source_facts
from upstream.service import Upstream
from upstream.store.sqlite import Tx


@dataclass(frozen=True, slots=True)
class UsageItem:
    customer_id: str
    feature_id: str
    value: float
    resource_id: str | None = None
    set_value: bool = False
    idempotency_key: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class EventItem:
    event_name: str
    customer_id: str
    idempotency_key: str
    resource_id: str | None = None
    dimensions: Mapping[str, str | float | bool] = field(default_factory=dict)
    timestamp: datetime | None = None


@dataclass(slots=True)
class _Pending:
    """A counter updated within the batch under way, written once when the batch ends."""

    counter: UsageCounter
    meter_state: str | None
    record: UsageRecord


#: The counters a batch has updated so far, by (customer, resource, feature), in update order.
_Batch = dict[tuple[str, str | None, str], _Pending]


class _Terms:
    """The entitlement terms (period, credit rate) a batch needs, read once per key.

    A report needs its feature's entitlement, not the customer's whole state: the customer,
    subscriptions and promotions are read once per (customer, resource) in the batch (usage
    does not change them), and each feature's entitlement is computed from them once, the
    same as the full computation would give (``effective.feature_entitlement``).
    """

    def __init__(self, tx: Tx, publisher: StatePublisher, now: datetime) -> None:
        self._tx = tx
        self._publisher = publisher
        self._now = now
        self._sources: dict[tuple[str, str | None], CustomerFacts] = {}
        self._features: dict[tuple[str, str | None, str], FeatureEntitlement | None] = {}

    def customer(self, customer_id: str, resource_id: str | None, path: str) -> CustomerFacts:
        """The customer's source facts; NotFound (naming ``path``) if there is no customer."""
        key = (customer_id, resource_id)
        found = self._sources.get(key)
        if found is None:
            found = source_facts(self._tx, customer_id, resource_id)
            if found.customer is None:
                raise NotFound(
                    f"customer {customer_id!r} does not exist", field=f"{path}.customerId"
                )
            self._sources[key] = found
        return found

    def feature(
        self, customer_id: str, resource_id: str | None, feature_id: str, path: str
    ) -> FeatureEntitlement | None:
        key = (customer_id, resource_id, feature_id)
        if key not in self._features:
            sources = self.customer(customer_id, resource_id, path)
            self._features[key] = self._publisher.feature(
                sources, customer_id, feature_id, self._now
            )
        return self._features[key]


class Metering:
    """Batches (``report_usage``, ``report_events``) merge repeated updates of one counter:
    each update is computed (and, for reports, acknowledged with its own record and version)
    in memory, and the counter is written and its change published once, with its final value,
    when the batch ends, in the same transaction. Upstream's per-item work then grows with the
    counters a batch touches, not with its items."""

    def __init__(self, upstream: Upstream) -> None:
        self.up = upstream

    # ------------------------------------------------------------------- usage

    def report_usage(self, items: Sequence[UsageItem]) -> list[dict[str, Any]]:
        """All items or none: a bad item rolls the whole batch back."""
        now = self.up.clock()
        results: list[dict[str, Any]] = []
        batch: _Batch = {}
        with self.up.transaction() as tx:
            terms = _Terms(tx, self.up.publisher, now)
            for index, item in enumerate(items):
                scope = f"usage:{item.customer_id}"
                if item.idempotency_key is not None:
                    stored = tx.idempotent_response(scope, item.idempotency_key)
                    if stored is not None:
                        results.append(_replayed(json.loads(stored)))
                        continue
                result = self._report_one(tx, item, now, terms, f"usages[{index}]", batch)
                if item.idempotency_key is not None:
                    tx.remember_response(scope, item.idempotency_key, json.dumps(result), now)
                results.append(result)
            self._flush(tx, batch)
        return results

    def _flush(self, tx: Tx, batch: _Batch) -> None:
        """Write each counter the batch updated, and publish its change, once."""
        for pending in batch.values():
            counter = pending.counter
            tx.put_usage(counter, pending.meter_state)
            self.up.publisher.usage_changed(
                tx,
                counter.customer_id,
                counter.resource_id,
                pending.record,
                feature_id=counter.feature_id,
            )
        batch.clear()

    def _metered(self, feature_id: str, path: str) -> None:
        feature = self.up.catalog.features.get(feature_id)
        if feature is None:
            raise Invalid(f"unknown feature {feature_id!r}", field=f"{path}.featureId")
        if not feature.is_metered:
            raise Invalid(f"feature {feature_id!r} is not metered", field=f"{path}.featureId")

    def _report_one(
        self,
        tx: Tx,
        item: UsageItem,
        now: datetime,
        terms: _Terms,
        path: str,
        batch: _Batch,
    ) -> dict[str, Any]:
        self._metered(item.feature_id, path)
        if item.set_value and item.value < 0:
            raise Invalid("must be >= 0 with SET", field=f"{path}.value")
        entitlement = terms.feature(item.customer_id, item.resource_id, item.feature_id, path)
        counter = _counter(tx, batch, item.customer_id, item.resource_id, item.feature_id)
        record, delta = self._write_counter(
            tx,
            batch,
            item.customer_id,
            item.resource_id,
            item.feature_id,
            entitlement,
            counter,
            item,
            now,
        )
        return {
            "measurementId": str(uuid.uuid4()),
            "customerId": item.customer_id,
            "resourceId": item.resource_id,
            "featureId": item.feature_id,
            "usage": encode_usage_record(record),
            "credit": self._charge(tx, item.customer_id, item.resource_id, entitlement, delta, now),
        }

    def _write_counter(
        self,
        tx: Tx,
        batch: _Batch,
        customer_id: str,
        resource_id: str | None,
        feature_id: str,
        entitlement: FeatureEntitlement | None,
        counter: UsageCounter | None,
        item: UsageItem | None,
        now: datetime,
        meter_value: float | None = None,
        meter_state: str | None = None,
    ) -> tuple[UsageRecord, float]:
        """Update a counter within ``batch`` (written by :meth:`_flush`); ``counter`` is its
        current value (:func:`_counter`)."""
        start, end = _period(entitlement, now)
        base = counter.value if counter is not None and counter.period_start == start else 0.0
        if meter_value is not None:
            new = meter_value
        else:
            assert item is not None
            new = item.value if item.set_value else base + item.value
        version = tx.next_version()
        record = UsageRecord(new, start, end, now, version)
        batch[(customer_id, resource_id, feature_id)] = _Pending(
            UsageCounter(customer_id, feature_id, resource_id, new, start, end, now, version),
            meter_state,
            record,
        )
        return record, new - base

    def _charge(
        self,
        tx: Tx,
        customer_id: str,
        resource_id: str | None,
        entitlement: FeatureEntitlement | None,
        delta: float,
        now: datetime,
    ) -> dict[str, Any] | None:
        """Burn (or give back) credits for a usage change of a credit-backed feature."""
        if entitlement is None or entitlement.credit_rate is None:
            return None
        currency_id = entitlement.credit_rate.currency_id
        cost = delta * entitlement.credit_rate.amount
        grants = tx.grants_for(customer_id)
        deficit = tx.deficits_for(customer_id, resource_id).get(currency_id, 0.0)
        feature_id = entitlement.feature.id
        if cost >= 0:
            outcome = credits.burn(grants, deficit, currency_id, resource_id, cost, now, feature_id)
        else:
            outcome = credits.credit_back(grants, deficit, currency_id, resource_id, -cost, now)
        self._persist_burn(tx, customer_id, resource_id, currency_id, grants, outcome, now)
        # The wallet as just written: no need to read it back.
        record, granted = self._wallet_changed(
            tx, customer_id, resource_id, currency_id, now, (outcome.grants, outcome.deficit)
        )
        return {
            "currencyId": currency_id,
            "granted": granted,
            "consumed": outcome.consumed,
            "usage": encode_usage_record(record),
        }

    @staticmethod
    def _persist_burn(
        tx: Tx,
        customer_id: str,
        resource_id: str | None,
        currency_id: str,
        before: Sequence[CreditGrant],
        outcome: credits.Burn,
        now: datetime,
    ) -> None:
        for old, new in zip(before, outcome.grants, strict=True):
            if new.consumed != old.consumed:
                tx.put_grant(new)
        tx.set_deficit(customer_id, resource_id, currency_id, outcome.deficit)
        tx.add_ledger(customer_id, resource_id, outcome.entries, now)

    def _wallet_changed(
        self,
        tx: Tx,
        customer_id: str,
        resource_id: str | None,
        currency_id: str,
        now: datetime,
        written: tuple[Sequence[CreditGrant], float] | None = None,
    ) -> tuple[UsageRecord, float]:
        """Version the wallet's consumption and publish it; returns (record, granted).

        ``written``: the customer's grants and this pool's deficit as the caller just wrote
        them (else they are read).
        """
        if written is not None:
            grants, deficit = written
        else:
            grants = tx.grants_for(customer_id)
            deficit = tx.deficits_for(customer_id, resource_id).get(currency_id, 0.0)
        totals = credits.balance(grants, deficit, currency_id, resource_id, now)
        active = credits.active_grants(grants, currency_id, resource_id, now)
        ends = [
            g.expires_at for g in active if g.grant_type is GrantType.RECURRING and g.expires_at
        ]
        version = tx.next_version()
        record = UsageRecord(totals.consumed, None, min(ends) if ends else None, now, version)
        tx.put_usage(
            UsageCounter(
                customer_id,
                CREDIT_PREFIX + currency_id,
                resource_id,
                totals.consumed,
                None,
                record.period_end,
                now,
                version,
            )
        )
        self.up.publisher.usage_changed(
            tx, customer_id, resource_id, record, currency_id=currency_id
        )
        return record, totals.granted

    # ------------------------------------------------------------------ events

    def report_events(self, events: Sequence[EventItem]) -> tuple[int, int]:
        """Aggregate raw events into metered usage; returns (accepted, duplicates)."""
        now = self.up.clock()
        accepted = duplicates = 0
        batch: _Batch = {}
        with self.up.transaction() as tx:
            terms = _Terms(tx, self.up.publisher, now)
            for index, event in enumerate(events):
                scope = f"event:{event.customer_id}:{event.resource_id or ''}:{event.event_name}"
                if tx.idempotent_response(scope, event.idempotency_key) is not None:
                    duplicates += 1
                    continue
                path = f"events[{index}]"
                terms.customer(event.customer_id, event.resource_id, path)
                tx.remember_response(scope, event.idempotency_key, "{}", now)
                self._aggregate(tx, batch, event, terms, path, now)
                accepted += 1
            self._flush(tx, batch)
        return accepted, duplicates

    def _aggregate(
        self,
        tx: Tx,
        batch: _Batch,
        event: EventItem,
        terms: _Terms,
        path: str,
        now: datetime,
    ) -> None:
        for feature in self.up.catalog.features.values():
            definition = feature.event_meter
            if definition is None:
                continue
            meter = meters.Meter(
                feature.id,
                definition.event_name,
                dict(definition.filters),
                meters.Aggregation(definition.aggregation.value),
                definition.dimension,
            )
            if not meters.matches(meter, event.event_name, event.dimensions):
                continue
            entitlement = terms.feature(event.customer_id, event.resource_id, feature.id, path)
            start, _ = _period(entitlement, now)
            pending = batch.get((event.customer_id, event.resource_id, feature.id))
            counter: UsageCounter | None = None
            raw: str | None = None
            if pending is not None:
                counter, raw = pending.counter, pending.meter_state
            else:
                stored = tx.usage_counter(event.customer_id, event.resource_id, feature.id)
                if stored is not None:
                    counter, raw = stored
            state = meters.MeterState()
            if counter is not None and counter.period_start == start and raw:
                state = meters.state_from_json(json.loads(raw))
            updated = meters.apply(meter, state, event.dimensions)
            if updated is None:
                continue
            _, delta = self._write_counter(
                tx,
                batch,
                event.customer_id,
                event.resource_id,
                feature.id,
                entitlement,
                counter,
                None,
                now,
                meter_value=meters.value(meter, updated),
                meter_state=json.dumps(meters.state_to_json(updated)),
            )
            self._charge(tx, event.customer_id, event.resource_id, entitlement, delta, now)

    # ----------------------------------------------------------------- credits

    def grant_credits(self, grant: CreditGrant) -> CreditGrant:
        now = self.up.clock()
        with self.up.transaction() as tx:
            if tx.get_customer(grant.customer_id) is None:
                raise NotFound(f"customer {grant.customer_id!r} does not exist", field="customerId")
            if grant.currency_id not in self.up.catalog.currencies:
                raise Invalid(f"unknown currency {grant.currency_id!r}", field="currencyId")
            if grant.expires_at is not None and grant.expires_at <= now:
                raise Invalid("must be in the future", field="expiresAt")
            if grant.idempotency_key is not None:
                scope = f"grant:{grant.customer_id}"
                existing = tx.idempotent_response(scope, grant.idempotency_key)
                if existing is not None:
                    found = tx.get_grant(json.loads(existing)["id"])
                    assert found is not None
                    return found
                tx.remember_response(
                    scope, grant.idempotency_key, json.dumps({"id": grant.id}), now
                )
            grant = replace(grant, created_at=now, effective_at=grant.effective_at or now)
            deficit = tx.deficits_for(grant.customer_id, grant.resource_id).get(
                grant.currency_id, 0.0
            )
            grant, deficit, settled = credits.settle_deficit(grant, deficit)
            tx.put_grant(grant)
            tx.set_deficit(grant.customer_id, grant.resource_id, grant.currency_id, deficit)
            entry = credits.LedgerEntry(
                credits.LedgerEventType.CREDITS_GRANTED, grant.id, grant.currency_id, grant.amount
            )
            tx.add_ledger(
                grant.customer_id, grant.resource_id, [entry, *([settled] if settled else [])], now
            )
            self._wallet_changed(tx, grant.customer_id, grant.resource_id, grant.currency_id, now)
            self.up.publisher.refresh(tx, grant.customer_id, None, now)
        return grant

    def void_grant(self, grant_id: str) -> CreditGrant:
        now = self.up.clock()
        with self.up.transaction() as tx:
            grant = tx.get_grant(grant_id)
            if grant is None:
                raise NotFound(f"credit grant {grant_id!r} does not exist", field="grantId")
            if grant.voided_at is not None:
                return grant
            grant = replace(grant, voided_at=now)
            tx.put_grant(grant)
            entry = credits.LedgerEntry(
                credits.LedgerEventType.CREDITS_VOIDED,
                grant.id,
                grant.currency_id,
                grant.amount - grant.consumed,
            )
            tx.add_ledger(grant.customer_id, grant.resource_id, [entry], now)
            self._wallet_changed(tx, grant.customer_id, grant.resource_id, grant.currency_id, now)
            self.up.publisher.refresh(tx, grant.customer_id, None, now)
        return grant

    def balance(
        self, customer_id: str, currency_id: str, resource_id: str | None
    ) -> credits.Balance:
        with self.up.store.transaction() as tx:
            return self.read_balance(tx, customer_id, currency_id, resource_id)

    def read_balance(
        self, tx: Tx, customer_id: str, currency_id: str, resource_id: str | None
    ) -> credits.Balance:
        """:meth:`balance` within ``tx`` (e.g. a ``Store.snapshot``)."""
        if tx.get_customer(customer_id) is None:
            raise NotFound(f"customer {customer_id!r} does not exist", field="customerId")
        deficit = tx.deficits_for(customer_id, resource_id).get(currency_id, 0.0)
        return credits.balance(
            tx.grants_for(customer_id), deficit, currency_id, resource_id, self.up.clock()
        )

    def ledger(
        self, customer_id: str, currency_id: str | None, after: int, limit: int
    ) -> list[dict[str, Any]]:
        with self.up.store.transaction() as tx:
            return self.read_ledger(tx, customer_id, currency_id, after, limit)

    @staticmethod
    def read_ledger(
        tx: Tx, customer_id: str, currency_id: str | None, after: int, limit: int
    ) -> list[dict[str, Any]]:
        """:meth:`ledger` within ``tx`` (e.g. a ``Store.snapshot``)."""
        if tx.get_customer(customer_id) is None:
            raise NotFound(f"customer {customer_id!r} does not exist", field="customerId")
        return tx.ledger(customer_id, currency_id, after, limit)


def _counter(
    tx: Tx, batch: _Batch, customer_id: str, resource_id: str | None, feature_id: str
) -> UsageCounter | None:
    """The counter as the batch left it, else as stored."""
    pending = batch.get((customer_id, resource_id, feature_id))
    if pending is not None:
        return pending.counter
    stored = tx.usage_counter(customer_id, resource_id, feature_id)
    return None if stored is None else stored[0]


def _period(
    entitlement: FeatureEntitlement | None, now: datetime
) -> tuple[datetime | None, datetime | None]:
    if entitlement is None or entitlement.reset_period is None:
        return None, None
    if entitlement.usage_period_anchor is None:
        return None, None
    return current_period(entitlement.usage_period_anchor, entitlement.reset_period, now)


def _replayed(result: dict[str, Any]) -> dict[str, Any]:
    # A repeated idempotency key answers as before but charges nothing again.
    if result.get("credit"):
        result["credit"] = {**result["credit"], "consumed": 0.0}
    return result
