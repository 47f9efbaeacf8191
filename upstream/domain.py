"""Upstream's customer-side records: what the store persists and the computation reads.

The catalog (features, plans, add-ons, currencies) lives in ``upstream.catalog``;
these are the per-customer facts. Everything is immutable; the store builds
them from rows and the effective-entitlement computation is a pure function of
(catalog, these records, now).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class SubscriptionStatus(StrEnum):
    TRIAL = "TRIAL"
    ACTIVE = "ACTIVE"
    CANCELLED = "CANCELLED"
    # Replaced by another subscription of the same product (upgrade, downgrade, trial -> paid).
    REPLACED = "REPLACED"


class GrantType(StrEnum):
    PAID = "PAID"
    PROMOTIONAL = "PROMOTIONAL"
    RECURRING = "RECURRING"


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str | None = None
    email: str | None = None
    archived_at: datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer_id: str
    plan_id: str
    # None for products with one subscription per customer.
    resource_id: str | None
    status: SubscriptionStatus
    start_date: datetime
    trial_end: datetime | None = None
    # Scheduled cancellation: access ends at this instant.
    cancel_at: datetime | None = None
    ended_at: datetime | None = None
    # add-on id -> quantity (>= 1)
    addons: Mapping[str, int] = field(default_factory=dict)
    # feature id -> purchased quantity for per-unit ("billable") features, e.g. seats
    billable_quantities: Mapping[str, float] = field(default_factory=dict)

    def is_live(self, now: datetime) -> bool:
        """Grants entitlements at ``now``."""
        if self.status not in (SubscriptionStatus.TRIAL, SubscriptionStatus.ACTIVE):
            return False
        if self.start_date > now:
            return False
        if self.cancel_at is not None and self.cancel_at <= now:
            return False
        return not (
            self.status is SubscriptionStatus.TRIAL
            and self.trial_end is not None
            and self.trial_end <= now
        )


@dataclass(frozen=True, slots=True)
class PromotionalEntitlement:
    """A feature granted to one customer outside any plan, optionally until ``expires_at``."""

    id: str
    customer_id: str
    feature_id: str
    resource_id: str | None = None
    value: float | None = None
    unlimited: bool = False
    soft_limit: bool = False
    enum_values: tuple[str, ...] = ()
    reset_period: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreditGrant:
    id: str
    customer_id: str
    currency_id: str
    amount: float
    grant_type: GrantType
    resource_id: str | None = None
    # Lower burns first.
    priority: int = 0
    effective_at: datetime | None = None
    expires_at: datetime | None = None
    voided_at: datetime | None = None
    consumed: float = 0.0
    created_at: datetime | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class UsageCounter:
    """Usage of one feature by one (customer, resource) in one usage period."""

    customer_id: str
    feature_id: str
    resource_id: str | None
    value: float
    period_start: datetime | None
    period_end: datetime | None
    updated_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    """Everything the effective-entitlement computation needs for one (customer, resource)."""

    customer: Customer | None
    resource_id: str | None
    subscriptions: tuple[Subscription, ...] = ()
    promotions: tuple[PromotionalEntitlement, ...] = ()
    grants: tuple[CreditGrant, ...] = ()
    # Credits already burnt beyond all grants (the overdraft), per currency.
    deficits: Mapping[str, float] = field(default_factory=dict)
    # feature id -> counter of the *current* period (may be absent)
    usage: Mapping[str, UsageCounter] = field(default_factory=dict)
