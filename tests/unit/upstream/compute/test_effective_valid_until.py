"""The next instant the result changes by itself, stamped as valid_until on every item."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from entitlements.model.state import (
    CreditEntitlement,
    CustomerSnapshot,
    FeatureEntitlement,
    ResetPeriod,
)
from tests.unit.upstream.compute.effective_support import (
    DAY,
    HOUR,
    NOW,
    START,
    facts,
    grant,
    promo,
    run,
    sub,
    with_plan,
)
from upstream.catalog import CreditCadence, CreditConfig, EntitlementDef, ResetAnchor
from upstream.domain import Customer, CustomerFacts, GrantType, SubscriptionStatus

T = NOW + 2 * HOUR
STATIC = sub("static")  # only a boolean: nothing in it changes with time
BASE_GRANT = grant(grant_id="base", amount=1)


def stamps(result: CustomerSnapshot) -> set[datetime | None]:
    items: list[FeatureEntitlement | CreditEntitlement] = [
        *result.state.features.values(),
        *result.state.credits.values(),
    ]
    return {item.valid_until for item in items}


def test_nothing_scheduled_means_never() -> None:
    result, next_change = run(facts(STATIC, grants=(BASE_GRANT,)))
    assert next_change is None
    assert stamps(result) == {None}


CASES: list[tuple[str, Any, Any]] = [
    ("trial-end", (sub("static", status=SubscriptionStatus.TRIAL, trial_end=T),), {}),
    ("cancel-at", (sub("static", cancel_at=T),), {}),
    ("future-start", (STATIC, sub("basic", sub_id="later", start=T)), {}),
    ("promotion-expiry", (STATIC,), {"promotions": (promo("sso", expires_at=T),)}),
    ("promotion-revocation", (STATIC,), {"promotions": (promo("sso", revoked_at=T),)}),
    ("grant-expiry", (STATIC,), {"grants": (grant(expires_at=T),)}),
    ("grant-effective", (STATIC,), {"grants": (grant(effective_at=T),)}),
    ("grant-void", (STATIC,), {"grants": (grant(voided_at=T),)}),
    ("archival", (STATIC,), {"customer": Customer("cus-1", archived_at=T)}),
]


@pytest.mark.parametrize(("subscriptions", "kw"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_scheduled_instant_is_a_change(subscriptions: Any, kw: dict[str, Any]) -> None:
    # The base grant opens a wallet, so wallets must carry the stamp too.
    others = {k: v for k, v in kw.items() if k != "grants"}
    grants = (BASE_GRANT, *kw.get("grants", ()))
    result, next_change = run(facts(*subscriptions, grants=grants, **others))
    assert next_change == T
    assert stamps(result) == {T}


def test_instants_of_other_resources_and_dead_items_are_ignored() -> None:
    customer_facts = facts(
        STATIC,
        sub("static", sub_id="other", resource_id="r9", cancel_at=T),
        sub("static", sub_id="gone", status=SubscriptionStatus.CANCELLED, cancel_at=T),
        sub("static", sub_id="paid", trial_end=T),
        promotions=(
            promo("sso", resource_id="r9", expires_at=T),
            promo("sso", "x", expires_at=NOW),
        ),
        grants=(grant(resource_id="r9", expires_at=T), grant(voided_at=NOW, expires_at=T)),
    )
    assert run(customer_facts)[1] is None


def test_metered_period_end_is_a_change() -> None:
    hourly = EntitlementDef(
        "calls", 5, reset_period=ResetPeriod.HOUR, reset_anchor=ResetAnchor.CALENDAR
    )
    result, next_change = run(facts(sub("p")), catalog=with_plan("p", hourly))
    assert next_change == NOW.replace(hour=16, minute=0, second=0)
    assert stamps(result) == {next_change}


@pytest.mark.parametrize(
    ("cadence", "end"),
    [
        (CreditCadence.MONTH, START.replace(month=3, day=31)),
        (CreditCadence.YEAR, START.replace(year=2027)),
    ],
)
def test_recurring_credit_period_end_is_a_change(cadence: CreditCadence, end: datetime) -> None:
    catalog = with_plan("c", credits=(CreditConfig("credits", 10, cadence),))
    result, next_change = run(facts(sub("c")), catalog=catalog)
    assert next_change == end
    assert stamps(result) == {end}


def test_the_earliest_instant_wins() -> None:
    customer_facts = facts(
        sub(
            "basic",
            status=SubscriptionStatus.TRIAL,
            trial_end=NOW + 5 * DAY,
            cancel_at=NOW + 9 * DAY,
        ),
        promotions=(promo("sso", expires_at=NOW + 4 * DAY),),
        grants=(grant(expires_at=NOW + 3 * DAY), grant(grant_id="g2", effective_at=NOW + 2 * DAY)),
        customer=Customer("cus-1", archived_at=NOW + 30 * DAY),
    )
    # basic resets calls monthly from START: the period ends on Mar 31 09:00, 12+ days out.
    result, next_change = run(customer_facts)
    assert next_change == NOW + 2 * DAY
    assert stamps(result) == {NOW + 2 * DAY}
    after, following = run(customer_facts, now=NOW + 2 * DAY)
    assert following == NOW + 3 * DAY
    assert after.state.credits["credits"].granted == 200


def test_blocked_customers_only_change_at_archival() -> None:
    not_found = CustomerFacts(None, None, (sub("static", cancel_at=T),))
    assert run(not_found)[1] is None
    unknown_resource = facts(STATIC, resource_id="r1", customer=Customer("cus-1", archived_at=T))
    result, next_change = run(unknown_resource)
    assert next_change == T
    assert result.state.features == {}


def test_grant_type_does_not_matter_for_expiry() -> None:
    grants = (grant(grant_type=GrantType.PROMOTIONAL, expires_at=T),)
    assert run(facts(STATIC, grants=grants))[1] == T
