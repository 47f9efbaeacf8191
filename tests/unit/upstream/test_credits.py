"""Tests for upstream.credits: usable grants, burn order, deficit, refunds, balance.

Table rows pin each burn-order tiebreak, the validity window boundaries and the
resource scoping; exact-amount cases pin what burn / credit_back / settle_deficit
write. Hypothesis properties check conservation, the [0, amount] bounds, that
burning is additive, and that credit_back undoes burn. Amounts in the properties
are multiples of 1/4 so float arithmetic is exact and equality is meaningful; one
property uses arbitrary floats and checks the bounds and conservation to a tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from upstream.credits import (
    Balance,
    Burn,
    LedgerEntry,
    LedgerEventType,
    active_grants,
    balance,
    burn,
    burn_order_key,
    credit_back,
    settle_deficit,
)
from upstream.domain import CreditGrant, GrantType

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CUR = "credits"

PAID = GrantType.PAID
PROMO = GrantType.PROMOTIONAL
RECUR = GrantType.RECURRING
CONSUMED = LedgerEventType.CREDITS_CONSUMED


def grant(
    gid: str,
    amount: float = 100.0,
    *,
    consumed: float = 0.0,
    grant_type: GrantType = PAID,
    priority: int = 0,
    currency_id: str = CUR,
    resource_id: str | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    voided_at: datetime | None = None,
    created_at: datetime | None = None,
) -> CreditGrant:
    return CreditGrant(
        id=gid,
        customer_id="cust",
        currency_id=currency_id,
        amount=amount,
        grant_type=grant_type,
        resource_id=resource_id,
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        voided_at=voided_at,
        consumed=consumed,
        created_at=created_at,
    )


def by_id(grants: Sequence[CreditGrant]) -> dict[str, CreditGrant]:
    return {g.id: g for g in grants}


def consumed_of(result: Burn) -> dict[str, float]:
    return {g.id: g.consumed for g in result.grants}


def entry(gid: str | None, amount: float, feature_id: str | None = None) -> LedgerEntry:
    return LedgerEntry(CONSUMED, gid, CUR, amount, feature_id)


# --------------------------------------------------------------------------- burn order

# (case, grants, expected burn order). Each row differs in one tiebreak while every
# later tiebreak points the other way, so the row only passes if that level decides.
ORDER_CASES: list[tuple[str, list[CreditGrant], list[str]]] = [
    (
        "lower priority first, beats expiry and type",
        [
            grant("late", priority=0, expires_at=NOW + 30 * DAY, grant_type=PAID),
            grant("early", priority=1, expires_at=NOW + DAY, grant_type=PROMO),
        ],
        ["late", "early"],
    ),
    (
        "negative priority before zero",
        [grant("zero", priority=0), grant("neg", priority=-5)],
        ["neg", "zero"],
    ),
    (
        "earlier expiry first, beats type",
        [
            grant("promo", expires_at=NOW + 3 * DAY, grant_type=PROMO),
            grant("paid", expires_at=NOW + 2 * DAY, grant_type=PAID),
        ],
        ["paid", "promo"],
    ),
    (
        "never-expiring after any expiry",
        [
            grant("forever", grant_type=PROMO, effective_at=NOW - 9 * DAY),
            grant("dated", expires_at=NOW + 3650 * DAY, grant_type=PAID, effective_at=NOW),
        ],
        ["dated", "forever"],
    ),
    (
        "promotional before paid, beats effective_at",
        [
            grant("paid", grant_type=PAID, effective_at=NOW - 9 * DAY),
            grant("promo", grant_type=PROMO, effective_at=NOW - DAY),
        ],
        ["promo", "paid"],
    ),
    (
        "promotional before recurring",
        [
            grant("recurring", grant_type=RECUR, effective_at=NOW - 9 * DAY),
            grant("promo", grant_type=PROMO, effective_at=NOW - DAY),
        ],
        ["promo", "recurring"],
    ),
    (
        "paid and recurring tie: earlier effective_at decides (recurring first)",
        [
            grant("paid", grant_type=PAID, effective_at=NOW - DAY),
            grant("recurring", grant_type=RECUR, effective_at=NOW - 2 * DAY),
        ],
        ["recurring", "paid"],
    ),
    (
        "paid and recurring tie: earlier effective_at decides (paid first)",
        [
            grant("recurring", grant_type=RECUR, effective_at=NOW - DAY),
            grant("paid", grant_type=PAID, effective_at=NOW - 2 * DAY),
        ],
        ["paid", "recurring"],
    ),
    (
        "earlier effective_at first, beats created_at",
        [
            grant("b", effective_at=NOW - DAY, created_at=NOW - 9 * DAY),
            grant("a", effective_at=NOW - 2 * DAY, created_at=NOW - DAY),
        ],
        ["a", "b"],
    ),
    (
        "no effective_at counts as earliest",
        [
            grant("a", effective_at=NOW - 999 * DAY, created_at=NOW - 9 * DAY),
            grant("b", effective_at=None, created_at=NOW - DAY),
        ],
        ["b", "a"],
    ),
    (
        "earlier created_at first, beats id",
        [
            grant("a", created_at=NOW - DAY),
            grant("b", created_at=NOW - 2 * DAY),
        ],
        ["b", "a"],
    ),
    (
        "no created_at counts as earliest",
        [grant("a", created_at=NOW - 999 * DAY), grant("b", created_at=None)],
        ["b", "a"],
    ),
    (
        "id breaks full ties",
        [grant("g2"), grant("g10"), grant("g1")],
        ["g1", "g10", "g2"],
    ),
    (
        "full chain",
        [
            grant("id-b"),
            grant("no-expiry", priority=0, created_at=NOW - 99 * DAY),
            grant("prio-1", priority=1, expires_at=NOW + DAY, grant_type=PROMO),
            grant("id-a"),
            grant("expiry", expires_at=NOW + 5 * DAY),
            grant("promo", grant_type=PROMO),
            grant("created", created_at=NOW - DAY, effective_at=NOW - DAY),
            grant("effective", effective_at=NOW - DAY),
        ],
        [
            "expiry",
            "promo",
            "id-a",
            "id-b",
            "no-expiry",
            "effective",
            "created",
            "prio-1",
        ],
    ),
]


@pytest.mark.parametrize(
    ("grants", "expected"),
    [pytest.param(g, e, id=name) for name, g, e in ORDER_CASES],
)
def test_burn_order(grants: list[CreditGrant], expected: list[str]) -> None:
    for ordering in (grants, list(reversed(grants))):
        assert [g.id for g in sorted(ordering, key=burn_order_key)] == expected
        assert [g.id for g in active_grants(ordering, CUR, None, NOW)] == expected


@pytest.mark.parametrize(
    ("grants", "expected"),
    [pytest.param(g, e, id=name) for name, g, e in ORDER_CASES],
)
def test_burn_consumes_in_burn_order(grants: list[CreditGrant], expected: list[str]) -> None:
    # 1.5 grants' worth: the first is exhausted, the second half used, the rest untouched.
    result = burn(grants, 0.0, CUR, None, 150.0, NOW)
    assert [e.grant_id for e in result.entries] == expected[:2]
    consumed = consumed_of(result)
    assert consumed[expected[0]] == 100.0
    assert consumed[expected[1]] == 50.0
    assert all(consumed[gid] == 0.0 for gid in expected[2:])


# --------------------------------------------------------------------------- active grants

WINDOW_CASES = [
    ("plain", grant("g"), True),
    ("voided in the past", grant("g", voided_at=NOW - DAY), False),
    ("voided in the future still voided", grant("g", voided_at=NOW + DAY), False),
    ("effective now", grant("g", effective_at=NOW), True),
    ("effective in the past", grant("g", effective_at=NOW - DAY), True),
    ("scheduled", grant("g", effective_at=NOW + timedelta(microseconds=1)), False),
    ("expires now", grant("g", expires_at=NOW), False),
    ("expired", grant("g", expires_at=NOW - DAY), False),
    ("expires just after now", grant("g", expires_at=NOW + timedelta(microseconds=1)), True),
    ("other currency", grant("g", currency_id="gems"), False),
    ("exhausted still active", grant("g", amount=5.0, consumed=5.0), True),
]


@pytest.mark.parametrize(
    ("g", "active"), [pytest.param(g, a, id=name) for name, g, a in WINDOW_CASES]
)
def test_active_window(g: CreditGrant, active: bool) -> None:
    assert (active_grants([g], CUR, None, NOW) == [g]) is active
    result = burn([g], 0.0, CUR, None, 1.0, NOW)
    touched = [e.grant_id for e in result.entries if e.grant_id is not None]
    assert touched == (["g"] if active and g.consumed < g.amount else [])
    assert result.deficit == (0.0 if touched else 1.0)


# (grant resource, burning resource, usable)
SCOPE_CASES = [
    (None, None, True),
    (None, "r1", True),
    ("r1", "r1", True),
    ("r1", None, False),
    ("r1", "r2", False),
]


@pytest.mark.parametrize(("grant_resource", "resource", "usable"), SCOPE_CASES)
def test_resource_scoping(grant_resource: str | None, resource: str | None, usable: bool) -> None:
    g = grant("g", resource_id=grant_resource)
    assert (active_grants([g], CUR, resource, NOW) == [g]) is usable
    result = burn([g], 0.0, CUR, resource, 10.0, NOW)
    assert result.grants[0].consumed == (10.0 if usable else 0.0)
    assert result.deficit == (0.0 if usable else 10.0)
    assert balance([g], 0.0, CUR, resource, NOW).granted == (100.0 if usable else 0.0)


def test_resource_grant_burns_with_customer_wide_grants_in_burn_order() -> None:
    grants = [
        grant("wide", expires_at=NOW + DAY),
        grant("mine", resource_id="r1", expires_at=NOW + 2 * DAY),
        grant("theirs", resource_id="r2"),
    ]
    result = burn(grants, 0.0, CUR, "r1", 150.0, NOW)
    assert consumed_of(result) == {"wide": 100.0, "mine": 50.0, "theirs": 0.0}


# --------------------------------------------------------------------------- burn amounts


def test_burn_exact_amounts_and_entries() -> None:
    grants = [
        grant("a", 10.0, consumed=4.0, expires_at=NOW + DAY),
        grant("spent", 7.0, consumed=7.0, expires_at=NOW + 2 * DAY),
        grant("b", 50.0, expires_at=NOW + 3 * DAY),
        grant("c", 50.0),
    ]
    result = burn(grants, 0.0, CUR, None, 30.5, NOW, feature_id="f-api")
    assert consumed_of(result) == {"a": 10.0, "spent": 7.0, "b": 24.5, "c": 0.0}
    assert result.entries == (entry("a", 6.0, "f-api"), entry("b", 24.5, "f-api"))
    assert result.deficit == 0.0
    assert result.consumed == 30.5
    # Input order is kept, untouched grants are the very same records.
    assert [g.id for g in result.grants] == ["a", "spent", "b", "c"]
    assert result.grants[1] is grants[1]
    assert result.grants[3] is grants[3]


def test_burn_beyond_grants_creates_deficit() -> None:
    grants = [grant("a", 10.0), grant("b", 5.0, consumed=2.0, priority=1)]
    result = burn(grants, 0.0, CUR, None, 25.0, NOW, feature_id="f")
    assert consumed_of(result) == {"a": 10.0, "b": 5.0}
    assert result.deficit == 12.0
    assert result.entries == (entry("a", 10.0, "f"), entry("b", 3.0, "f"), entry(None, 12.0, "f"))
    assert result.consumed == 25.0


def test_burn_adds_to_existing_deficit() -> None:
    result = burn([grant("a", 10.0, consumed=10.0)], 5.0, CUR, None, 2.5, NOW)
    assert result.deficit == 7.5
    assert result.entries == (entry(None, 2.5),)


def test_burn_with_no_grants_is_all_deficit() -> None:
    result = burn([], 0.0, CUR, None, 42.0, NOW)
    assert result == Burn((), 42.0, (entry(None, 42.0),), 42.0)


def test_burn_draws_grants_before_adding_deficit_even_when_in_deficit() -> None:
    # An unsettled grant next to a deficit is still burnt first; settling is not burn's job.
    result = burn([grant("a", 10.0)], 3.0, CUR, None, 4.0, NOW)
    assert consumed_of(result) == {"a": 4.0}
    assert result.deficit == 3.0


def test_burn_zero_is_a_no_op() -> None:
    grants = [grant("a", 10.0, consumed=1.0)]
    result = burn(grants, 2.0, CUR, None, 0.0, NOW)
    assert result == Burn(tuple(grants), 2.0, (), 0.0)


def test_burn_ignores_other_currencies_expired_voided_and_future() -> None:
    grants = [
        grant("gems", currency_id="gems"),
        grant("expired", expires_at=NOW - DAY),
        grant("voided", voided_at=NOW - DAY),
        grant("future", effective_at=NOW + DAY),
        grant("ok", 10.0),
    ]
    result = burn(grants, 0.0, CUR, None, 15.0, NOW)
    assert consumed_of(result) == {
        "gems": 0.0,
        "expired": 0.0,
        "voided": 0.0,
        "future": 0.0,
        "ok": 10.0,
    }
    assert result.deficit == 5.0


def test_burn_ledger_entry_currency() -> None:
    result = burn([grant("g", currency_id="gems")], 0.0, "gems", None, 1.0, NOW)
    assert result.entries == (LedgerEntry(CONSUMED, "g", "gems", 1.0),)
    assert result.entries[0].event_type == "CREDITS_CONSUMED"


BAD_AMOUNTS = [-1.0, -1e-300, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("bad", BAD_AMOUNTS)
def test_invalid_amount_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="amount"):
        burn([grant("a")], 0.0, CUR, None, bad, NOW)
    with pytest.raises(ValueError, match="amount"):
        credit_back([grant("a")], 0.0, CUR, None, bad, NOW)


@pytest.mark.parametrize("bad", BAD_AMOUNTS)
def test_invalid_deficit_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="deficit"):
        burn([grant("a")], bad, CUR, None, 1.0, NOW)
    with pytest.raises(ValueError, match="deficit"):
        credit_back([grant("a")], bad, CUR, None, 1.0, NOW)
    with pytest.raises(ValueError, match="deficit"):
        settle_deficit(grant("a"), bad)
    with pytest.raises(ValueError, match="deficit"):
        balance([grant("a")], bad, CUR, None, NOW)


# --------------------------------------------------------------------------- credit_back


def test_credit_back_reduces_deficit_first_then_grants_in_reverse_order() -> None:
    grants = [
        grant("first", 10.0, consumed=10.0, expires_at=NOW + DAY),
        grant("second", 10.0, consumed=10.0, expires_at=NOW + 2 * DAY),
        grant("third", 10.0, consumed=4.0),
    ]
    result = credit_back(grants, 3.0, CUR, None, 19.0, NOW, feature_id="f")
    assert result.deficit == 0.0
    assert consumed_of(result) == {"first": 8.0, "second": 0.0, "third": 0.0}
    assert result.entries == (
        entry(None, -3.0, "f"),
        entry("third", -4.0, "f"),
        entry("second", -10.0, "f"),
        entry("first", -2.0, "f"),
    )
    assert result.consumed == -19.0


def test_credit_back_partly_reduces_deficit_only() -> None:
    grants = [grant("a", 10.0, consumed=10.0)]
    result = credit_back(grants, 10.0, CUR, None, 4.0, NOW)
    assert result.deficit == 6.0
    assert result.grants == tuple(grants)
    assert result.entries == (entry(None, -4.0),)
    assert result.consumed == -4.0


def test_credit_back_never_mints_credits() -> None:
    grants = [grant("a", 10.0, consumed=3.0), grant("b", 10.0)]
    result = credit_back(grants, 1.0, CUR, None, 100.0, NOW)
    assert consumed_of(result) == {"a": 0.0, "b": 0.0}
    assert result.deficit == 0.0
    # Only what had been consumed (3 + deficit 1) comes back, and the result says so.
    assert result.consumed == -4.0
    assert sum(e.amount for e in result.entries) == -4.0


def test_credit_back_skips_inactive_grants() -> None:
    grants = [
        grant("expired", consumed=50.0, expires_at=NOW - DAY),
        grant("voided", consumed=50.0, voided_at=NOW - DAY),
        grant("gems", consumed=50.0, currency_id="gems"),
        grant("other-resource", consumed=50.0, resource_id="r2"),
        grant("ok", consumed=5.0),
    ]
    result = credit_back(grants, 0.0, CUR, "r1", 20.0, NOW)
    assert consumed_of(result) == {
        "expired": 50.0,
        "voided": 50.0,
        "gems": 50.0,
        "other-resource": 50.0,
        "ok": 0.0,
    }
    assert result.consumed == -5.0


def test_credit_back_when_consumption_is_out_of_burn_order() -> None:
    # "new" burns first but was granted after "old" was partly used: the refund goes
    # to the grant that burns last, not back to where the usage was charged.
    grants = [
        grant("new", 10.0, consumed=0.0, priority=0),
        grant("old", 10.0, consumed=6.0, priority=1),
    ]
    charged = burn(grants, 0.0, CUR, None, 3.0, NOW)
    assert consumed_of(charged) == {"new": 3.0, "old": 6.0}
    refunded = credit_back(charged.grants, 0.0, CUR, None, 3.0, NOW)
    assert consumed_of(refunded) == {"new": 3.0, "old": 3.0}


def test_credit_back_zero_is_a_no_op() -> None:
    grants = [grant("a", 10.0, consumed=1.0)]
    assert credit_back(grants, 2.0, CUR, None, 0.0, NOW) == Burn(tuple(grants), 2.0, (), -0.0)


# --------------------------------------------------------------------------- settle_deficit


@pytest.mark.parametrize(
    ("amount", "already", "deficit", "consumed", "remaining", "settled"),
    [
        pytest.param(100.0, 0.0, 15.0, 15.0, 0.0, 15.0, id="grant covers the deficit"),
        pytest.param(100.0, 0.0, 150.0, 100.0, 50.0, 100.0, id="deficit exceeds the grant"),
        pytest.param(100.0, 0.0, 100.0, 100.0, 0.0, 100.0, id="exactly equal"),
        pytest.param(100.0, 30.0, 80.0, 100.0, 10.0, 70.0, id="partly consumed grant"),
        pytest.param(100.0, 30.0, 20.5, 50.5, 0.0, 20.5, id="partly consumed, covers"),
    ],
)
def test_settle_deficit(
    amount: float,
    already: float,
    deficit: float,
    consumed: float,
    remaining: float,
    settled: float,
) -> None:
    new = grant("new", amount, consumed=already, currency_id="gems")
    settled_grant, left, ledger = settle_deficit(new, deficit)
    assert settled_grant == replace(new, consumed=consumed)
    assert left == remaining
    assert ledger == LedgerEntry(LedgerEventType.DEFICIT_SETTLED, "new", "gems", settled)


@pytest.mark.parametrize(
    ("new", "deficit"),
    [
        pytest.param(grant("new"), 0.0, id="no deficit"),
        pytest.param(grant("new", voided_at=NOW), 10.0, id="voided grant"),
        pytest.param(grant("new", 10.0, consumed=10.0), 10.0, id="exhausted grant"),
        pytest.param(grant("new", 0.0), 10.0, id="empty grant"),
    ],
)
def test_settle_deficit_settles_nothing(new: CreditGrant, deficit: float) -> None:
    assert settle_deficit(new, deficit) == (new, deficit, None)


def test_settled_grant_then_burns_only_its_rest() -> None:
    new, deficit, _ = settle_deficit(grant("new", 10.0), 4.0)
    assert deficit == 0.0
    result = burn([new], deficit, CUR, None, 10.0, NOW)
    assert consumed_of(result) == {"new": 10.0}
    assert result.deficit == 4.0


# --------------------------------------------------------------------------- balance


def test_balance_counts_active_grants_and_deficit() -> None:
    grants = [
        grant("a", 100.0, consumed=40.0),
        grant("b", 50.0, consumed=50.0, grant_type=PROMO),
        grant("expired", 1000.0, consumed=1.0, expires_at=NOW - DAY),
        grant("gems", 1000.0, currency_id="gems"),
    ]
    assert balance(grants, 0.0, CUR, None, NOW) == Balance(150.0, 90.0, 60.0)
    assert balance(grants, 70.0, CUR, None, NOW) == Balance(150.0, 160.0, -10.0)
    assert balance([], 5.0, CUR, None, NOW) == Balance(0.0, 5.0, -5.0)


# --------------------------------------------------------------------------- properties

QUARTERS = st.integers(min_value=0, max_value=400).map(lambda q: q / 4)
OFFSETS = st.sampled_from([None, -2, -1, 0, 1, 2, 5])


def _at(offset: int | None) -> datetime | None:
    return None if offset is None else NOW + offset * DAY


@st.composite
def grant_lists(draw: st.DrawFn, fresh: bool = False) -> list[CreditGrant]:
    count = draw(st.integers(min_value=0, max_value=7))
    grants: list[CreditGrant] = []
    for i in range(count):
        amount_q = draw(st.integers(min_value=0, max_value=200))
        consumed_q = 0 if fresh else draw(st.integers(min_value=0, max_value=amount_q))
        grants.append(
            grant(
                f"g{i}",
                amount_q / 4,
                consumed=consumed_q / 4,
                grant_type=draw(st.sampled_from(list(GrantType))),
                priority=draw(st.integers(min_value=-1, max_value=2)),
                currency_id=draw(st.sampled_from([CUR, CUR, CUR, "gems"])),
                resource_id=draw(st.sampled_from([None, None, "r1", "r2"])),
                effective_at=_at(draw(OFFSETS)),
                expires_at=_at(draw(OFFSETS)),
                voided_at=draw(st.sampled_from([None, None, None, NOW - DAY])),
                created_at=_at(draw(OFFSETS)),
            )
        )
    return grants


RESOURCES = st.sampled_from([None, "r1", "r2"])


def _bounded(result: Burn) -> bool:
    return result.deficit >= 0 and all(0 <= g.consumed <= g.amount for g in result.grants)


def _consumption_delta(before: Sequence[CreditGrant], after: Sequence[CreditGrant]) -> float:
    return sum(b.consumed - a.consumed for a, b in zip(before, after, strict=True))


def _only_active_touched(before: Sequence[CreditGrant], result: Burn, resource: str | None) -> bool:
    active = {g.id for g in active_grants(before, CUR, resource, NOW)}
    return all(
        a == b or a.id in active for a, b in zip(before, result.grants, strict=True)
    ) and all(e.grant_id is None or e.grant_id in active for e in result.entries)


@PROPERTY
@given(grant_lists(), QUARTERS, QUARTERS, RESOURCES)
def test_burn_conserves_and_stays_in_bounds(
    grants: list[CreditGrant], deficit: float, amount: float, resource: str | None
) -> None:
    result = burn(grants, deficit, CUR, resource, amount, NOW)
    assert result.consumed == amount
    assert _consumption_delta(grants, result.grants) + (result.deficit - deficit) == amount
    assert sum(e.amount for e in result.entries) == amount
    assert all(e.amount > 0 for e in result.entries)
    assert _bounded(result)
    assert _only_active_touched(grants, result, resource)
    # At most one entry per grant, and the deficit entry (if any) last.
    ids = [e.grant_id for e in result.entries]
    assert len(set(ids)) == len(ids)
    assert None not in ids[:-1]
    # Deficit only grows once every active grant is exhausted.
    if result.deficit > deficit:
        assert all(g.consumed == g.amount for g in active_grants(result.grants, CUR, resource, NOW))
    # Balance moves by exactly the amount.
    before = balance(grants, deficit, CUR, resource, NOW)
    after = balance(result.grants, result.deficit, CUR, resource, NOW)
    assert after.consumed - before.consumed == amount
    assert after.granted == before.granted


@PROPERTY
@given(grant_lists(), QUARTERS, QUARTERS, RESOURCES)
def test_credit_back_conserves_and_stays_in_bounds(
    grants: list[CreditGrant], deficit: float, amount: float, resource: str | None
) -> None:
    result = credit_back(grants, deficit, CUR, resource, amount, NOW)
    refundable = deficit + sum(g.consumed for g in active_grants(grants, CUR, resource, NOW))
    assert result.consumed == -min(amount, refundable)
    assert _consumption_delta(grants, result.grants) + (result.deficit - deficit) == (
        result.consumed
    )
    assert sum(e.amount for e in result.entries) == result.consumed
    assert all(e.amount < 0 for e in result.entries)
    assert _bounded(result)
    assert _only_active_touched(grants, result, resource)
    # Grants are only refunded once the deficit is gone.
    if result.deficit > 0:
        assert result.grants == tuple(grants)


@PROPERTY
@given(grant_lists(), QUARTERS, QUARTERS, QUARTERS, RESOURCES)
def test_burning_a_then_b_equals_burning_a_plus_b(
    grants: list[CreditGrant], deficit: float, a: float, b: float, resource: str | None
) -> None:
    first = burn(grants, deficit, CUR, resource, a, NOW)
    second = burn(first.grants, first.deficit, CUR, resource, b, NOW)
    together = burn(grants, deficit, CUR, resource, a + b, NOW)
    assert second.grants == together.grants
    assert second.deficit == together.deficit


@PROPERTY
@given(grant_lists(fresh=True), QUARTERS, QUARTERS, RESOURCES)
def test_credit_back_undoes_burn(
    fresh: list[CreditGrant], prior: float, amount: float, resource: str | None
) -> None:
    # Start from a state reached by burning alone (fresh grants, no deficit), which
    # is what makes consumption follow burn order; the burn may overdraw.
    start = burn(fresh, 0.0, CUR, resource, prior, NOW)
    charged = burn(start.grants, start.deficit, CUR, resource, amount, NOW)
    refunded = credit_back(charged.grants, charged.deficit, CUR, resource, amount, NOW)
    assert refunded.grants == start.grants
    assert refunded.deficit == start.deficit
    assert refunded.consumed == -amount
    # Same grants touched, mirrored amounts, reverse order.
    assert [(e.grant_id, -e.amount) for e in reversed(refunded.entries)] == [
        (e.grant_id, e.amount) for e in charged.entries
    ]


@PROPERTY
@given(grant_lists(), QUARTERS, RESOURCES)
def test_settlement_keeps_the_balance(
    grants: list[CreditGrant], deficit: float, resource: str | None
) -> None:
    new = grant("new", 25.0, resource_id=resource)
    settled, left, ledger = settle_deficit(new, deficit)
    assert settled.consumed + left == deficit
    assert 0 <= settled.consumed <= settled.amount
    assert left == max(0.0, deficit - 25.0)
    assert (ledger is None) == (deficit == 0)
    assert balance([*grants, new], deficit, CUR, resource, NOW) == balance(
        [*grants, settled], left, CUR, resource, NOW
    )


FLOATS = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@st.composite
def float_grants(draw: st.DrawFn) -> list[CreditGrant]:
    grants: list[CreditGrant] = []
    for i in range(draw(st.integers(min_value=0, max_value=6))):
        amount = draw(FLOATS)
        consumed = draw(st.floats(min_value=0, max_value=amount))
        grants.append(grant(f"g{i}", amount, consumed=consumed, priority=draw(st.integers(0, 2))))
    return grants


@PROPERTY
@given(float_grants(), FLOATS, FLOATS, FLOATS)
def test_arbitrary_floats_stay_in_bounds(
    grants: list[CreditGrant], deficit: float, a: float, b: float
) -> None:
    charged = burn(grants, deficit, CUR, None, a, NOW)
    assert _bounded(charged)
    assert _consumption_delta(grants, charged.grants) + (charged.deficit - deficit) == (
        pytest.approx(a, rel=1e-9, abs=1e-6)
    )
    refunded = credit_back(charged.grants, charged.deficit, CUR, None, b, NOW)
    assert _bounded(refunded)
    assert _consumption_delta(charged.grants, refunded.grants) + (
        refunded.deficit - charged.deficit
    ) == pytest.approx(refunded.consumed, rel=1e-9, abs=1e-6)
    settled, left, _ = settle_deficit(grant("new", a), charged.deficit)
    assert 0 <= settled.consumed <= settled.amount
    assert left >= 0
