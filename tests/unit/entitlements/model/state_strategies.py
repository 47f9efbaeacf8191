"""Hypothesis strategies for the canonical state model: random valid states, usage records and
snapshots, at any timestamp precision the wire format carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import hypothesis.strategies as st

from entitlements.model.state import (
    CreditEntitlement,
    CreditRate,
    Currency,
    CustomerSnapshot,
    DenialReason,
    EntitlementState,
    Feature,
    FeatureEntitlement,
    FeatureType,
    MeterType,
    ResetPeriod,
    UsageRecord,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MS_MIN = -2_208_988_800_000  # 1900-01-01
MS_MAX = 7_258_118_399_999  # 2199-12-31T23:59:59.999


def _datetimes(unit_ms: int) -> st.SearchStrategy[datetime]:
    return st.integers(MS_MIN // unit_ms, MS_MAX // unit_ms).map(
        lambda n: EPOCH + timedelta(milliseconds=n * unit_ms)
    )


ms_datetimes = _datetimes(1)

ids = st.text(min_size=1, max_size=8)
opt_text = st.one_of(st.none(), st.text(max_size=8))
finite = st.floats(allow_nan=False, allow_infinity=False)
reasons = st.one_of(st.none(), st.sampled_from(list(DenialReason)))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | finite | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def states(dts: st.SearchStrategy[datetime]) -> st.SearchStrategy[EntitlementState]:
    opt_dt = st.one_of(st.none(), dts)
    features = st.builds(
        FeatureEntitlement,
        feature=st.builds(
            Feature,
            id=ids,
            feature_type=st.sampled_from(list(FeatureType)),
            meter_type=st.sampled_from(list(MeterType)),
            units=opt_text,
            units_plural=opt_text,
            display_name=opt_text,
        ),
        usage_limit=st.one_of(st.none(), finite),
        unlimited=st.booleans(),
        soft_limit=st.booleans(),
        denial_reason=reasons,
        enum_values=st.lists(st.text(max_size=5), max_size=4).map(tuple),
        reset_period=st.one_of(st.none(), st.sampled_from(list(ResetPeriod))),
        usage_period_anchor=opt_dt,
        credit_rate=st.one_of(st.none(), st.builds(CreditRate, finite, ids)),
        valid_until=opt_dt,
    )
    credits = st.builds(
        CreditEntitlement,
        currency=st.builds(
            Currency,
            currency_id=ids,
            display_name=st.text(max_size=8),
            description=opt_text,
            unit_singular=opt_text,
            unit_plural=opt_text,
            metadata=st.one_of(
                st.none(), st.dictionaries(st.text(max_size=5), json_values, max_size=3)
            ),
        ),
        granted=finite,
        soft_limit=st.booleans(),
        denial_reason=reasons,
        valid_until=opt_dt,
    )
    return st.builds(
        EntitlementState,
        customer_id=ids,
        resource_id=st.one_of(st.none(), ids),
        denial_reason=reasons,
        features=st.lists(features, max_size=4, unique_by=lambda e: e.feature.id).map(
            lambda items: {e.feature.id: e for e in items}
        ),
        credits=st.lists(credits, max_size=3, unique_by=lambda c: c.currency.currency_id).map(
            lambda items: {c.currency.currency_id: c for c in items}
        ),
        version=st.integers(-(2**63), 2**63),
        updated_at=opt_dt,
    )


def usage_records(dts: st.SearchStrategy[datetime]) -> st.SearchStrategy[UsageRecord]:
    opt_dt = st.one_of(st.none(), dts)
    return st.builds(
        UsageRecord,
        current_usage=finite,
        period_start=opt_dt,
        period_end=opt_dt,
        updated_at=opt_dt,
        version=st.integers(-(2**63), 2**63),
    )


def snapshots(dts: st.SearchStrategy[datetime]) -> st.SearchStrategy[CustomerSnapshot]:
    records = usage_records(dts)
    return st.builds(
        CustomerSnapshot,
        state=states(dts),
        feature_usage=st.dictionaries(st.text(max_size=6), records, max_size=3),
        credit_usage=st.dictionaries(st.text(max_size=6), records, max_size=3),
    )
