"""How one subscription's grants are built and how sources merge ("most generous wins")."""

from __future__ import annotations

from typing import Any

import pytest

from entitlements.model.state import CreditRate, FeatureType, MeterType, ResetPeriod
from tests.unit.upstream.compute.effective_support import (
    DAY,
    NOW,
    START,
    facts,
    promo,
    snapshot,
    sub,
    with_plan,
)
from upstream.catalog import EntitlementDef, ResetAnchor

# Feature id -> (usage_limit, unlimited, soft_limit, enum_values); None leaves it unchecked.
Expected = dict[str, tuple[float | None, bool, bool, tuple[str, ...]]]


def limits(**subscription: Any) -> Expected:
    features = snapshot(facts(sub(**subscription))).state.features
    return {
        fid: (e.usage_limit, e.unlimited, e.soft_limit, e.enum_values)
        for fid, e in features.items()
    }


def test_plan_entitlements_carry_the_catalog_metadata() -> None:
    features = snapshot(facts(sub("basic"))).state.features
    calls = features["calls"].feature
    assert (calls.id, calls.feature_type, calls.meter_type) == (
        "calls",
        FeatureType.NUMBER,
        MeterType.INCREMENTAL,
    )
    assert (calls.display_name, calls.units, calls.units_plural) == ("API calls", "call", "calls")
    assert features["flag"].feature.display_name == "Flag"
    assert features["flag"].usage_limit is None
    assert features["tier"].enum_values == ("bronze",)
    assert features["seats"].usage_limit == 3
    assert features["tokens"].credit_rate == CreditRate(2, "credits")
    assert features["tokens"].usage_limit is None and not features["tokens"].unlimited


@pytest.mark.parametrize(
    ("plan_id", "expected"),
    [
        (
            "basic",
            {
                "flag": (None, False, False, ()),
                "seats": (3, False, False, ()),
                "calls": (1000, False, False, ()),
                "storage": (10, False, False, ()),
                "tier": (None, False, False, ("bronze",)),
                "tokens": (None, False, False, ()),
            },
        ),
        (
            "pro",
            {
                "flag": (None, False, False, ()),
                "sso": (None, False, False, ()),
                "seats": (3, False, False, ()),
                "calls": (5000, False, False, ()),
                "storage": (10, False, False, ()),
                # A child replaces its parent's entitlement; it does not merge with it.
                "tier": (None, False, False, ("silver",)),
                "tokens": (None, False, False, ()),
            },
        ),
        (
            "top",
            {
                "flag": (None, False, False, ()),
                "sso": (None, False, False, ()),
                "seats": (3, False, False, ()),
                "calls": (5000, False, False, ()),
                "storage": (None, True, False, ()),
                "tier": (None, False, False, ("silver",)),
                "tokens": (None, False, False, ()),
            },
        ),
    ],
)
def test_plan_inheritance(plan_id: str, expected: Expected) -> None:
    assert limits(plan_id=plan_id) == expected


def test_inherited_reset_period_is_the_child_override() -> None:
    features = snapshot(facts(sub("top"))).state.features
    assert features["calls"].reset_period is ResetPeriod.WEEK


@pytest.mark.parametrize(
    ("addons", "billable", "expected"),
    [
        ({"more-calls": 1}, {}, {"calls": (1500, False, False, ())}),
        ({"more-calls": 3}, {}, {"calls": (2500, False, False, ())}),
        ({"more-calls": 0}, {}, {"calls": (1000, False, False, ())}),
        ({"more-calls": 2}, {}, {"tier": (None, False, False, ("bronze", "gold"))}),
        ({"more-calls": 1}, {}, {"sso": (None, False, False, ())}),
        ({"unlimited-calls": 1}, {}, {"calls": (None, True, False, ())}),
        ({"unlimited-calls": 1, "more-calls": 2}, {}, {"calls": (None, True, False, ())}),
        (
            {"big-storage": 1},
            {},
            {"storage": (200, False, False, ()), "seats": (10, False, False, ())},
        ),
        ({"big-storage": 2}, {}, {"storage": (400, False, False, ())}),
        # Overrides apply first, so an increment bought alongside adds to the replacement.
        ({"big-storage": 1, "more-seats": 1}, {"seats": 4}, {"seats": (14, False, False, ())}),
        ({"more-seats": 2}, {"seats": 4}, {"seats": (11, False, False, ())}),
        ({"more-seats": 1}, {}, {"seats": (4, False, False, ())}),
        ({"no-such-addon": 1}, {}, {"calls": (1000, False, False, ())}),
    ],
    ids=[
        "increment",
        "increment-times-quantity",
        "zero-quantity",
        "enum-union",
        "boolean-grant",
        "increment-unlimited",
        "unlimited-stays-unlimited",
        "override",
        "override-times-quantity",
        "override-then-increment",
        "per-unit-addon",
        "per-unit-default-quantity",
        "unknown-addon-ignored",
    ],
)
def test_addons(addons: dict[str, int], billable: dict[str, float], expected: Expected) -> None:
    result = limits(plan_id="basic", addons=addons, billable_quantities=billable)
    assert {fid: result[fid] for fid in expected} == expected


def test_increment_on_an_unlimited_plan_stays_unlimited() -> None:
    catalog = with_plan("open", EntitlementDef("calls", unlimited=True))
    features = snapshot(facts(sub("open", addons={"more-calls": 5})), catalog=catalog).state
    assert features.features["calls"].unlimited
    assert features.features["calls"].usage_limit is None


def test_override_replaces_soft_limit_and_reset_period() -> None:
    base = EntitlementDef("storage", 10, soft_limit=True, reset_period=ResetPeriod.DAY)
    catalog = with_plan("soft", base)
    storage = snapshot(facts(sub("soft", addons={"big-storage": 1})), catalog=catalog)
    entitlement = storage.state.features["storage"]
    assert (entitlement.usage_limit, entitlement.soft_limit) == (200, False)
    assert entitlement.reset_period is None


@pytest.mark.parametrize(
    ("billable", "seats", "calls"),
    [({"seats": 7, "calls": 3}, 14, 300), ({}, 2, 100), ({"seats": 0}, 0, 100)],
    ids=["quantities", "missing-defaults-to-one", "zero-seats"],
)
def test_per_unit_plan_entitlements(billable: dict[str, float], seats: float, calls: float) -> None:
    result = limits(plan_id="seat-plan", billable_quantities=billable)
    assert result["seats"][0] == seats
    assert result["calls"][0] == calls


def test_unknown_plan_grants_nothing_but_counts_as_live() -> None:
    result = snapshot(facts(sub("retired-plan")))
    assert result.state.denial_reason is None
    assert not result.state.features


def two_products(**kw: Any) -> Any:
    """A customer-level core subscription plus a workspace subscription for resource r1."""
    return snapshot(
        facts(
            sub("basic", sub_id="core", start=START),
            sub("ws-plan", sub_id="ws", resource_id="r1", start=START + DAY),
            resource_id="r1",
            **kw,
        )
    ).state.features


def test_most_generous_wins_across_products() -> None:
    features = two_products()
    # Higher limit wins, and soft beats hard.
    assert (features["storage"].usage_limit, features["storage"].soft_limit) == (50, True)
    # The reset cadence travels with the higher limit.
    calls = features["calls"]
    assert (calls.usage_limit, calls.reset_period) == (2000, ResetPeriod.DAY)
    assert calls.usage_period_anchor == START + DAY
    assert features["tier"].enum_values == ("bronze", "gold")
    assert features["flag"].usage_limit is None
    assert features["seats"].usage_limit == 3


def test_credit_rate_comes_from_the_earliest_source_and_wallet_only_beats_a_unit_cap() -> None:
    tokens = two_products()["tokens"]
    assert tokens.credit_rate == CreditRate(2, "credits")
    # basic's tokens have no unit cap at all, which is more generous than ws-plan's 10.
    assert tokens.usage_limit is None and not tokens.unlimited


def test_equal_limits_keep_the_earliest_subscriptions_reset_period() -> None:
    monthly = EntitlementDef("calls", 100, reset_period=ResetPeriod.MONTH)
    daily = EntitlementDef("calls", 100, reset_period=ResetPeriod.DAY)
    catalog = with_plan("daily", daily, catalog=with_plan("monthly", monthly))
    later, earlier = START + DAY, START
    customer_facts = facts(
        sub("daily", sub_id="a", start=later), sub("monthly", sub_id="b", start=earlier)
    )
    calls = snapshot(customer_facts, catalog=catalog).state.features["calls"]
    assert (calls.reset_period, calls.usage_period_anchor) == (ResetPeriod.MONTH, earlier)


@pytest.mark.parametrize(
    ("promotion", "expected"),
    [
        (promo("calls", value=10_000), (10_000, False, False, ())),
        (promo("calls", value=10), (1000, False, False, ())),
        (promo("calls", unlimited=True), (None, True, False, ())),
        (promo("calls", value=1, soft_limit=True), (1000, False, True, ())),
        (promo("calls"), (1000, False, False, ())),
        (
            promo("tier", enum_values=("platinum", "vip")),
            (None, False, False, ("bronze", "platinum", "vip")),
        ),
    ],
    ids=["higher", "lower", "unlimited", "soft", "no-value", "enum-union"],
)
def test_promotions_merge_with_plans(promotion: Any, expected: tuple[Any, ...]) -> None:
    entitlement = snapshot(facts(sub("basic"), promotions=(promotion,))).state.features[
        promotion.feature_id
    ]
    actual = (
        entitlement.usage_limit,
        entitlement.unlimited,
        entitlement.soft_limit,
        entitlement.enum_values,
    )
    assert actual == expected


def test_promotion_only_features_and_reset_periods() -> None:
    promotions = (
        promo("sso", "p1"),
        promo("calls", "p2", value=50_000, reset_period="WEEK"),
        promo("storage", "p3", value=5, reset_period="bogus"),
        promo("unknown-feature", "p4", value=5),
    )
    features = snapshot(facts(sub("basic"), promotions=promotions)).state.features
    assert "sso" in features and "unknown-feature" not in features
    calls = features["calls"]
    assert (calls.usage_limit, calls.reset_period) == (50_000, ResetPeriod.WEEK)
    # Promotions have no start of their own, so they count calendar weeks (Monday 00:00 UTC).
    assert calls.usage_period_anchor == (NOW - 2 * DAY).replace(hour=0, minute=0, second=0)
    assert features["storage"].usage_limit == 10
    assert features["storage"].reset_period is None


def test_promotion_keeps_the_plans_credit_rate() -> None:
    promotions = (promo("tokens", value=99),)
    tokens = snapshot(facts(sub("basic"), promotions=promotions)).state.features["tokens"]
    assert tokens.credit_rate == CreditRate(2, "credits")
    assert tokens.usage_limit is None


def test_non_metered_features_carry_no_reset_or_rate() -> None:
    calendar = EntitlementDef(
        "seats", 5, reset_period=ResetPeriod.DAY, reset_anchor=ResetAnchor.CALENDAR
    )
    seats = snapshot(facts(sub("odd")), catalog=with_plan("odd", calendar)).state.features["seats"]
    assert seats.reset_period is None and seats.usage_period_anchor is None
