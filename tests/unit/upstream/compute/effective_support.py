"""A small catalog and fact builders shared by the effective-entitlement tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from entitlements.model.state import CustomerSnapshot
from upstream.catalog import Catalog, CreditConfig, EntitlementDef, Plan, parse_catalog
from upstream.compute import compute_snapshot
from upstream.domain import (
    CreditGrant,
    Customer,
    CustomerFacts,
    GrantType,
    PromotionalEntitlement,
    Subscription,
    SubscriptionStatus,
    UsageCounter,
)

CUSTOMER_ID = "cus-1"
# A Wednesday afternoon; START is a Saturday at the end of January, so month periods clamp.
NOW = datetime(2026, 3, 18, 15, 45, 30, tzinfo=UTC)
START = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

CATALOG_YAML = """
currencies:
  - {id: credits, displayName: Credits, unitSingular: credit, unitPlural: credits,
     metadata: {color: blue}}
  - {id: gpu, displayName: GPU credits}
features:
  - {id: flag, type: BOOLEAN, displayName: Flag}
  - {id: sso, type: BOOLEAN}
  - {id: seats, type: NUMBER, units: seat, unitsPlural: seats}
  - {id: calls, type: NUMBER, meter: INCREMENTAL, displayName: API calls, units: call,
     unitsPlural: calls}
  - {id: storage, type: NUMBER, meter: FLUCTUATING}
  - {id: tier, type: ENUM, enumValues: [bronze, silver, gold, platinum]}
  - {id: tokens, type: NUMBER, meter: INCREMENTAL}
products:
  - {id: core}
  - {id: ws, multipleSubscriptions: true}
plans:
  - id: basic
    product: core
    entitlements:
      - {feature: flag}
      - {feature: seats, value: 3}
      - {feature: calls, limit: 1000, resetPeriod: MONTH}
      - {feature: storage, limit: 10}
      - {feature: tier, enumValues: [bronze]}
      - {feature: tokens, creditRate: {currency: credits, amount: 2}}
    credits: [{currency: credits, amount: 100, cadence: MONTH}]
  - id: pro
    product: core
    extends: basic
    trialDays: 14
    entitlements:
      - {feature: sso}
      - {feature: calls, limit: 5000, resetPeriod: WEEK}
      - {feature: tier, enumValues: [silver]}
  - id: top
    product: core
    extends: pro
    entitlements:
      - {feature: storage, unlimited: true}
  - id: seat-plan
    product: core
    entitlements:
      - {feature: seats, value: 2, perUnit: true}
      - {feature: calls, limit: 100, perUnit: true, resetPeriod: DAY}
  - id: static
    product: core
    entitlements:
      - {feature: flag}
  - id: ws-plan
    product: ws
    entitlements:
      - {feature: storage, limit: 50, softLimit: true}
      - {feature: calls, limit: 2000, resetPeriod: DAY}
      - {feature: tier, enumValues: [gold]}
      - {feature: tokens, limit: 10, creditRate: {currency: gpu, amount: 5}}
    credits: [{currency: gpu, amount: 10, cadence: YEAR, softLimit: true}]
addons:
  - id: more-calls
    product: core
    entitlements:
      - {feature: calls, limit: 500}
      - {feature: tier, enumValues: [gold]}
      - {feature: sso}
  - id: big-storage
    product: core
    entitlements:
      - {feature: storage, limit: 200, behavior: OVERRIDE}
      - {feature: seats, value: 10, behavior: OVERRIDE}
  - id: more-seats
    product: core
    entitlements: [{feature: seats, value: 1, perUnit: true}]
  - id: unlimited-calls
    product: core
    entitlements: [{feature: calls, unlimited: true}]
  - id: bonus-credits
    product: core
    credits: [{currency: credits, amount: 50, cadence: YEAR, softLimit: true}]
"""

CATALOG = parse_catalog(CATALOG_YAML, "test-catalog.yaml")


def with_plan(
    plan_id: str,
    *entitlements: EntitlementDef,
    credits: tuple[CreditConfig, ...] = (),
    catalog: Catalog = CATALOG,
) -> Catalog:
    plan = Plan(plan_id, "core", entitlements=entitlements, credits=credits)
    return replace(catalog, plans={**catalog.plans, plan_id: plan})


def sub(
    plan_id: str = "basic",
    *,
    sub_id: str = "s1",
    resource_id: str | None = None,
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE,
    start: datetime = START,
    **kw: Any,
) -> Subscription:
    return Subscription(sub_id, CUSTOMER_ID, plan_id, resource_id, status, start, **kw)


def promo(feature_id: str, promo_id: str = "p1", **kw: Any) -> PromotionalEntitlement:
    return PromotionalEntitlement(promo_id, CUSTOMER_ID, feature_id, **kw)


def grant(
    currency_id: str = "credits",
    amount: float = 100.0,
    grant_type: GrantType = GrantType.PAID,
    grant_id: str = "g1",
    **kw: Any,
) -> CreditGrant:
    return CreditGrant(grant_id, CUSTOMER_ID, currency_id, amount, grant_type, **kw)


def counter(
    feature_id: str, value: float, period_start: datetime | None, version: int = 7
) -> UsageCounter:
    return UsageCounter(
        CUSTOMER_ID, feature_id, None, value, period_start, None, NOW - HOUR, version
    )


def facts(
    *subscriptions: Subscription,
    promotions: tuple[PromotionalEntitlement, ...] = (),
    grants: tuple[CreditGrant, ...] = (),
    resource_id: str | None = None,
    usage: Mapping[str, UsageCounter] | None = None,
    deficits: Mapping[str, float] | None = None,
    customer: Customer | None = None,
) -> CustomerFacts:
    return CustomerFacts(
        customer=customer if customer is not None else Customer(CUSTOMER_ID),
        resource_id=resource_id,
        subscriptions=subscriptions,
        promotions=promotions,
        grants=grants,
        deficits=deficits or {},
        usage=usage or {},
    )


def run(
    customer_facts: CustomerFacts, *, catalog: Catalog = CATALOG, now: datetime = NOW
) -> tuple[CustomerSnapshot, datetime | None]:
    return compute_snapshot(catalog, customer_facts, now, customer_id=CUSTOMER_ID)


def snapshot(customer_facts: CustomerFacts, **kw: Any) -> CustomerSnapshot:
    return run(customer_facts, **kw)[0]
