"""Properties of compute_snapshot over generated customers (derandomised, so reproducible)."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import datetime, timedelta

import hypothesis.strategies as st
from hypothesis import given, settings

from entitlements.model.state import (
    CreditEntitlement,
    DenialReason,
    FeatureEntitlement,
    FeatureType,
)
from tests.unit.upstream.compute.effective_support import (
    CATALOG,
    CUSTOMER_ID,
    NOW,
    facts,
    grant,
    promo,
    run,
    sub,
)
from upstream.catalog import AddonBehavior
from upstream.compute.effective import feature_entitlement
from upstream.domain import (
    CreditGrant,
    Customer,
    CustomerFacts,
    GrantType,
    PromotionalEntitlement,
    Subscription,
    SubscriptionStatus,
)

PROPERTY = settings(max_examples=120, derandomize=True, database=None, deadline=None)

RESOURCES = [None, "r1"]
INCREMENT_ONLY = sorted(
    a.id
    for a in CATALOG.addons.values()
    if all(e.behavior is AddonBehavior.INCREMENT for e in a.entitlements)
)


def offsets(max_hours: int, past_hours: int | None = None) -> st.SearchStrategy[datetime]:
    past = max_hours if past_hours is None else past_hours
    return st.integers(-past * 60, max_hours * 60).map(lambda m: NOW + timedelta(minutes=m))


@st.composite
def subscriptions(draw: st.DrawFn, index: int = 0) -> Subscription:
    return sub(
        draw(st.sampled_from(sorted(CATALOG.plans))),
        sub_id=f"s{index}-{draw(st.integers(0, 99))}",
        resource_id=draw(st.sampled_from(RESOURCES)),
        # Mostly live subscriptions, so that the merging paths get exercised.
        status=draw(st.sampled_from([*SubscriptionStatus, SubscriptionStatus.ACTIVE])),
        start=draw(offsets(24 * 30, past_hours=24 * 400)),
        trial_end=draw(st.none() | offsets(24 * 30)),
        cancel_at=draw(st.none() | offsets(24 * 30)),
        addons=draw(st.dictionaries(st.sampled_from(sorted(CATALOG.addons)), st.integers(1, 3))),
        billable_quantities=draw(st.dictionaries(st.just("seats"), st.integers(0, 20))),
    )


@st.composite
def promotions(draw: st.DrawFn) -> PromotionalEntitlement:
    return promo(
        draw(st.sampled_from(sorted(CATALOG.features))),
        f"p{draw(st.integers(0, 999))}",
        resource_id=draw(st.sampled_from(RESOURCES)),
        value=draw(st.none() | st.integers(0, 20_000).map(float)),
        unlimited=draw(st.booleans()),
        soft_limit=draw(st.booleans()),
        enum_values=tuple(draw(st.lists(st.sampled_from(["bronze", "gold", "vip"])))),
        reset_period=draw(st.sampled_from([None, "HOUR", "DAY", "WEEK", "MONTH", "YEAR"])),
        expires_at=draw(st.none() | offsets(24 * 30)),
        revoked_at=draw(st.none() | offsets(24 * 30)),
    )


@st.composite
def grants(draw: st.DrawFn) -> CreditGrant:
    return grant(
        draw(st.sampled_from(["credits", "gpu"])),
        float(draw(st.integers(1, 1000))),
        draw(st.sampled_from(list(GrantType))),
        f"g{draw(st.integers(0, 999))}",
        resource_id=draw(st.sampled_from(RESOURCES)),
        effective_at=draw(st.none() | offsets(24 * 30)),
        expires_at=draw(st.none() | offsets(24 * 30)),
        voided_at=draw(st.none() | offsets(24 * 30)),
        consumed=float(draw(st.integers(0, 1000))),
    )


@st.composite
def customers(draw: st.DrawFn) -> CustomerFacts:
    subs = [draw(subscriptions(i)) for i in range(draw(st.integers(0, 4)))]
    resource_id = draw(st.sampled_from(RESOURCES))
    if resource_id is not None:
        # Keep most generated resources known, so the interesting paths run.
        subs.append(replace(draw(subscriptions(9)), resource_id=resource_id))
    return facts(
        *subs,
        promotions=tuple(draw(st.lists(promotions(), max_size=3))),
        grants=tuple(draw(st.lists(grants(), max_size=4))),
        resource_id=resource_id,
        deficits=draw(st.dictionaries(st.sampled_from(["credits", "gpu"]), st.integers(0, 50))),
    )


def generosity(entitlement: FeatureEntitlement) -> float:
    if entitlement.feature.feature_type is not FeatureType.NUMBER:
        return 0.0
    if entitlement.unlimited or entitlement.usage_limit is None:
        return math.inf
    return entitlement.usage_limit


@PROPERTY
@given(customers(), st.sampled_from(INCREMENT_ONLY), st.integers(1, 3), st.data())
def test_an_increment_addon_never_lowers_anything(
    customer_facts: CustomerFacts, addon_id: str, quantity: int, data: st.DataObject
) -> None:
    scope = (None, customer_facts.resource_id)
    subs = customer_facts.subscriptions
    live = [i for i, s in enumerate(subs) if s.is_live(NOW) and s.resource_id in scope]
    if not live:
        return
    i = data.draw(st.sampled_from(live))
    target = customer_facts.subscriptions[i]
    addons = {**target.addons, addon_id: target.addons.get(addon_id, 0) + quantity}
    changed = list(customer_facts.subscriptions)
    changed[i] = replace(target, addons=addons)
    before = run(customer_facts)[0].state
    after = run(replace(customer_facts, subscriptions=tuple(changed)))[0].state
    for fid, old in before.features.items():
        new = after.features[fid]
        assert generosity(new) >= generosity(old), fid
        assert set(new.enum_values) >= set(old.enum_values), fid
        assert new.soft_limit or not old.soft_limit, fid
    for cid, wallet in before.credits.items():
        assert after.credits[cid].soft_limit or not wallet.soft_limit


@PROPERTY
@given(customers())
def test_without_subscriptions_only_live_promotions_keep_access(
    customer_facts: CustomerFacts,
) -> None:
    bare = replace(customer_facts, subscriptions=())
    state = run(bare)[0].state
    scope = (None, customer_facts.resource_id)
    live_promotions = [
        p
        for p in customer_facts.promotions
        if p.resource_id in scope
        and (p.revoked_at is None or p.revoked_at > NOW)
        and (p.expires_at is None or p.expires_at > NOW)
    ]
    if customer_facts.resource_id is not None:
        # With no subscription at all, no resource is known.
        assert state.denial_reason is DenialReason.CUSTOMER_RESOURCE_NOT_FOUND
    elif live_promotions:
        assert state.denial_reason is None
        assert set(state.features) == {p.feature_id for p in live_promotions}
    else:
        assert state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION
        assert not state.features


@PROPERTY
@given(customers(), st.floats(0.0, 1.0, exclude_max=True))
def test_nothing_changes_before_the_reported_instant(
    customer_facts: CustomerFacts, fraction: float
) -> None:
    first, next_change = run(customer_facts)
    horizon = next_change if next_change is not None else NOW + timedelta(days=3650)
    assert horizon > NOW
    # timedelta * float rounds to the microsecond, which could land on the horizon itself.
    later = min(NOW + (horizon - NOW) * fraction, horizon - timedelta(microseconds=1))
    assert run(customer_facts, now=later) == (first, next_change)


@PROPERTY
@given(customers(), st.data())
def test_order_of_facts_does_not_matter(customer_facts: CustomerFacts, data: st.DataObject) -> None:
    shuffled = replace(
        customer_facts,
        subscriptions=tuple(data.draw(st.permutations(customer_facts.subscriptions))),
        grants=tuple(data.draw(st.permutations(customer_facts.grants))),
    )
    assert run(shuffled) == run(customer_facts)


@PROPERTY
@given(customers())
def test_valid_until_is_the_next_change_on_every_item(customer_facts: CustomerFacts) -> None:
    snapshot, next_change = run(customer_facts)
    assert next_change is None or next_change > NOW
    items: list[FeatureEntitlement | CreditEntitlement] = [
        *snapshot.state.features.values(),
        *snapshot.state.credits.values(),
    ]
    assert all(item.valid_until == next_change for item in items)
    assert snapshot.state.customer_id == CUSTOMER_ID
    assert set(snapshot.feature_usage) <= set(snapshot.state.features)
    assert set(snapshot.credit_usage) == set(snapshot.state.credits)


@PROPERTY
@given(customers(), st.sampled_from(["live", "archived", "archiving", "unknown"]), st.data())
def test_one_feature_computed_alone_is_that_feature_of_the_whole_state(
    customer_facts: CustomerFacts, customer: str, data: st.DataObject
) -> None:
    """Usage reports compute their feature alone (feature_entitlement): it must agree with the
    whole state on every feature, valid_until apart, without grants, deficits or usage."""
    if customer == "unknown":
        customer_facts = replace(customer_facts, customer=None)
    elif customer != "live":
        at = data.draw(offsets(24 * 30, past_hours=0 if customer == "archiving" else 24 * 30))
        customer_facts = replace(customer_facts, customer=Customer(CUSTOMER_ID, archived_at=at))
    whole = run(customer_facts)[0].state.features
    sources = replace(customer_facts, grants=(), deficits={}, usage={})
    for feature_id in [*sorted(CATALOG.features), "no-such-feature"]:
        alone = feature_entitlement(
            CATALOG, sources, NOW, customer_id=CUSTOMER_ID, feature_id=feature_id
        )
        expected = whole.get(feature_id)
        assert alone == (None if expected is None else replace(expected, valid_until=None))
