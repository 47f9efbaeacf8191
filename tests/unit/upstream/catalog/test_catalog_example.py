"""The packaged demo catalog loads and exercises every part of the catalog schema."""

from __future__ import annotations

import pytest

from entitlements.model.state import FeatureType, MeterType, ResetPeriod
from upstream.catalog import (
    DEMO_CATALOG,
    Addon,
    AddonBehavior,
    Aggregation,
    Catalog,
    CreditCadence,
    EntitlementDef,
    Plan,
    ResetAnchor,
    load_catalog,
)

EXAMPLE = DEMO_CATALOG


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(EXAMPLE)


def all_entitlements(catalog: Catalog) -> list[EntitlementDef]:
    plans = [e for p in catalog.plans.values() for e in p.entitlements]
    return plans + [e for a in catalog.addons.values() for e in a.entitlements]


def test_currencies_and_features(catalog: Catalog) -> None:
    assert len(catalog.currencies) == 2
    assert len(catalog.features) >= 8
    kinds = {(f.feature_type, f.meter_type) for f in catalog.features.values()}
    assert {
        (FeatureType.BOOLEAN, MeterType.NONE),
        (FeatureType.NUMBER, MeterType.NONE),
        (FeatureType.NUMBER, MeterType.INCREMENTAL),
        (FeatureType.NUMBER, MeterType.FLUCTUATING),
        (FeatureType.ENUM, MeterType.NONE),
    } <= kinds
    meters = [f.event_meter for f in catalog.features.values() if f.event_meter]
    assert {m.aggregation for m in meters} == set(Aggregation)
    assert any(m.filters for m in meters)


def test_every_reset_period_anchor_and_shape_is_used(catalog: Catalog) -> None:
    entitlements = all_entitlements(catalog)
    assert {e.reset_period for e in entitlements if e.reset_period} == set(ResetPeriod)
    assert {e.reset_anchor for e in entitlements if e.reset_period} == set(ResetAnchor)
    metered = {f.id for f in catalog.features.values() if f.is_metered}
    periods_by_meter = {
        catalog.features[e.feature_id].meter_type
        for e in entitlements
        if e.feature_id in metered and e.reset_period
    }
    assert periods_by_meter == {MeterType.INCREMENTAL, MeterType.FLUCTUATING}
    assert any(e.credit_rate for e in entitlements)
    assert any(e.per_unit for e in entitlements)
    assert any(e.soft_limit for e in entitlements)
    assert any(e.unlimited for e in entitlements)
    assert {e.behavior for a in catalog.addons.values() for e in a.entitlements} == set(
        AddonBehavior
    )


def test_products_plans_and_credits(catalog: Catalog) -> None:
    assert sorted(p.multiple_subscriptions for p in catalog.products.values()) == [False, True]
    assert [p.id for p in catalog.plan_chain("enterprise")] == ["free", "pro", "enterprise"]
    assert catalog.plans["enterprise"].trial_days > 0
    owners: list[Plan | Addon] = [*catalog.plans.values(), *catalog.addons.values()]
    cadences = {c.cadence for owner in owners for c in owner.credits}
    assert cadences == set(CreditCadence)
    resolved = catalog.resolved_plan_entitlements("enterprise")
    assert {"sso", "audit-log", "seats", "api-calls", "ai-tokens"} <= set(resolved)
    assert resolved["api-calls"].unlimited
