"""Credit pools: which grants are usable, the order they burn in, and the overdraft.

Pure functions over immutable ``CreditGrant`` records: every operation returns the
new records plus the ledger entries describing the change, and the caller persists
both atomically. A pool is one (customer, currency[, resource]); the caller passes
that pool's grants and its deficit (the amount burnt beyond all grants, Stigg's
OVERDRAFT grant), so nothing here filters by customer.

Arithmetic is plain ``float``. Conservation is exact whenever the amounts involved
are exactly representable sums (integers, halves, quarters, ...); with arbitrary
decimals it holds to the last ulp, and the clamps below make sure rounding can never
push a grant's ``consumed`` outside ``[0, amount]``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from upstream.domain import CreditGrant, GrantType

__all__ = [
    "Balance",
    "Burn",
    "BurnOrderKey",
    "LedgerEntry",
    "LedgerEventType",
    "active_grants",
    "balance",
    "burn",
    "burn_order_key",
    "credit_back",
    "settle_deficit",
]


class LedgerEventType(StrEnum):
    CREDITS_CONSUMED = "CREDITS_CONSUMED"
    CREDITS_GRANTED = "CREDITS_GRANTED"
    CREDITS_VOIDED = "CREDITS_VOIDED"
    CREDITS_EXPIRED = "CREDITS_EXPIRED"
    DEFICIT_SETTLED = "DEFICIT_SETTLED"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One change to one grant, or to the deficit (``grant_id is None``).

    Consumption entries are signed: a refund (``credit_back``) is a negative
    ``CREDITS_CONSUMED``, so summing a grant's consumption entries gives its
    ``consumed`` and summing the deficit's gives the deficit.
    """

    # A plain str on the wire; LedgerEventType members are str, so they fit.
    event_type: str
    grant_id: str | None
    currency_id: str
    amount: float
    feature_id: str | None = None


@dataclass(frozen=True, slots=True)
class Burn:
    """Outcome of ``burn`` / ``credit_back``."""

    # Every input grant, in input order, touched ones carrying their new ``consumed``:
    # the caller can persist the tuple as is and feed it to the next call.
    grants: tuple[CreditGrant, ...]
    # The pool's new deficit (>= 0).
    deficit: float
    entries: tuple[LedgerEntry, ...]
    # Net credits this call deducted, deficit included: ``amount`` for burn; minus
    # what was actually given back for credit_back (may be less than asked).
    consumed: float


@dataclass(frozen=True, slots=True)
class Balance:
    granted: float
    # Includes the deficit, so an overdrawn pool shows consumed > granted.
    consumed: float
    # granted - consumed; negative while in overdraft.
    remaining: float


# (priority, no-expiry, expires_at, type rank, has-effective_at, effective_at,
#  has-created_at, created_at, id). The bool before each optional datetime decides
# None's place and keeps the tuple comparison from ever comparing None with a datetime.
BurnOrderKey = tuple[
    int, bool, datetime | None, int, bool, datetime | None, bool, datetime | None, str
]

# Stigg documents only "promotional before paid". RECURRING (plan/add-on credits)
# shares PAID's rank: both are credits the customer paid for, and recurring grants
# normally expire at the period end, so the expiry tiebreak already burns them early.
_TYPE_RANK: dict[GrantType, int] = {
    GrantType.PROMOTIONAL: 0,
    GrantType.PAID: 1,
    GrantType.RECURRING: 1,
}


def _require_amount(name: str, value: float) -> None:
    # NaN slips through every comparison and inf would wipe out a pool in one call,
    # so both are rejected before they can reach a stored record.
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _usable(grant: CreditGrant, currency_id: str, resource_id: str | None, now: datetime) -> bool:
    if grant.currency_id != currency_id or grant.voided_at is not None:
        return False
    if grant.effective_at is not None and grant.effective_at > now:
        return False
    if grant.expires_at is not None and grant.expires_at <= now:
        return False
    # A grant without a resource is customer-wide and serves every resource; a
    # resource grant serves only that resource (never the customer-level pool).
    return grant.resource_id is None or grant.resource_id == resource_id


def burn_order_key(grant: CreditGrant) -> BurnOrderKey:
    """Sort key: the grant that sorts first burns first.

    priority (lower first) -> earliest expiry (never-expiring last) -> PROMOTIONAL
    before PAID/RECURRING -> earliest effective_at -> earliest created_at -> id.
    A missing effective_at / created_at counts as "since forever" and sorts first;
    the id makes the order total, so replays burn identically.
    """
    return (
        grant.priority,
        grant.expires_at is None,
        grant.expires_at,
        _TYPE_RANK[grant.grant_type],
        grant.effective_at is not None,
        grant.effective_at,
        grant.created_at is not None,
        grant.created_at,
        grant.id,
    )


def _active_indices(
    grants: Sequence[CreditGrant], currency_id: str, resource_id: str | None, now: datetime
) -> list[int]:
    # Indices, not records: two grants may compare equal, and the result must be
    # written back into the caller's positions.
    usable = [i for i, g in enumerate(grants) if _usable(g, currency_id, resource_id, now)]
    usable.sort(key=lambda i: burn_order_key(grants[i]))
    return usable


def active_grants(
    grants: Iterable[CreditGrant], currency_id: str, resource_id: str | None, now: datetime
) -> list[CreditGrant]:
    """Grants of ``currency_id`` usable by ``resource_id`` at ``now``, in burn order.

    Usable: not voided, effective (``effective_at`` None or <= now), not expired
    (``expires_at`` None or > now), and customer-wide or scoped to ``resource_id``.
    Exhausted grants are included: they still count towards the granted total.
    """
    pool = list(grants)
    return [pool[i] for i in _active_indices(pool, currency_id, resource_id, now)]


def burn(
    grants: Iterable[CreditGrant],
    deficit: float,
    currency_id: str,
    resource_id: str | None,
    amount: float,
    now: datetime,
    feature_id: str | None = None,
) -> Burn:
    """Deduct ``amount`` from the active grants in burn order; the rest becomes deficit.

    Usage is never rejected for lack of credits (enforcement is the caller's check),
    so whatever the grants cannot cover is added to the deficit rather than dropped.
    One ledger entry per grant touched, plus one for the deficit part.
    """
    _require_amount("amount", amount)
    _require_amount("deficit", deficit)
    pool = list(grants)
    entries: list[LedgerEntry] = []
    left = amount
    for i in _active_indices(pool, currency_id, resource_id, now):
        if left <= 0:
            break
        grant = pool[i]
        available = grant.amount - grant.consumed
        if available <= 0:
            continue
        if left >= available:
            # Exhaust exactly: consumed + (amount - consumed) may round past amount.
            take, new_consumed = available, grant.amount
        else:
            take, new_consumed = left, min(grant.amount, grant.consumed + left)
        pool[i] = replace(grant, consumed=new_consumed)
        entries.append(
            LedgerEntry(LedgerEventType.CREDITS_CONSUMED, grant.id, currency_id, take, feature_id)
        )
        left = max(0.0, left - take)
    new_deficit = deficit
    if left > 0:
        new_deficit = deficit + left
        entries.append(
            LedgerEntry(LedgerEventType.CREDITS_CONSUMED, None, currency_id, left, feature_id)
        )
    return Burn(tuple(pool), new_deficit, tuple(entries), amount)


def credit_back(
    grants: Iterable[CreditGrant],
    deficit: float,
    currency_id: str,
    resource_id: str | None,
    amount: float,
    now: datetime,
    feature_id: str | None = None,
) -> Burn:
    """Give back ``amount`` credits (pass the magnitude of a negative usage delta).

    The deficit was the last thing burnt, so it is reduced first; then grants are
    refunded in reverse burn order, none below ``consumed == 0``. That makes this the
    exact inverse of ``burn`` whenever consumption went through ``burn`` in the same
    order; otherwise the refund lands on the grant that would burn last, i.e. the one
    the customer keeps longest. Credits beyond what was consumed cannot be returned
    (that would mint credits); ``Burn.consumed`` reports what actually was.
    """
    _require_amount("amount", amount)
    _require_amount("deficit", deficit)
    pool = list(grants)
    entries: list[LedgerEntry] = []
    left = amount
    new_deficit = deficit
    if deficit > 0 and left > 0:
        if left >= deficit:
            given, new_deficit, left = deficit, 0.0, left - deficit
        else:
            given, new_deficit, left = left, deficit - left, 0.0
        entries.append(
            LedgerEntry(LedgerEventType.CREDITS_CONSUMED, None, currency_id, -given, feature_id)
        )
    for i in reversed(_active_indices(pool, currency_id, resource_id, now)):
        if left <= 0:
            break
        grant = pool[i]
        if grant.consumed <= 0:
            continue
        if left >= grant.consumed:
            given, new_consumed = grant.consumed, 0.0
        else:
            given, new_consumed = left, max(0.0, grant.consumed - left)
        pool[i] = replace(grant, consumed=new_consumed)
        entries.append(
            LedgerEntry(LedgerEventType.CREDITS_CONSUMED, grant.id, currency_id, -given, feature_id)
        )
        left = max(0.0, left - given)
    return Burn(tuple(pool), new_deficit, tuple(entries), -(amount - left))


def settle_deficit(
    new_grant: CreditGrant, deficit: float
) -> tuple[CreditGrant, float, LedgerEntry | None]:
    """Let a new grant pay off the pool's outstanding deficit first.

    Returns the grant with ``consumed`` raised by the settled part, the remaining
    deficit, and a ``DEFICIT_SETTLED`` entry (None when nothing was settled). The
    pool's balance is unchanged by settlement; it only moves the debt onto the grant.
    A voided grant settles nothing. The caller invokes this when the grant becomes
    effective (there is no ``now`` here) and records ``CREDITS_GRANTED`` itself.
    """
    _require_amount("deficit", deficit)
    available = new_grant.amount - new_grant.consumed
    if new_grant.voided_at is not None or deficit <= 0 or available <= 0:
        return new_grant, deficit, None
    if deficit >= available:
        settled, consumed, remaining = available, new_grant.amount, deficit - available
    else:
        settled = deficit
        consumed = min(new_grant.amount, new_grant.consumed + deficit)
        remaining = 0.0
    entry = LedgerEntry(
        LedgerEventType.DEFICIT_SETTLED, new_grant.id, new_grant.currency_id, settled
    )
    return replace(new_grant, consumed=consumed), remaining, entry


def balance(
    grants: Iterable[CreditGrant],
    deficit: float,
    currency_id: str,
    resource_id: str | None,
    now: datetime,
) -> Balance:
    """Totals over the active grants; the deficit counts as consumed."""
    _require_amount("deficit", deficit)
    active = active_grants(grants, currency_id, resource_id, now)
    # fsum: a pool may hold many grants, and the total should not depend on their order.
    granted = math.fsum(g.amount for g in active)
    consumed = math.fsum([*(g.consumed for g in active), deficit])
    return Balance(granted, consumed, granted - consumed)
