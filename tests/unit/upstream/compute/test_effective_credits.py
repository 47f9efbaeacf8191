"""Credit wallets: which grants count, consumption, soft limits and the wallet's period end."""

from __future__ import annotations

from typing import Any

import pytest

from entitlements.model.state import CreditRate, Currency
from tests.unit.upstream.compute.effective_support import (
    DAY,
    HOUR,
    NOW,
    facts,
    grant,
    run,
    snapshot,
    sub,
)
from upstream.domain import GrantType, SubscriptionStatus

RECURRING = GrantType.RECURRING
PROMOTIONAL = GrantType.PROMOTIONAL


@pytest.mark.parametrize(
    ("extra", "counted"),
    [
        ({}, True),
        ({"effective_at": NOW - DAY}, True),
        ({"effective_at": NOW}, True),
        ({"effective_at": NOW + HOUR}, False),
        ({"expires_at": NOW + HOUR}, True),
        ({"expires_at": NOW}, False),
        ({"expires_at": NOW - DAY}, False),
        ({"voided_at": NOW - DAY}, False),
        ({"voided_at": NOW + DAY}, True),
        ({"resource_id": "r1"}, False),
    ],
    ids=[
        "open",
        "effective",
        "effective-now",
        "future",
        "expires-later",
        "expires-now",
        "expired",
        "voided",
        "void-scheduled",
        "other-resource",
    ],
)
def test_which_grants_count(extra: dict[str, Any], counted: bool) -> None:
    base = grant(grant_id="base", amount=100, consumed=10)
    candidate = grant(grant_id="candidate", amount=50, consumed=5, **extra)
    wallet = snapshot(facts(sub("static"), grants=(base, candidate)))
    credit = wallet.state.credits["credits"]
    assert credit.granted == (150 if counted else 100)
    assert wallet.credit_usage["credits"].current_usage == (15 if counted else 10)


def test_wallet_totals_deficit_and_metadata() -> None:
    grants = (
        grant(grant_id="a", amount=100, consumed=30, grant_type=RECURRING),
        grant(grant_id="b", amount=50, consumed=5, grant_type=PROMOTIONAL),
        grant(grant_id="c", currency_id="gpu", amount=8),
        grant(grant_id="d", amount=1000, consumed=1000, expires_at=NOW - DAY),
    )
    result = snapshot(facts(sub("static"), grants=grants, deficits={"credits": 7}))
    credits = result.state.credits["credits"]
    assert credits.granted == 150
    assert credits.currency == Currency(
        "credits", "Credits", None, "credit", "credits", {"color": "blue"}
    )
    assert result.credit_usage["credits"].current_usage == 42
    assert result.state.credits["gpu"].granted == 8
    assert result.state.credits["gpu"].currency.display_name == "GPU credits"


def test_resource_wallet_includes_customer_level_grants() -> None:
    grants = (
        grant(grant_id="global", amount=10),
        grant(grant_id="mine", amount=20, resource_id="r1"),
        grant(grant_id="theirs", amount=40, resource_id="r2"),
    )
    subscriptions = (sub("static", resource_id="r1"),)
    result = snapshot(facts(*subscriptions, grants=grants, resource_id="r1"))
    assert result.state.credits["credits"].granted == 30


@pytest.mark.parametrize(
    ("plan_id", "addons", "grants", "deficits", "wallets"),
    [
        # A recurring config opens the wallet even before its first grant is issued.
        ("basic", {}, (), {}, {"credits": (0.0, False)}),
        ("static", {}, (), {"credits": 5.0}, {}),
        ("static", {}, (grant(amount=3),), {}, {"credits": (3.0, False)}),
        ("basic", {"bonus-credits": 1}, (), {}, {"credits": (0.0, True)}),
        ("basic", {"bonus-credits": 0}, (), {}, {"credits": (0.0, False)}),
    ],
    ids=["config-only", "deficit-alone", "grant-only", "any-soft-wins", "unbought-addon"],
)
def test_which_wallets_exist(
    plan_id: str,
    addons: dict[str, int],
    grants: tuple[Any, ...],
    deficits: dict[str, float],
    wallets: dict[str, tuple[float, bool]],
) -> None:
    customer_facts = facts(sub(plan_id, addons=addons), grants=grants, deficits=deficits)
    credits = snapshot(customer_facts).state.credits
    assert {cid: (c.granted, c.soft_limit) for cid, c in credits.items()} == wallets


def test_soft_limit_from_a_resource_subscription() -> None:
    subscriptions = (sub("basic", sub_id="a"), sub("ws-plan", sub_id="b", resource_id="r1"))
    credits = snapshot(facts(*subscriptions, resource_id="r1")).state.credits
    assert (credits["credits"].soft_limit, credits["gpu"].soft_limit) == (False, True)


def test_configs_of_dead_subscriptions_do_not_open_wallets() -> None:
    result = snapshot(facts(sub("basic", status=SubscriptionStatus.CANCELLED)))
    assert not result.state.credits


def test_wallet_period_end_is_the_earliest_recurring_expiry() -> None:
    grants = (
        grant(grant_id="r1", grant_type=RECURRING, expires_at=NOW + 9 * DAY),
        grant(grant_id="r2", grant_type=RECURRING, expires_at=NOW + 3 * DAY),
        grant(grant_id="paid", grant_type=GrantType.PAID, expires_at=NOW + DAY),
        grant(grant_id="gone", grant_type=RECURRING, expires_at=NOW - DAY),
    )
    record = snapshot(facts(sub("static"), grants=grants)).credit_usage["credits"]
    assert record.period_end == NOW + 3 * DAY
    assert record.period_start is None
    assert record.version == 0


def test_wallet_without_recurring_grants_has_no_period_end() -> None:
    result = snapshot(facts(sub("static"), grants=(grant(expires_at=NOW + DAY),)))
    assert result.credit_usage["credits"].period_end is None


def test_unknown_currency_still_gets_a_wallet() -> None:
    result = snapshot(facts(sub("static"), grants=(grant(currency_id="legacy", amount=2),)))
    assert result.state.credits["legacy"].currency == Currency("legacy", "legacy")


def test_wallets_and_credit_backed_features_share_valid_until() -> None:
    expiry = NOW + 2 * HOUR
    grants = (grant(grant_type=RECURRING, expires_at=expiry),)
    result, next_change = run(facts(sub("basic"), grants=grants))
    assert next_change == expiry
    assert result.state.credits["credits"].valid_until == expiry
    tokens = result.state.features["tokens"]
    assert (tokens.credit_rate, tokens.valid_until) == (CreditRate(2, "credits"), expiry)


def test_grants_are_scoped_even_when_the_customer_level_has_none() -> None:
    result = snapshot(facts(sub("static"), grants=(grant(resource_id="r1"),)))
    assert result.state.credits == {}
