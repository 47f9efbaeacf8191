"""Tests for sidecar.evaluation.getters: what each read RPC answers.

Covers the typed getters (stigg-compat.md 2.3), the unified GetEntitlement /
GetEntitlementV2 kind selection and V2 fallback rule (2.6), credit results (2.4),
the list RPCs and fallback precedence. ``now`` is always injected.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

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
from sidecar.evaluation.fallback import DEFAULT_FALLBACK, FallbackValues
from sidecar.evaluation.getters import (
    INT32_MAX,
    Kind,
    Result,
    credit_entitlement,
    entitlement_list,
    feature_entitlement,
    kind_of,
    typed_entitlement,
)
from sidecar.evaluation.rules import NO_USAGE, EffectiveUsage

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
R = DenialReason
PROPERTY = settings(max_examples=200, derandomize=True, database=None, deadline=None)

TYPED_KINDS = (Kind.BOOLEAN, Kind.NUMERIC, Kind.METERED, Kind.ENUM)


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def entitlement(kind: Kind, fid: str = "f", **kw: Any) -> FeatureEntitlement:
    if kind is Kind.BOOLEAN:
        return FeatureEntitlement(Feature(fid, FeatureType.BOOLEAN), **kw)
    if kind is Kind.ENUM:
        kw.setdefault("enum_values", ("a", "b"))
        return FeatureEntitlement(Feature(fid, FeatureType.ENUM), **kw)
    if kind is Kind.NUMERIC:
        kw.setdefault("usage_limit", 5.0)
        return FeatureEntitlement(Feature(fid, FeatureType.NUMBER, MeterType.NONE), **kw)
    assert kind is Kind.METERED
    kw.setdefault("usage_limit", 10.0)
    return FeatureEntitlement(Feature(fid, FeatureType.NUMBER, MeterType.INCREMENTAL), **kw)


def wallet(cid: str = "cred", granted: float = 100.0, **kw: Any) -> CreditEntitlement:
    return CreditEntitlement(Currency(cid, cid.upper()), granted, **kw)


def snap(
    *features: FeatureEntitlement,
    credits: tuple[CreditEntitlement, ...] = (),
    feature_usage: Mapping[str, UsageRecord] | None = None,
    credit_usage: Mapping[str, float] | None = None,
    customer_reason: DenialReason | None = None,
) -> CustomerSnapshot:
    state = EntitlementState(
        "cust",
        denial_reason=customer_reason,
        features={f.feature.id: f for f in features},
        credits={c.currency.currency_id: c for c in credits},
    )
    return CustomerSnapshot(
        state,
        dict(feature_usage or {}),
        {k: UsageRecord(v) for k, v in (credit_usage or {}).items()},
    )


def typed(
    snapshot: CustomerSnapshot | None,
    kind: Kind,
    fid: str = "f",
    *,
    requested_usage: float = 0.0,
    requested_values: tuple[str, ...] = (),
    request_fallback: FallbackValues | None = None,
    global_fallbacks: Mapping[str, FallbackValues] | None = None,
) -> Result:
    return typed_entitlement(
        snapshot,
        kind,
        fid,
        NOW,
        requested_usage=requested_usage,
        requested_values=requested_values,
        request_fallback=request_fallback,
        global_fallbacks=global_fallbacks or {},
    )


def unified(
    snapshot: CustomerSnapshot | None,
    fid: str = "f",
    *,
    v2: bool = False,
    requested_usage: float = 0.0,
    requested_values: tuple[str, ...] = (),
    request_fallback: FallbackValues | None = None,
    global_fallbacks: Mapping[str, FallbackValues] | None = None,
) -> Result:
    return feature_entitlement(
        snapshot,
        fid,
        NOW,
        requested_usage=requested_usage,
        requested_values=requested_values,
        request_fallback=request_fallback,
        global_fallbacks=global_fallbacks or {},
        v2=v2,
    )


# --------------------------------------------------------------------------- kind_of


@pytest.mark.parametrize(
    ("feature", "kind"),
    [
        pytest.param(Feature("f", FeatureType.BOOLEAN), Kind.BOOLEAN, id="boolean"),
        pytest.param(Feature("f", FeatureType.ENUM), Kind.ENUM, id="enum"),
        pytest.param(Feature("f", FeatureType.NUMBER), Kind.NUMERIC, id="number-default-meter"),
        pytest.param(Feature("f", FeatureType.NUMBER, MeterType.NONE), Kind.NUMERIC, id="num-none"),
        pytest.param(
            Feature("f", FeatureType.NUMBER, MeterType.INCREMENTAL), Kind.METERED, id="incremental"
        ),
        pytest.param(
            Feature("f", FeatureType.NUMBER, MeterType.FLUCTUATING), Kind.METERED, id="fluctuating"
        ),
        pytest.param(
            Feature("f", FeatureType.BOOLEAN, MeterType.INCREMENTAL), Kind.BOOLEAN, id="bool-meter"
        ),
    ],
)
def test_kind_of(feature: Feature, kind: Kind) -> None:
    assert kind_of(feature) is kind


# --------------------------------------------------------------------------- typed getters

MISMATCHES = [
    pytest.param(have, asked, id=f"{have.value}-via-{asked.value}")
    for have in TYPED_KINDS
    for asked in TYPED_KINDS
    if have is not asked
]


@pytest.mark.parametrize(("have", "asked"), MISMATCHES)
def test_type_mismatch_serves_the_default_fallback(have: Kind, asked: Kind) -> None:
    r = typed(snap(entitlement(have)), asked, requested_usage=3.0, requested_values=("x",))
    assert r.kind is asked
    assert (r.has_access, r.is_fallback, r.reason) == (False, True, R.FEATURE_TYPE_MISMATCH)
    assert (r.usage_limit, r.is_unlimited, r.value, r.enum_values) == (None, False, None, ())
    assert (r.requested_usage, r.requested_values) == (3.0, ("x",))
    assert r.entitlement is None


@pytest.mark.parametrize(("have", "asked"), MISMATCHES)
@pytest.mark.parametrize("source", ["request", "global"])
def test_type_mismatch_serves_the_chosen_fallback(have: Kind, asked: Kind, source: str) -> None:
    fb = FallbackValues(has_access=True, value=7, is_unlimited=True, usage_limit=9.0)
    r = typed(
        snap(entitlement(have)),
        asked,
        request_fallback=fb if source == "request" else None,
        global_fallbacks={"f": fb} if source == "global" else None,
    )
    assert (r.has_access, r.is_fallback, r.reason) == (True, True, R.FEATURE_TYPE_MISMATCH)
    assert (r.value, r.is_unlimited, r.usage_limit) == (7, True, 9.0)


@pytest.mark.parametrize(("have", "asked"), MISMATCHES)
def test_type_mismatch_beats_server_reason(have: Kind, asked: Kind) -> None:
    r = typed(snap(entitlement(have, denial_reason=R.REVOKED)), asked)
    assert (r.is_fallback, r.reason) == (True, R.FEATURE_TYPE_MISMATCH)


@pytest.mark.parametrize("kind", TYPED_KINDS, ids=lambda k: k.value)
def test_matching_kind_is_decided_not_fallback(kind: Kind) -> None:
    r = typed(snap(entitlement(kind)), kind)
    assert (r.kind, r.has_access, r.is_fallback, r.reason) == (kind, True, False, None)
    assert r.entitlement is not None


@pytest.mark.parametrize("kind", TYPED_KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize(
    ("request_fb", "global_fb", "expected"),
    [
        pytest.param(None, None, DEFAULT_FALLBACK, id="default"),
        pytest.param(
            None,
            FallbackValues(has_access=True, usage_limit=1000.0),
            FallbackValues(has_access=True, usage_limit=1000.0),
            id="global",
        ),
        pytest.param(
            FallbackValues(has_access=True, value=3),
            None,
            FallbackValues(has_access=True, value=3),
            id="request",
        ),
        pytest.param(
            FallbackValues(has_access=False),
            FallbackValues(has_access=True, usage_limit=1000.0, is_unlimited=True),
            FallbackValues(has_access=False),
            id="request-beats-global-no-merge",
        ),
        pytest.param(
            FallbackValues(has_access=True, enum_values=("x",)),
            FallbackValues(has_access=False, value=4, usage_limit=5.0),
            FallbackValues(has_access=True, enum_values=("x",)),
            id="request-replaces-global-wholesale",
        ),
    ],
)
def test_unavailable_snapshot_serves_fallback_by_precedence(
    kind: Kind,
    request_fb: FallbackValues | None,
    global_fb: FallbackValues | None,
    expected: FallbackValues,
) -> None:
    r = typed(
        None,
        kind,
        requested_usage=2.0,
        requested_values=("v",),
        request_fallback=request_fb,
        global_fallbacks={"f": global_fb} if global_fb else {"other": FallbackValues(True)},
    )
    assert (r.kind, r.is_fallback, r.reason) == (kind, True, R.UNKNOWN)
    assert r.has_access is expected.has_access
    assert (r.value, r.usage_limit, r.enum_values) == (
        expected.value,
        expected.usage_limit,
        expected.enum_values,
    )
    assert r.is_unlimited is bool(expected.is_unlimited)
    assert (r.requested_usage, r.requested_values) == (2.0, ("v",))
    assert (r.entitlement, r.usage, r.soft_limit, r.wallet) == (None, NO_USAGE, False, None)


def test_global_fallback_is_keyed_by_feature_id() -> None:
    fallbacks = {"g": FallbackValues(has_access=True)}
    assert typed(None, Kind.BOOLEAN, "f", global_fallbacks=fallbacks).has_access is False
    assert typed(None, Kind.BOOLEAN, "g", global_fallbacks=fallbacks).has_access is True


@pytest.mark.parametrize("kind", TYPED_KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize(
    "customer_reason",
    [
        None,
        R.CUSTOMER_NOT_FOUND,
        R.CUSTOMER_IS_ARCHIVED,
        R.NO_ACTIVE_SUBSCRIPTION,
    ],
    ids=lambda r: r.value if r else "customer-ok",
)
def test_missing_entitlement_is_a_decision_not_a_fallback(
    kind: Kind, customer_reason: DenialReason | None
) -> None:
    r = typed(
        snap(entitlement(kind, "other"), customer_reason=customer_reason),
        kind,
        requested_usage=4.0,
        requested_values=("a", "z"),
        request_fallback=FallbackValues(has_access=True, usage_limit=1.0),
        global_fallbacks={"f": FallbackValues(has_access=True, value=1)},
    )
    assert (r.kind, r.has_access, r.is_fallback) == (kind, False, False)
    assert r.reason is (customer_reason or R.NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION)
    assert r.entitlement is None
    # Section 2.3 not-found shape: zero usage, not unlimited, no soft limit, echoes.
    assert (r.usage, r.usage_limit, r.is_unlimited, r.soft_limit) == (NO_USAGE, None, False, False)
    assert (r.value, r.enum_values) == (None, ())
    assert (r.requested_usage, r.requested_values) == (4.0, ("a", "z"))


def test_metered_mapping() -> None:
    record = UsageRecord(4.0, utc(2024, 6, 1), utc(2024, 7, 1))
    ent = entitlement(
        Kind.METERED,
        usage_limit=10.0,
        reset_period=ResetPeriod.MONTH,
        usage_period_anchor=utc(2024, 1, 1),
    )
    r = typed(snap(ent, feature_usage={"f": record}), Kind.METERED, requested_usage=6.0)
    assert (r.has_access, r.reason, r.is_fallback) == (True, None, False)
    assert r.usage == EffectiveUsage(4.0, utc(2024, 6, 1), utc(2024, 7, 1))
    assert (r.usage_limit, r.is_unlimited, r.soft_limit, r.requested_usage) == (
        10.0,
        False,
        False,
        6.0,
    )
    assert r.entitlement is ent
    denied = typed(snap(ent, feature_usage={"f": record}), Kind.METERED, requested_usage=6.5)
    assert (denied.has_access, denied.reason) == (False, R.REQUESTED_USAGE_EXCEEDING_LIMIT)
    assert denied.usage.current_usage == 4.0


def test_metered_mapping_rolls_usage_over() -> None:
    record = UsageRecord(10.0, utc(2024, 5, 1), utc(2024, 6, 1))
    ent = entitlement(
        Kind.METERED, reset_period=ResetPeriod.MONTH, usage_period_anchor=utc(2024, 1, 1)
    )
    r = typed(snap(ent, feature_usage={"f": record}), Kind.METERED, requested_usage=1.0)
    assert r.has_access is True
    assert r.usage == EffectiveUsage(0.0, utc(2024, 6, 1), utc(2024, 7, 1))


@pytest.mark.parametrize(
    ("kw", "unlimited", "soft"),
    [
        pytest.param({"unlimited": True, "usage_limit": None}, True, False, id="unlimited"),
        pytest.param({"soft_limit": True}, False, True, id="soft"),
    ],
)
def test_metered_flags(kw: dict[str, Any], unlimited: bool, soft: bool) -> None:
    r = typed(
        snap(entitlement(Kind.METERED, **kw), feature_usage={"f": UsageRecord(1e9)}),
        Kind.METERED,
        requested_usage=1e9,
    )
    assert (r.has_access, r.is_unlimited, r.soft_limit) == (True, unlimited, soft)


@pytest.mark.parametrize(
    ("limit", "value"),
    [
        pytest.param(5.0, 5, id="5"),
        pytest.param(5.9, 5, id="truncates"),
        pytest.param(-5.9, -5, id="truncates-toward-zero"),
        pytest.param(0.0, 0, id="zero"),
        pytest.param(None, None, id="null"),
        pytest.param(float(INT32_MAX), INT32_MAX, id="int32-max"),
        pytest.param(1e12, INT32_MAX, id="clamped-high"),
        pytest.param(-1e12, -INT32_MAX - 1, id="clamped-low"),
    ],
)
def test_numeric_value_mapping(limit: float | None, value: int | None) -> None:
    r = typed(snap(entitlement(Kind.NUMERIC, usage_limit=limit)), Kind.NUMERIC, requested_usage=1e9)
    assert (r.has_access, r.reason, r.value, r.usage_limit) == (True, None, value, limit)
    assert r.is_unlimited is False


def test_numeric_unlimited_flag() -> None:
    ent = entitlement(Kind.NUMERIC, usage_limit=None, unlimited=True)
    r = typed(snap(ent), Kind.NUMERIC)
    assert (r.has_access, r.is_unlimited, r.value) == (True, True, None)


@pytest.mark.parametrize(
    ("values", "granted"),
    [
        pytest.param((), True, id="none-requested"),
        pytest.param(("b",), True, id="subset"),
        pytest.param(("b", "c"), False, id="not-subset"),
    ],
)
def test_enum_mapping(values: tuple[str, ...], granted: bool) -> None:
    r = typed(snap(entitlement(Kind.ENUM)), Kind.ENUM, requested_values=values)
    assert (r.has_access, r.is_fallback) == (granted, False)
    assert r.reason is (None if granted else R.REQUESTED_VALUES_MISMATCH)
    assert (r.enum_values, r.requested_values) == (("a", "b"), values)


@pytest.mark.parametrize("kind", TYPED_KINDS, ids=lambda k: k.value)
def test_server_reason_in_typed_getter(kind: Kind) -> None:
    r = typed(snap(entitlement(kind, denial_reason=R.BUDGET_EXCEEDED)), kind)
    assert (r.has_access, r.is_fallback, r.reason) == (False, False, R.BUDGET_EXCEEDED)


def test_soft_limit_is_reported_even_when_denied_by_server_reason() -> None:
    ent = entitlement(Kind.METERED, soft_limit=True, denial_reason=R.BUDGET_EXCEEDED)
    r = typed(snap(ent), Kind.METERED)
    assert (r.has_access, r.reason) == (False, R.BUDGET_EXCEEDED)
    # Section 2.3: metered mapping has_soft_limit = the entitlement's hasSoftLimit.
    assert r.soft_limit is True


def test_credit_backed_metered_getter_carries_the_wallet() -> None:
    ent = entitlement(Kind.METERED, usage_limit=None, credit_rate=CreditRate(2.0, "cred"))
    s = snap(ent, credits=(wallet(granted=10.0, soft_limit=True),), credit_usage={"cred": 10.0})
    r = typed(s, Kind.METERED, requested_usage=100.0)
    assert (r.has_access, r.soft_limit) == (True, True)
    assert r.wallet is not None and r.wallet.remaining == 0.0
    hard = snap(ent, credits=(wallet(granted=10.0),), credit_usage={"cred": 4.0})
    assert typed(hard, Kind.METERED, requested_usage=3.0).has_access is True
    denied = typed(hard, Kind.METERED, requested_usage=3.5)
    assert (denied.has_access, denied.reason, denied.soft_limit) == (
        False,
        R.INSUFFICIENT_CREDITS,
        False,
    )


# --------------------------------------------------------------------------- unified getter


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize("kind", TYPED_KINDS, ids=lambda k: k.value)
def test_unified_kind_follows_the_entitlement(kind: Kind, v2: bool) -> None:
    # A fallback whose shape disagrees must not influence the kind of a known feature.
    r = unified(
        snap(entitlement(kind)),
        v2=v2,
        request_fallback=FallbackValues(enum_values=("x",)),
        global_fallbacks={"f": FallbackValues(value=1)},
    )
    assert (r.kind, r.has_access, r.is_fallback, r.reason) == (kind, True, False, None)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize(
    ("fallback", "kind"),
    [
        pytest.param(None, Kind.BOOLEAN, id="no-fallback-boolean"),
        pytest.param(FallbackValues(has_access=True), Kind.BOOLEAN, id="has-access-only"),
        pytest.param(FallbackValues(enum_values=("x",)), Kind.ENUM, id="enum-values"),
        pytest.param(FallbackValues(usage_limit=5.0), Kind.METERED, id="usage-limit"),
        pytest.param(FallbackValues(value=5), Kind.NUMERIC, id="value"),
        pytest.param(FallbackValues(is_unlimited=True), Kind.METERED, id="is-unlimited"),
        pytest.param(FallbackValues(is_unlimited=False), Kind.METERED, id="is-unlimited-false"),
        pytest.param(
            FallbackValues(value=5, usage_limit=5.0), Kind.METERED, id="limit-beats-value"
        ),
        pytest.param(
            FallbackValues(value=5, enum_values=("x",), usage_limit=1.0), Kind.ENUM, id="enum-first"
        ),
        pytest.param(FallbackValues(value=5, is_unlimited=True), Kind.NUMERIC, id="value-first"),
    ],
)
@pytest.mark.parametrize("source", ["request", "global"])
def test_unified_kind_of_unknown_feature_follows_the_fallback_shape(
    fallback: FallbackValues | None, kind: Kind, v2: bool, source: str
) -> None:
    request_fb = fallback if source == "request" else None
    global_fb = {"f": fallback} if source == "global" and fallback else {}
    # Feature missing from a known state: a decision, shaped by the fallback.
    found = unified(snap(), v2=v2, request_fallback=request_fb, global_fallbacks=global_fb)
    assert (found.kind, found.has_access, found.is_fallback) == (kind, False, False)
    assert found.reason is R.NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION
    # State unavailable: the fallback itself, same shape.
    down = unified(None, v2=v2, request_fallback=request_fb, global_fallbacks=global_fb)
    assert (down.kind, down.is_fallback) == (kind, True)


@pytest.mark.parametrize(
    ("request_fb", "global_fb", "v1_reason", "v2_reason", "has_access"),
    [
        pytest.param(None, None, R.UNKNOWN, R.UNKNOWN, False, id="default"),
        pytest.param(
            None, FallbackValues(has_access=True), R.UNKNOWN, None, True, id="global-granting"
        ),
        pytest.param(
            None,
            FallbackValues(has_access=True, usage_limit=1000.0),
            R.UNKNOWN,
            None,
            True,
            id="global-granting-metered",
        ),
        pytest.param(
            None, FallbackValues(has_access=False), R.UNKNOWN, R.UNKNOWN, False, id="global-denying"
        ),
        pytest.param(
            FallbackValues(has_access=True),
            None,
            R.UNKNOWN,
            R.UNKNOWN,
            True,
            id="request-granting-keeps-unknown",
        ),
        pytest.param(
            FallbackValues(has_access=True),
            FallbackValues(has_access=True),
            R.UNKNOWN,
            R.UNKNOWN,
            True,
            id="request-and-global-granting",
        ),
        pytest.param(
            FallbackValues(has_access=False),
            FallbackValues(has_access=True),
            R.UNKNOWN,
            R.UNKNOWN,
            False,
            id="request-denying-beats-global",
        ),
    ],
)
def test_v2_fallback_reason_rule(
    request_fb: FallbackValues | None,
    global_fb: FallbackValues | None,
    v1_reason: DenialReason | None,
    v2_reason: DenialReason | None,
    has_access: bool,
) -> None:
    fallbacks = {"f": global_fb} if global_fb else {}
    v1 = unified(None, request_fallback=request_fb, global_fallbacks=fallbacks)
    v2 = unified(None, v2=True, request_fallback=request_fb, global_fallbacks=fallbacks)
    for r in (v1, v2):
        assert (r.has_access, r.is_fallback, r.subject_id) == (has_access, True, "f")
    assert v1.reason is v1_reason
    assert v2.reason is v2_reason


def test_unified_global_fallback_values_are_served() -> None:
    fb = FallbackValues(has_access=True, usage_limit=1000.0)
    r = unified(None, v2=True, requested_usage=3.0, global_fallbacks={"f": fb})
    assert (r.kind, r.usage_limit, r.requested_usage, r.is_unlimited) == (
        Kind.METERED,
        1000.0,
        3.0,
        False,
    )


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_unified_never_reports_type_mismatch(v2: bool) -> None:
    s = snap(entitlement(Kind.ENUM))
    r = unified(s, v2=v2, requested_usage=5.0, requested_values=("a",))
    assert (r.kind, r.has_access, r.reason) == (Kind.ENUM, True, None)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
@pytest.mark.parametrize(
    ("ent", "requested_usage", "values", "reason"),
    [
        pytest.param(
            entitlement(Kind.METERED), 11.0, (), R.REQUESTED_USAGE_EXCEEDING_LIMIT, id="metered"
        ),
        pytest.param(entitlement(Kind.ENUM), 0.0, ("z",), R.REQUESTED_VALUES_MISMATCH, id="enum"),
        pytest.param(
            entitlement(Kind.BOOLEAN, denial_reason=R.REVOKED), 0.0, (), R.REVOKED, id="revoked"
        ),
    ],
)
def test_unified_denials_are_decisions(
    v2: bool,
    ent: FeatureEntitlement,
    requested_usage: float,
    values: tuple[str, ...],
    reason: DenialReason,
) -> None:
    r = unified(
        snap(ent),
        v2=v2,
        requested_usage=requested_usage,
        requested_values=values,
        global_fallbacks={"f": FallbackValues(has_access=True)},
    )
    assert (r.has_access, r.is_fallback, r.reason) == (False, False, reason)


@pytest.mark.parametrize("v2", [False, True], ids=["v1", "v2"])
def test_unified_missing_feature_with_customer_reason(v2: bool) -> None:
    s = snap(customer_reason=R.CUSTOMER_IS_ARCHIVED)
    r = unified(s, v2=v2, global_fallbacks={"f": FallbackValues(has_access=True)})
    assert (r.has_access, r.is_fallback, r.reason) == (False, False, R.CUSTOMER_IS_ARCHIVED)


# --------------------------------------------------------------------------- credits


@pytest.mark.parametrize(
    ("request_fb", "has_access", "usage_limit"),
    [
        pytest.param(None, False, None, id="default"),
        pytest.param(FallbackValues(has_access=True), True, None, id="request-granting"),
        pytest.param(
            FallbackValues(has_access=True, usage_limit=50.0), True, 50.0, id="request-with-limit"
        ),
    ],
)
def test_credit_fallback(
    request_fb: FallbackValues | None, has_access: bool, usage_limit: float | None
) -> None:
    r = credit_entitlement(None, "cred", requested_usage=2.0, request_fallback=request_fb)
    assert (r.kind, r.subject_id, r.is_fallback, r.reason) == (
        Kind.CREDIT,
        "cred",
        True,
        R.UNKNOWN,
    )
    assert (r.has_access, r.usage_limit, r.requested_usage, r.wallet) == (
        has_access,
        usage_limit,
        2.0,
        None,
    )


@pytest.mark.parametrize(
    ("granted", "consumed", "soft", "requested", "has_access", "reason"),
    [
        pytest.param(100.0, 30.0, False, 0.0, True, None, id="balance-left"),
        pytest.param(100.0, 30.0, False, 70.0, True, None, id="request-fits-exactly"),
        pytest.param(100.0, 30.0, False, 70.5, False, R.INSUFFICIENT_CREDITS, id="request-over"),
        pytest.param(100.0, 100.0, False, 0.0, False, R.INSUFFICIENT_CREDITS, id="exhausted-hard"),
        pytest.param(100.0, 100.0, True, 0.0, True, None, id="exhausted-soft"),
        pytest.param(100.0, 130.0, True, 10.0, True, None, id="overdrawn-soft"),
    ],
)
def test_credit_result(
    granted: float,
    consumed: float,
    soft: bool,
    requested: float,
    has_access: bool,
    reason: DenialReason | None,
) -> None:
    s = snap(credits=(wallet(granted=granted, soft_limit=soft),), credit_usage={"cred": consumed})
    r = credit_entitlement(s, "cred", requested_usage=requested)
    assert (r.has_access, r.reason, r.is_fallback, r.kind) == (
        has_access,
        reason,
        False,
        Kind.CREDIT,
    )
    assert (r.usage_limit, r.soft_limit, r.requested_usage) == (granted, soft, requested)
    assert r.wallet is not None
    assert (r.wallet.granted, r.wallet.consumed, r.wallet.remaining) == (
        granted,
        consumed,
        granted - consumed,
    )


@pytest.mark.parametrize(
    ("customer_reason", "reason"),
    [
        pytest.param(None, R.ENTITLEMENT_NOT_FOUND, id="customer-ok"),
        pytest.param(R.CUSTOMER_NOT_FOUND, R.CUSTOMER_NOT_FOUND, id="customer-not-found"),
        pytest.param(R.NO_ACTIVE_SUBSCRIPTION, R.NO_ACTIVE_SUBSCRIPTION, id="no-subscription"),
    ],
)
def test_missing_credit_entitlement(
    customer_reason: DenialReason | None, reason: DenialReason
) -> None:
    r = credit_entitlement(
        snap(credits=(wallet("other"),), customer_reason=customer_reason),
        "cred",
        request_fallback=FallbackValues(has_access=True),
    )
    assert (r.has_access, r.is_fallback, r.reason) == (False, False, reason)
    assert (r.usage_limit, r.soft_limit, r.wallet) == (None, False, None)


def test_credit_server_reason() -> None:
    s = snap(credits=(wallet(soft_limit=True, denial_reason=R.REVOKED),))
    r = credit_entitlement(s, "cred")
    assert (r.has_access, r.reason, r.soft_limit) == (False, R.REVOKED, True)


# --------------------------------------------------------------------------- lists


def _list_snapshot(customer_reason: DenialReason | None = None) -> CustomerSnapshot:
    return snap(
        entitlement(Kind.BOOLEAN, "bool"),
        entitlement(Kind.ENUM, "enum"),
        entitlement(Kind.NUMERIC, "num"),
        entitlement(Kind.METERED, "at-limit"),
        entitlement(Kind.METERED, "over-limit"),
        entitlement(Kind.METERED, "budget", denial_reason=R.BUDGET_EXCEEDED),
        credits=(wallet("full"), wallet("empty")),
        feature_usage={"at-limit": UsageRecord(10.0), "over-limit": UsageRecord(10.5)},
        credit_usage={"empty": 100.0},
        customer_reason=customer_reason,
    )


FEATURE_ROWS = [
    ("bool", Kind.BOOLEAN, True, None),
    ("enum", Kind.ENUM, True, None),
    ("num", Kind.NUMERIC, True, None),
    ("at-limit", Kind.METERED, True, None),
    ("over-limit", Kind.METERED, False, R.REQUESTED_USAGE_EXCEEDING_LIMIT),
    ("budget", Kind.METERED, False, R.BUDGET_EXCEEDED),
]
CREDIT_ROWS = [
    ("full", Kind.CREDIT, True, None),
    ("empty", Kind.CREDIT, False, R.INSUFFICIENT_CREDITS),
]


def _rows(results: list[Result]) -> list[tuple[str, Kind, bool, DenialReason | None]]:
    return [(r.subject_id, r.kind, r.has_access, r.reason) for r in results]


@pytest.mark.parametrize(
    ("include_credits", "expected"),
    [
        pytest.param(False, FEATURE_ROWS, id="v1-features-only"),
        pytest.param(True, FEATURE_ROWS + CREDIT_ROWS, id="v2-with-credits"),
    ],
)
@pytest.mark.parametrize(
    "customer_reason",
    [None, R.CUSTOMER_IS_ARCHIVED, R.NO_ACTIVE_SUBSCRIPTION, R.CUSTOMER_NOT_FOUND],
    ids=lambda r: r.value if r else "customer-ok",
)
def test_entitlement_list_evaluates_everything_with_zero_request(
    include_credits: bool,
    expected: list[tuple[str, Kind, bool, DenialReason | None]],
    customer_reason: DenialReason | None,
) -> None:
    result = entitlement_list(
        _list_snapshot(customer_reason),
        NOW,
        include_credits=include_credits,
        global_fallbacks={"bool": FallbackValues(has_access=False), "x": FallbackValues(True)},
    )
    assert result.is_fallback is False
    assert result.reason is customer_reason
    assert _rows(result.entitlements) == expected
    assert all(not r.is_fallback for r in result.entitlements)
    assert all(r.requested_usage == 0.0 and r.requested_values == () for r in result.entitlements)


def test_entitlement_list_of_empty_customer_carries_the_reason() -> None:
    result = entitlement_list(
        snap(customer_reason=R.CUSTOMER_NOT_FOUND),
        NOW,
        include_credits=True,
        global_fallbacks={"f": FallbackValues(True)},
    )
    assert (result.entitlements, result.reason, result.is_fallback) == (
        [],
        R.CUSTOMER_NOT_FOUND,
        False,
    )


def test_entitlement_list_rolls_usage_over() -> None:
    ent = entitlement(
        Kind.METERED, "m", reset_period=ResetPeriod.DAY, usage_period_anchor=utc(2024, 1, 1)
    )
    s = snap(ent, feature_usage={"m": UsageRecord(50.0, utc(2024, 6, 14), utc(2024, 6, 15))})
    (r,) = entitlement_list(s, NOW, include_credits=False, global_fallbacks={}).entitlements
    assert r.has_access is True
    assert r.usage == EffectiveUsage(0.0, utc(2024, 6, 15), utc(2024, 6, 16))


@pytest.mark.parametrize("include_credits", [False, True], ids=["v1", "v2"])
def test_entitlement_list_fallback_is_synthetic(include_credits: bool) -> None:
    fallbacks = {
        "b": FallbackValues(has_access=True),
        "n": FallbackValues(has_access=True, value=3),
        "m": FallbackValues(has_access=False, usage_limit=10.0),
        "u": FallbackValues(has_access=True, is_unlimited=True),
        "e": FallbackValues(has_access=True, enum_values=("x", "y")),
    }
    result = entitlement_list(
        None, NOW, include_credits=include_credits, global_fallbacks=fallbacks
    )
    assert (result.reason, result.is_fallback) == (None, True)
    assert [(r.subject_id, r.kind, r.has_access) for r in result.entitlements] == [
        ("b", Kind.BOOLEAN, True),
        ("n", Kind.NUMERIC, True),
        ("m", Kind.METERED, False),
        ("u", Kind.METERED, True),
        ("e", Kind.ENUM, True),
    ]
    for r in result.entitlements:
        fb = fallbacks[r.subject_id]
        assert (r.is_fallback, r.reason, r.entitlement) == (True, R.UNKNOWN, None)
        assert (r.value, r.usage_limit, r.enum_values) == (fb.value, fb.usage_limit, fb.enum_values)
        assert r.is_unlimited is bool(fb.is_unlimited)
        assert (r.requested_usage, r.requested_values) == (0.0, ())


def test_entitlement_list_fallback_without_global_fallbacks_is_empty() -> None:
    result = entitlement_list(None, NOW, include_credits=True, global_fallbacks={})
    assert (result.entitlements, result.reason, result.is_fallback) == ([], None, True)


# --------------------------------------------------------------------------- properties

fallback_values = st.builds(
    FallbackValues,
    has_access=st.booleans(),
    value=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    is_unlimited=st.one_of(st.none(), st.booleans()),
    usage_limit=st.one_of(st.none(), st.floats(0, 1e9)),
    enum_values=st.lists(st.text(max_size=3), max_size=3).map(tuple),
)


@PROPERTY
@given(
    kind=st.sampled_from(TYPED_KINDS),
    request_fb=st.one_of(st.none(), fallback_values),
    global_fb=st.one_of(st.none(), fallback_values),
)
def test_fallback_results_copy_exactly_one_source(
    kind: Kind, request_fb: FallbackValues | None, global_fb: FallbackValues | None
) -> None:
    if request_fb is not None:
        chosen = request_fb
    elif global_fb is not None:
        chosen = global_fb
    else:
        chosen = DEFAULT_FALLBACK
    r = typed(
        None,
        kind,
        request_fallback=request_fb,
        global_fallbacks={"f": global_fb} if global_fb else {},
    )
    assert (r.has_access, r.value, r.usage_limit, r.enum_values) == (
        chosen.has_access,
        chosen.value,
        chosen.usage_limit,
        chosen.enum_values,
    )
    assert r.is_unlimited is bool(chosen.is_unlimited)
    assert (r.is_fallback, r.reason) == (True, R.UNKNOWN)


@PROPERTY
@given(
    v2=st.booleans(),
    request_fb=st.one_of(st.none(), fallback_values),
    global_fb=st.one_of(st.none(), fallback_values),
)
def test_v2_drops_the_reason_only_for_a_granting_global_fallback(
    v2: bool, request_fb: FallbackValues | None, global_fb: FallbackValues | None
) -> None:
    r = unified(
        None,
        v2=v2,
        request_fallback=request_fb,
        global_fallbacks={"f": global_fb} if global_fb else {},
    )
    dropped = v2 and request_fb is None and global_fb is not None and global_fb.has_access
    assert r.reason is (None if dropped else R.UNKNOWN)
    assert r.is_fallback is True
