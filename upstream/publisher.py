"""Turning committed facts into versioned states and change events, inside the caller's tx."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from entitlements.model.events import EVENT_SCHEMA_VERSION, ChangeEvent, EventKind, encode_event
from entitlements.model.state import (
    CustomerSnapshot,
    FeatureEntitlement,
    UsageRecord,
    encode_state_dict,
)
from upstream.catalog.model import Catalog
from upstream.compute.effective import compute_snapshot, feature_entitlement
from upstream.domain import CustomerFacts
from upstream.store.sqlite import Tx


def source_facts(tx: Tx, customer_id: str, resource_id: str | None) -> CustomerFacts:
    """The facts that decide which features a (customer, resource) has and on what terms:
    the customer, subscriptions and promotions; no grants, deficits or usage."""
    customer = tx.get_customer(customer_id)
    if customer is None:
        return CustomerFacts(customer=None, resource_id=resource_id)
    return CustomerFacts(
        customer=customer,
        resource_id=resource_id,
        subscriptions=tuple(tx.subscriptions_for(customer_id)),
        promotions=tuple(tx.promotions_for(customer_id)),
    )


def facts(tx: Tx, customer_id: str, resource_id: str | None) -> CustomerFacts:
    found = source_facts(tx, customer_id, resource_id)
    if found.customer is None:
        return found
    return replace(
        found,
        grants=tuple(tx.grants_for(customer_id)),
        deficits=tx.deficits_for(customer_id, resource_id),
        usage=tx.usage_for(customer_id, resource_id),
    )


#: Usage rows under this prefix version a wallet's consumption (see upstream.metering).
CREDIT_PREFIX = "$credit:"


def _with_wallet_versions(snapshot: CustomerSnapshot, found: CustomerFacts) -> CustomerSnapshot:
    """Stamp each wallet's usage record with the version of its last consumption change.

    The computation knows balances but not versions; without them a consumer
    could not tell this snapshot's wallet from an older usage event's.
    """
    if not snapshot.credit_usage:
        return snapshot
    stamped = {}
    for currency_id, record in snapshot.credit_usage.items():
        counter = found.usage.get(CREDIT_PREFIX + currency_id)
        if counter is not None:
            record = replace(record, version=counter.version, updated_at=counter.updated_at)
        stamped[currency_id] = record
    return replace(snapshot, credit_usage=stamped)


def digest(snapshot: CustomerSnapshot) -> str:
    """Identity of the entitlement state alone: usage and versions do not count."""
    body = encode_state_dict(replace(snapshot.state, version=0, updated_at=None))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class StatePublisher:
    """Recomputes (customer, resource) states and writes an event when one changed."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def compute(
        self,
        tx: Tx,
        customer_id: str,
        resource_id: str | None,
        now: datetime,
        found: CustomerFacts | None = None,
    ) -> tuple[CustomerSnapshot, datetime | None]:
        """The state as of ``now``; ``found``: the facts, if the caller has read them."""
        if found is None:
            found = facts(tx, customer_id, resource_id)
        snapshot, next_change = compute_snapshot(self.catalog, found, now, customer_id=customer_id)
        return _with_wallet_versions(snapshot, found), next_change

    def feature(
        self, sources: CustomerFacts, customer_id: str, feature_id: str, now: datetime
    ) -> FeatureEntitlement | None:
        """One feature of the state :meth:`compute` would give, from :func:`source_facts` alone
        (``valid_until`` left out: see ``effective.feature_entitlement``)."""
        return feature_entitlement(
            self.catalog, sources, now, customer_id=customer_id, feature_id=feature_id
        )

    def current(
        self, tx: Tx, customer_id: str, resource_id: str | None, now: datetime
    ) -> CustomerSnapshot:
        """The state as of ``now``, publishing it first if it changed unnoticed (time passed)."""
        found = facts(tx, customer_id, resource_id)
        if found.customer is None:
            snapshot, _ = self.compute(tx, customer_id, resource_id, now, found)
            return snapshot
        return self._refresh_one(tx, customer_id, resource_id, now, found)

    def peek(
        self, tx: Tx, customer_id: str, resource_id: str | None, now: datetime
    ) -> CustomerSnapshot | None:
        """What :meth:`current` returns, if it would write nothing; else None.

        Reads only, so ``tx`` may be a read-only snapshot. :meth:`current` writes when the state
        is not the one published (time changed it, or it was never stored) or its next change
        moved.
        """
        found = facts(tx, customer_id, resource_id)
        snapshot, next_change = self.compute(tx, customer_id, resource_id, now, found)
        if found.customer is None:
            return snapshot
        stored = tx.state_digest(customer_id, resource_id)
        if stored is None or stored[1] != digest(snapshot) or stored[2] != next_change:
            return None
        return replace(snapshot, state=replace(snapshot.state, version=stored[0]))

    def refresh(
        self,
        tx: Tx,
        customer_id: str,
        resources: Iterable[str | None] | None,
        now: datetime,
    ) -> dict[str | None, CustomerSnapshot]:
        """Recompute the given keys (default: every key known for the customer)."""
        if resources is None:
            keys: set[str | None] = {None, *tx.state_resources(customer_id)}
        else:
            keys = set(resources)
        out: dict[str | None, CustomerSnapshot] = {}
        for resource_id in sorted(keys, key=lambda r: r or ""):
            out[resource_id] = self._refresh_one(tx, customer_id, resource_id, now)
        return out

    def _refresh_one(
        self,
        tx: Tx,
        customer_id: str,
        resource_id: str | None,
        now: datetime,
        found: CustomerFacts | None = None,
    ) -> CustomerSnapshot:
        snapshot, next_change = self.compute(tx, customer_id, resource_id, now, found)
        new_digest = digest(snapshot)
        stored = tx.state_digest(customer_id, resource_id)
        if stored is not None and stored[1] == new_digest:
            # Unchanged: a plain read must not turn into a (fsync'd) write.
            if stored[2] != next_change:
                tx.put_state(customer_id, resource_id, stored[0], new_digest, next_change)
            return replace(snapshot, state=replace(snapshot.state, version=stored[0]))
        version = tx.next_version()
        snapshot = replace(snapshot, state=replace(snapshot.state, version=version, updated_at=now))
        tx.put_state(customer_id, resource_id, version, new_digest, next_change)
        self._append(
            tx,
            ChangeEvent(
                kind=EventKind.ENTITLEMENTS,
                seq=0,
                customer_id=customer_id,
                resource_id=resource_id,
                version=version,
                committed_at=now,
                snapshot=snapshot,
            ),
        )
        return snapshot

    def usage_changed(
        self,
        tx: Tx,
        customer_id: str,
        resource_id: str | None,
        record: UsageRecord,
        *,
        feature_id: str | None = None,
        currency_id: str | None = None,
    ) -> None:
        self._append(
            tx,
            ChangeEvent(
                kind=EventKind.USAGE,
                seq=0,
                customer_id=customer_id,
                resource_id=resource_id,
                version=record.version,
                committed_at=record.updated_at or datetime.now().astimezone(),
                feature_id=feature_id,
                currency_id=currency_id,
                usage=record,
            ),
        )

    @staticmethod
    def _append(tx: Tx, event: ChangeEvent) -> None:
        tx.append_outbox(
            event.customer_id,
            event.resource_id,
            event.kind.value,
            event.committed_at,
            _around_seq(event),
        )


def _around_seq(event: ChangeEvent) -> tuple[str, str]:
    """The encoded event split where its ``seq`` goes: the store puts the seq in between.

    The envelope starts with ``schemaVersion``, ``kind`` and ``seq`` (encode_event_dict), so
    the first ``"seq":0,`` is the envelope's own; checked, since the feed depends on it.
    """
    encoded = encode_event(replace(event, seq=0)).decode()
    head, mark, tail = encoded.partition(_SEQ_MARK)
    if not mark or head != f'{{"schemaVersion":{EVENT_SCHEMA_VERSION},"kind":"{event.kind.value}",':
        raise AssertionError(f"unexpected event envelope: {encoded[:120]!r}")
    return head + '"seq":', "," + tail


_SEQ_MARK = '"seq":0,'
