"""Effective entitlements: what one (customer, resource) may use at one instant.

A pure function of (catalog, customer facts, now). Every live subscription (its
plan with inheritance, then its add-ons), every customer-level subscription and
every live promotion is a *source*; sources are merged feature by feature with
Stigg's "most generous wins" rule. The result also says when it will next
change by itself (trial end, period end, grant expiry...): that instant is the
``valid_until`` the sidecar refetches after, and when upstream recomputes.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from entitlements.model.state import (
    CreditEntitlement,
    CreditRate,
    Currency,
    CustomerSnapshot,
    DenialReason,
    EntitlementState,
    FeatureEntitlement,
    FeatureType,
    ResetPeriod,
    UsageRecord,
)
from entitlements.periods import current_period
from upstream.catalog.model import (
    AddonBehavior,
    Catalog,
    CreditConfig,
    EntitlementDef,
    FeatureDef,
    ResetAnchor,
)
from upstream.domain import (
    CreditGrant,
    CustomerFacts,
    GrantType,
    PromotionalEntitlement,
    Subscription,
    SubscriptionStatus,
)

__all__ = ["compute_snapshot", "feature_entitlement"]


@dataclass(frozen=True, slots=True)
class _Grant:
    """One source's grant of one feature, add-ons and per-unit scaling applied."""

    # None: no cap of its own (unlimited, a credit-backed feature capped by its
    # wallet alone, or a boolean/enum feature where there is nothing to cap).
    limit: float | None = None
    unlimited: bool = False
    soft: bool = False
    enum_values: frozenset[str] = frozenset()
    reset_period: ResetPeriod | None = None
    anchor: datetime | None = None
    credit_rate: CreditRate | None = None

    @property
    def rank(self) -> tuple[bool, float]:
        """Generosity: no cap beats any cap, a higher cap beats a lower one."""
        if self.unlimited or self.limit is None:
            return (True, 0.0)
        return (False, self.limit)


_Grants = dict[str, _Grant]


def compute_snapshot(
    catalog: Catalog, facts: CustomerFacts, now: datetime, *, customer_id: str
) -> tuple[CustomerSnapshot, datetime | None]:
    """The snapshot of (``customer_id``, ``facts.resource_id``) at ``now``.

    Returns the snapshot (``version`` 0 and no ``updated_at``: the store assigns
    both) and the next instant after ``now`` at which the result changes merely
    because time passes, or None if it never does.

    Raises:
        ValueError: ``facts.customer`` is another customer, or ``now`` is naive.
    """
    now = _checked(facts, now, customer_id)
    blocked = _blocking_reason(facts, now)
    if blocked is None:
        return _compute(catalog, facts, now, customer_id)
    state = EntitlementState(customer_id, facts.resource_id, blocked)
    # Only a scheduled archival can change a blocked customer's answer by itself.
    archival = facts.customer.archived_at if facts.customer else None
    return CustomerSnapshot(state), archival if archival and archival > now else None


def feature_entitlement(
    catalog: Catalog, facts: CustomerFacts, now: datetime, *, customer_id: str, feature_id: str
) -> FeatureEntitlement | None:
    """One feature of :func:`compute_snapshot`'s state, computed alone.

    Equal to ``compute_snapshot(...)[0].state.features.get(feature_id)`` except that
    ``valid_until`` is None: that instant depends on every feature and wallet of the customer,
    and this reads only what decides the one feature. Usage reports need the feature's period
    and credit rate, not the customer's whole state; only ``facts.customer``,
    ``facts.subscriptions`` and ``facts.promotions`` are read (grants, deficits and usage may be
    left empty).

    Raises:
        ValueError: as :func:`compute_snapshot`.
    """
    now = _checked(facts, now, customer_id)
    feature = catalog.features.get(feature_id)
    if feature is None or _blocking_reason(facts, now) is not None:
        return None
    _, live, promotions = _sources(facts, now)
    grant = _merge_sources(catalog, live, promotions, now, only=feature_id).get(feature_id)
    return None if grant is None else _feature_entitlement(feature, grant, None)


def _checked(facts: CustomerFacts, now: datetime, customer_id: str) -> datetime:
    """``now`` in UTC, after checking it is aware and that the facts are ``customer_id``'s."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be timezone-aware, got {now!r}")
    if facts.customer is not None and facts.customer.id != customer_id:
        raise ValueError(f"facts are for customer {facts.customer.id!r}, not {customer_id!r}")
    return now.astimezone(UTC)


def _promotion_is_live(promotion: PromotionalEntitlement, now: datetime) -> bool:
    revoked = promotion.revoked_at is not None and promotion.revoked_at <= now
    expired = promotion.expires_at is not None and promotion.expires_at <= now
    return not revoked and not expired


def _blocking_reason(facts: CustomerFacts, now: datetime) -> DenialReason | None:
    """A reason that leaves the customer with no entitlements at all."""
    customer = facts.customer
    if customer is None:
        return DenialReason.CUSTOMER_NOT_FOUND
    if customer.archived_at is not None and customer.archived_at <= now:
        return DenialReason.CUSTOMER_IS_ARCHIVED
    rid = facts.resource_id
    if rid is not None and all(s.resource_id != rid for s in facts.subscriptions):
        return DenialReason.CUSTOMER_RESOURCE_NOT_FOUND
    return None


def _compute(
    catalog: Catalog, facts: CustomerFacts, now: datetime, customer_id: str
) -> tuple[CustomerSnapshot, datetime | None]:
    subscriptions, live, promotions = _sources(facts, now)
    grants = [g for g in facts.grants if g.resource_id in (None, facts.resource_id)]
    merged = _merge_sources(catalog, live, promotions, now)
    feature_usage = {
        fid: _usage_record(grant, facts, fid, now)
        for fid, grant in merged.items()
        if catalog.features[fid].is_metered
    }
    configs = _credit_configs(catalog, live)
    changes = [
        *_scheduled_changes(facts, subscriptions, grants, now),
        *(record.period_end for record in feature_usage.values() if record.period_end),
        *_credit_period_ends(configs, now),
    ]
    valid_until = min((t for t in changes if t > now), default=None)
    features = {
        fid: _feature_entitlement(catalog.features[fid], grant, valid_until)
        for fid, grant in merged.items()
    }
    credits, credit_usage = _wallets(catalog, facts, grants, configs, now, valid_until)
    reason = None if live or promotions else DenialReason.NO_ACTIVE_SUBSCRIPTION
    state = EntitlementState(customer_id, facts.resource_id, reason, features, credits)
    return CustomerSnapshot(state, feature_usage, credit_usage), valid_until


# --------------------------------------------------------------------------- sources


def _sources(
    facts: CustomerFacts, now: datetime
) -> tuple[list[Subscription], list[Subscription], list[PromotionalEntitlement]]:
    """(subscriptions in scope, the live ones in source order, live promotions in source order)."""
    scope = (None, facts.resource_id)
    # Customer-level subscriptions and promotions apply to every resource.
    subscriptions = [s for s in facts.subscriptions if s.resource_id in scope]
    live = sorted((s for s in subscriptions if s.is_live(now)), key=lambda s: (s.start_date, s.id))
    promotions = sorted(
        (p for p in facts.promotions if p.resource_id in scope and _promotion_is_live(p, now)),
        key=lambda p: p.id,
    )
    return subscriptions, live, promotions


def _merge_sources(
    catalog: Catalog,
    subscriptions: Iterable[Subscription],
    promotions: Iterable[PromotionalEntitlement],
    now: datetime,
    *,
    only: str | None = None,
) -> _Grants:
    """Most generous wins across sources, folded in source order so that ties go to the earlier.

    With ``only``, just that feature: features never mix, so leaving the others out of every
    fold changes nothing for it.
    """
    merged: _Grants = {}
    for sub in subscriptions:
        for fid, grant in _subscription_grants(catalog, sub, now, only).items():
            _put(merged, fid, grant, _more_generous)
    for promotion in promotions:
        if only is not None and promotion.feature_id != only:
            continue
        feature = catalog.features.get(promotion.feature_id)
        if feature is not None:
            _put(merged, feature.id, _promotion_grant(feature, promotion, now), _more_generous)
    return merged


def _subscription_grants(
    catalog: Catalog, sub: Subscription, now: datetime, only: str | None = None
) -> _Grants:
    # A plan or add-on removed from the catalog grants nothing rather than failing the customer.
    plan_defs = (
        catalog.resolved_plan_entitlements(sub.plan_id) if sub.plan_id in catalog.plans else {}
    )
    if only is not None:
        plan_defs = {only: plan_defs[only]} if only in plan_defs else {}
    grants = {fid: _from_def(d, sub, 1, now) for fid, d in plan_defs.items()}
    addon_defs = [
        (d, qty)
        for addon_id, qty in sorted(sub.addons.items())
        if qty > 0 and addon_id in catalog.addons
        for d in catalog.addons[addon_id].entitlements
        if only is None or d.feature_id == only
    ]
    # Overrides first, so that an increment bought alongside adds to the replacement.
    overrides: _Grants = {}
    for d, qty in addon_defs:
        if d.behavior is AddonBehavior.OVERRIDE:
            _put(overrides, d.feature_id, _from_def(d, sub, qty, now), _more_generous)
    grants.update(overrides)
    for d, qty in addon_defs:
        if d.behavior is AddonBehavior.INCREMENT:
            _put(grants, d.feature_id, _from_def(d, sub, qty, now), _increment)
    return {fid: grant for fid, grant in grants.items() if fid in catalog.features}


def _from_def(d: EntitlementDef, sub: Subscription, quantity: int, now: datetime) -> _Grant:
    scale = float(quantity)
    if d.per_unit:
        scale *= sub.billable_quantities.get(d.feature_id, 1.0)
    anchor = None
    if d.reset_period is not None:
        calendar = d.reset_anchor is ResetAnchor.CALENDAR
        anchor = _calendar_start(d.reset_period, now) if calendar else sub.start_date
    return _Grant(
        limit=None if d.value is None else d.value * scale,
        unlimited=d.unlimited,
        soft=d.soft_limit,
        enum_values=frozenset(d.enum_values),
        reset_period=d.reset_period,
        anchor=anchor,
        credit_rate=d.credit_rate,
    )


def _promotion_grant(
    feature: FeatureDef, promotion: PromotionalEntitlement, now: datetime
) -> _Grant:
    period = _reset_period(promotion.reset_period)
    numeric = feature.feature_type is FeatureType.NUMBER
    return _Grant(
        # The evaluator reads a missing limit as 0, so say so rather than "uncapped".
        limit=(promotion.value or 0.0) if numeric else None,
        unlimited=promotion.unlimited,
        soft=promotion.soft_limit,
        enum_values=frozenset(promotion.enum_values),
        reset_period=period,
        # A promotion has no start date of its own to count periods from.
        anchor=_calendar_start(period, now) if period is not None else None,
    )


def _reset_period(text: str | None) -> ResetPeriod | None:
    # An unreadable stored value must not take the whole customer down; it never resets.
    return ResetPeriod(text) if text in {p.value for p in ResetPeriod} else None


def _put(
    grants: _Grants, fid: str, grant: _Grant, combine: Callable[[_Grant, _Grant], _Grant]
) -> None:
    grants[fid] = combine(grants[fid], grant) if fid in grants else grant


def _limits(
    a: float | None, b: float | None, combine: Callable[[float, float], float]
) -> float | None:
    # "No cap of its own" absorbs any number, whether adding or taking the larger.
    return None if a is None or b is None else combine(a, b)


def _increment(base: _Grant, extra: _Grant) -> _Grant:
    return replace(
        base,
        limit=_limits(base.limit, extra.limit, operator.add),
        unlimited=base.unlimited or extra.unlimited,
        soft=base.soft or extra.soft,
        enum_values=base.enum_values | extra.enum_values,
        credit_rate=base.credit_rate or extra.credit_rate,
    )


def _more_generous(first: _Grant, second: _Grant) -> _Grant:
    # The reset cadence travels with the most generous grant; a tie keeps the earlier source's.
    winner = second if second.rank > first.rank else first
    return _Grant(
        limit=_limits(first.limit, second.limit, max),
        unlimited=first.unlimited or second.unlimited,
        soft=first.soft or second.soft,
        enum_values=first.enum_values | second.enum_values,
        reset_period=winner.reset_period,
        anchor=winner.anchor,
        credit_rate=first.credit_rate or second.credit_rate,
    )


def _calendar_start(period: ResetPeriod, now: datetime) -> datetime:
    """Start of the calendar hour/day/ISO week/month/year containing ``now``."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    starts = {
        ResetPeriod.HOUR: hour,
        ResetPeriod.DAY: day,
        ResetPeriod.WEEK: day - timedelta(days=day.weekday()),
        ResetPeriod.MONTH: day.replace(day=1),
        ResetPeriod.YEAR: day.replace(month=1, day=1),
    }
    return starts[period]


# --------------------------------------------------------------------------- output


def _feature_entitlement(
    feature: FeatureDef, grant: _Grant, valid_until: datetime | None
) -> FeatureEntitlement:
    number = feature.feature_type is FeatureType.NUMBER
    metered = feature.is_metered
    return FeatureEntitlement(
        feature=feature.as_feature(),
        usage_limit=grant.limit if number and not grant.unlimited else None,
        unlimited=number and grant.unlimited,
        soft_limit=grant.soft,
        enum_values=_ordered_values(feature, grant.enum_values),
        reset_period=grant.reset_period if metered else None,
        usage_period_anchor=grant.anchor if metered else None,
        credit_rate=grant.credit_rate if metered else None,
        valid_until=valid_until,
    )


def _ordered_values(feature: FeatureDef, values: frozenset[str]) -> tuple[str, ...]:
    if feature.feature_type is not FeatureType.ENUM:
        return ()
    known = tuple(v for v in feature.enum_values if v in values)
    # Values a promotion granted outside the catalog's list still count, after the known ones.
    return known + tuple(sorted(values - set(feature.enum_values)))


def _usage_record(grant: _Grant, facts: CustomerFacts, fid: str, now: datetime) -> UsageRecord:
    counter = facts.usage.get(fid)
    version = counter.version if counter is not None else 0
    if grant.reset_period is None or grant.anchor is None:
        if counter is None:
            return UsageRecord()
        return UsageRecord(counter.value, None, None, counter.updated_at, version)
    start, end = current_period(grant.anchor, grant.reset_period, now)
    if counter is None or counter.period_start != start:
        # No counter yet, or one left over from an earlier period: nothing used in this one.
        return UsageRecord(0.0, start, end, None, version)
    return UsageRecord(counter.value, start, end, counter.updated_at, version)


def _credit_configs(
    catalog: Catalog, subscriptions: Iterable[Subscription]
) -> list[tuple[Subscription, CreditConfig]]:
    """Recurring credit configs of live subscriptions: plan (inherited) and add-ons."""
    configs: list[tuple[Subscription, CreditConfig]] = []
    for sub in subscriptions:
        if sub.plan_id in catalog.plans:
            configs += [(sub, c) for c in catalog.resolved_plan_credits(sub.plan_id).values()]
        for addon_id, qty in sorted(sub.addons.items()):
            if qty > 0 and addon_id in catalog.addons:
                configs += [(sub, c) for c in catalog.addons[addon_id].credits]
    return configs


def _grant_is_active(grant: CreditGrant, now: datetime) -> bool:
    return (
        (grant.voided_at is None or grant.voided_at > now)
        and (grant.effective_at is None or grant.effective_at <= now)
        and (grant.expires_at is None or grant.expires_at > now)
    )


def _wallets(
    catalog: Catalog,
    facts: CustomerFacts,
    grants: Iterable[CreditGrant],
    configs: Iterable[tuple[Subscription, CreditConfig]],
    now: datetime,
    valid_until: datetime | None,
) -> tuple[dict[str, CreditEntitlement], dict[str, UsageRecord]]:
    active = [g for g in grants if _grant_is_active(g, now)]
    soft: dict[str, bool] = {}
    for _, config in configs:
        soft[config.currency_id] = soft.get(config.currency_id, False) or config.soft_limit
    credits: dict[str, CreditEntitlement] = {}
    usage: dict[str, UsageRecord] = {}
    for cid in sorted({g.currency_id for g in active} | soft.keys()):
        mine = [g for g in active if g.currency_id == cid]
        currency = catalog.currencies.get(cid) or Currency(cid, cid)
        granted = float(sum(g.amount for g in mine))
        credits[cid] = CreditEntitlement(currency, granted, soft.get(cid, False), None, valid_until)
        consumed = float(sum(g.consumed for g in mine) + facts.deficits.get(cid, 0.0))
        recurring_ends = [
            g.expires_at for g in mine if g.grant_type is GrantType.RECURRING and g.expires_at
        ]
        usage[cid] = UsageRecord(consumed, None, min(recurring_ends, default=None))
    return credits, usage


# --------------------------------------------------------------------------- time


def _scheduled_changes(
    facts: CustomerFacts,
    subscriptions: Iterable[Subscription],
    grants: Iterable[CreditGrant],
    now: datetime,
) -> Iterator[datetime]:
    """Instants at which something starts, ends or expires (some may be past; callers filter)."""
    if facts.customer is not None and facts.customer.archived_at is not None:
        yield facts.customer.archived_at
    for sub in subscriptions:
        # Only these instants flip Subscription.is_live.
        if sub.status in (SubscriptionStatus.TRIAL, SubscriptionStatus.ACTIVE):
            yield from _present(sub.start_date, sub.cancel_at)
        if sub.status is SubscriptionStatus.TRIAL:
            yield from _present(sub.trial_end)
    scope = (None, facts.resource_id)
    for promotion in facts.promotions:
        if promotion.resource_id in scope and _promotion_is_live(promotion, now):
            yield from _present(promotion.expires_at, promotion.revoked_at)
    for grant in grants:
        if grant.voided_at is None or grant.voided_at > now:
            yield from _present(grant.effective_at, grant.expires_at, grant.voided_at)


def _credit_period_ends(
    configs: Iterable[tuple[Subscription, CreditConfig]], now: datetime
) -> Iterator[datetime]:
    # Recurring credits are reissued every cadence, counted from the subscription start.
    for sub, config in configs:
        yield current_period(sub.start_date, config.cadence.period, now)[1]


def _present(*instants: datetime | None) -> Iterator[datetime]:
    return (t for t in instants if t is not None)
