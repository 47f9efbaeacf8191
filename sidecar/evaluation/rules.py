"""The access rules: one feature or one credit wallet, one request, one instant.

Order of precedence (Stigg's decision algorithm, see docs/state-model.md):
customer-level reason when the entitlement is missing -> missing entitlement ->
server-side reason on the entitlement -> the rule of its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from entitlements.model.state import (
    CreditEntitlement,
    CustomerSnapshot,
    DenialReason,
    FeatureEntitlement,
    FeatureType,
    UsageRecord,
)
from entitlements.periods import current_period, rolled_over


@dataclass(frozen=True, slots=True)
class EffectiveUsage:
    """Usage as seen at evaluation time, after any read-time period roll-over."""

    current_usage: float = 0.0
    period_start: datetime | None = None
    period_end: datetime | None = None


NO_USAGE = EffectiveUsage()


@dataclass(frozen=True, slots=True)
class WalletView:
    """A credit wallet as evaluated: granted, consumed and what is left."""

    credit: CreditEntitlement
    consumed: float
    period_end: datetime | None

    @property
    def granted(self) -> float:
        return self.credit.granted

    @property
    def remaining(self) -> float:
        return self.credit.granted - self.consumed


@dataclass(frozen=True, slots=True)
class FeatureDecision:
    has_access: bool
    reason: DenialReason | None
    entitlement: FeatureEntitlement | None = None
    usage: EffectiveUsage = NO_USAGE
    # Credit-backed features inherit the wallet's soft limit.
    soft_limit: bool = False
    wallet: WalletView | None = None


@dataclass(frozen=True, slots=True)
class CreditDecision:
    has_access: bool
    reason: DenialReason | None
    wallet: WalletView | None = None


def effective_usage(
    entitlement: FeatureEntitlement, record: UsageRecord | None, now: datetime
) -> EffectiveUsage:
    """The usage to evaluate against, rolling an ended period over to zero.

    The cached record is not rewritten: upstream's authoritative reset arrives as
    its own change, this only keeps the answer right until then.
    """
    period = entitlement.reset_period
    anchor = entitlement.usage_period_anchor
    if record is None:
        if period is not None and anchor is not None:
            start, end = current_period(anchor, period, now)
            return EffectiveUsage(0.0, start, end)
        return NO_USAGE
    if not rolled_over(record.period_end, now):
        return EffectiveUsage(record.current_usage, record.period_start, record.period_end)
    if period is not None and anchor is not None:
        start, end = current_period(anchor, period, now)
        return EffectiveUsage(0.0, start, end)
    return EffectiveUsage(0.0, None, None)


def stable_until(snapshot: CustomerSnapshot, now: datetime) -> datetime | None:
    """The first instant after ``now`` at which evaluating ``snapshot`` may answer differently.

    Time enters evaluation only through usage periods rolling over, so until the
    earliest current period end every decision (and every response built from
    them) stays the same. None: nothing here changes with time.
    """
    # Called on every evaluated answer of a new snapshot (each usage update makes one), so the
    # common case, a record whose period is still running, skips building an EffectiveUsage.
    earliest: datetime | None = None
    feature_usage = snapshot.feature_usage
    for fid, ent in snapshot.state.features.items():
        if not ent.feature.is_metered:
            continue
        record = feature_usage.get(fid)
        if record is not None and not rolled_over(record.period_end, now):
            end = record.period_end
        else:
            end = effective_usage(ent, record, now).period_end
        # Strictly earlier: of equal instants the first is kept, as min() did.
        if end is not None and (earliest is None or end < earliest):
            earliest = end
    return earliest


def wallet_view(snapshot: CustomerSnapshot, currency_id: str) -> WalletView | None:
    credit = snapshot.state.credits.get(currency_id)
    if credit is None:
        return None
    record = snapshot.credit_usage.get(currency_id)
    if record is None:
        return WalletView(credit, 0.0, None)
    return WalletView(credit, record.current_usage, record.period_end)


def credits_cover(wallet: WalletView, cost: float) -> bool:
    """Whether a hard-limited wallet can pay ``cost`` credits.

    A zero-cost check still needs a positive balance: an exhausted wallet denies
    access even to a caller that does not say how much it will use. The
    boundary is inclusive, so spending exactly the remainder is allowed.
    """
    remaining = wallet.remaining
    if cost <= 0:
        return remaining > 0
    return cost <= remaining


def _within_limit(entitlement: FeatureEntitlement, usage: float, requested: float) -> bool:
    # A missing limit on a hard-limited metered feature counts as zero.
    limit = entitlement.usage_limit if entitlement.usage_limit is not None else 0.0
    return usage + requested <= limit


def decide_feature(
    snapshot: CustomerSnapshot,
    feature_id: str,
    now: datetime,
    requested_usage: float = 0.0,
    requested_values: tuple[str, ...] | list[str] = (),
) -> FeatureDecision:
    state = snapshot.state
    entitlement = state.features.get(feature_id)
    if entitlement is None:
        reason = state.denial_reason or DenialReason.NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION
        return FeatureDecision(False, reason)
    if entitlement.denial_reason is not None:
        return FeatureDecision(
            False, entitlement.denial_reason, entitlement, soft_limit=entitlement.soft_limit
        )
    feature = entitlement.feature
    if feature.feature_type is FeatureType.ENUM:
        allowed = set(entitlement.enum_values)
        if all(value in allowed for value in requested_values):
            return FeatureDecision(True, None, entitlement)
        return FeatureDecision(False, DenialReason.REQUESTED_VALUES_MISMATCH, entitlement)
    if not feature.is_metered:
        # Boolean, and numeric configuration values: being entitled is the answer.
        return FeatureDecision(True, None, entitlement, soft_limit=entitlement.soft_limit)
    usage = effective_usage(entitlement, snapshot.feature_usage.get(feature_id), now)
    if entitlement.credit_rate is not None:
        return decide_credit_backed(snapshot, entitlement, usage, requested_usage)
    denial = metered_denial(entitlement, usage.current_usage, requested_usage)
    # soft_limit is the entitlement's own: with neither unlimited nor soft set it is False.
    return FeatureDecision(denial is None, denial, entitlement, usage, entitlement.soft_limit)


def usage_dependent(entitlement: FeatureEntitlement) -> bool:
    """Whether :func:`decide_feature` reads usage, a wallet or the clock for ``entitlement``.

    When False its decision follows from the entitlement alone (and, for an enum, the requested
    values), so it can be computed once per entitlement state; callers that cache it
    (sidecar/api/answers.py) rely on this staying in step with ``decide_feature``.
    """
    return entitlement.denial_reason is None and entitlement.feature.is_metered


def metered_denial(
    entitlement: FeatureEntitlement, current_usage: float, requested_usage: float
) -> DenialReason | None:
    """The rule of a metered feature that is not credit-backed: None grants access."""
    if entitlement.unlimited or entitlement.soft_limit:
        return None
    if _within_limit(entitlement, current_usage, requested_usage):
        return None
    return DenialReason.REQUESTED_USAGE_EXCEEDING_LIMIT


def decide_credit_backed(
    snapshot: CustomerSnapshot,
    entitlement: FeatureEntitlement,
    usage: EffectiveUsage,
    requested_usage: float,
) -> FeatureDecision:
    rate = entitlement.credit_rate
    assert rate is not None
    wallet = wallet_view(snapshot, rate.currency_id)
    if wallet is None:
        return FeatureDecision(
            False, DenialReason.ENTITLEMENT_NOT_FOUND, entitlement, usage, entitlement.soft_limit
        )
    soft = entitlement.soft_limit or wallet.credit.soft_limit

    def deny(reason: DenialReason) -> FeatureDecision:
        return FeatureDecision(False, reason, entitlement, usage, soft, wallet)

    if wallet.credit.denial_reason is not None:
        return deny(wallet.credit.denial_reason)
    # Credit-backed features usually carry no unit limit of their own; when one
    # is configured (hard, finite) it applies on top of the wallet.
    has_unit_limit = entitlement.usage_limit is not None and not entitlement.unlimited
    if (
        has_unit_limit
        and not soft
        and not _within_limit(entitlement, usage.current_usage, requested_usage)
    ):
        return deny(DenialReason.REQUESTED_USAGE_EXCEEDING_LIMIT)
    if not soft and not credits_cover(wallet, requested_usage * rate.amount):
        return deny(DenialReason.INSUFFICIENT_CREDITS)
    return FeatureDecision(True, None, entitlement, usage, soft, wallet)


def decide_credit(
    snapshot: CustomerSnapshot, currency_id: str, requested_usage: float = 0.0
) -> CreditDecision:
    state = snapshot.state
    wallet = wallet_view(snapshot, currency_id)
    if wallet is None:
        return CreditDecision(False, state.denial_reason or DenialReason.ENTITLEMENT_NOT_FOUND)
    if wallet.credit.denial_reason is not None:
        return CreditDecision(False, wallet.credit.denial_reason, wallet)
    if wallet.credit.soft_limit or credits_cover(wallet, requested_usage):
        return CreditDecision(True, None, wallet)
    return CreditDecision(False, DenialReason.INSUFFICIENT_CREDITS, wallet)
