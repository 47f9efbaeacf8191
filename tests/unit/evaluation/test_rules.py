"""Tests for sidecar.evaluation.rules: the access decision for one feature or wallet.

Pins the reference's decision algorithm (stigg-compat.md section 2.2), credit
semantics (2.4), the denial reasons (2.5) and every row of the section 10 test
vector table. Everything is deterministic: ``now`` is injected, no wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from sidecar.evaluation.fallback import FallbackValues
from sidecar.evaluation.getters import Kind, credit_entitlement, typed_entitlement
from sidecar.evaluation.rules import (
    NO_USAGE,
    EffectiveUsage,
    WalletView,
    credits_cover,
    decide_credit,
    decide_feature,
    effective_usage,
    wallet_view,
)

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)

R = DenialReason

SERVER_REASONS = (
    R.BUDGET_EXCEEDED,
    R.REVOKED,
    R.INSUFFICIENT_CREDITS,
    R.CUSTOMER_RESOURCE_NOT_FOUND,
    R.FEATURE_NOT_FOUND,
)
CUSTOMER_REASONS = (R.CUSTOMER_NOT_FOUND, R.CUSTOMER_IS_ARCHIVED, R.NO_ACTIVE_SUBSCRIPTION)


# --------------------------------------------------------------------------- builders


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def boolean(fid: str = "flag", **kw: Any) -> FeatureEntitlement:
    return FeatureEntitlement(Feature(fid, FeatureType.BOOLEAN), **kw)


def numeric(fid: str = "seats", value: float | None = 5.0, **kw: Any) -> FeatureEntitlement:
    return FeatureEntitlement(Feature(fid, FeatureType.NUMBER, MeterType.NONE), value, **kw)


def enum(fid: str = "tier", values: tuple[str, ...] = ("a", "b"), **kw: Any) -> FeatureEntitlement:
    return FeatureEntitlement(Feature(fid, FeatureType.ENUM), enum_values=values, **kw)


def metered(
    fid: str = "calls",
    limit: float | None = 10.0,
    *,
    meter: MeterType = MeterType.INCREMENTAL,
    **kw: Any,
) -> FeatureEntitlement:
    return FeatureEntitlement(Feature(fid, FeatureType.NUMBER, meter), limit, **kw)


def credit_backed(
    fid: str = "tokens",
    amount: float = 2.0,
    currency: str = "cred",
    limit: float | None = None,
    **kw: Any,
) -> FeatureEntitlement:
    return metered(fid, limit, credit_rate=CreditRate(amount, currency), **kw)


def wallet(
    cid: str = "cred",
    granted: float = 100.0,
    *,
    soft: bool = False,
    reason: DenialReason | None = None,
) -> CreditEntitlement:
    return CreditEntitlement(Currency(cid, cid.title()), granted, soft, reason)


def usage(
    current: float,
    start: datetime | None = None,
    end: datetime | None = None,
    version: int = 0,
) -> UsageRecord:
    return UsageRecord(current, start, end, version=version)


def snap(
    *features: FeatureEntitlement,
    credits: tuple[CreditEntitlement, ...] = (),
    feature_usage: Mapping[str, float | UsageRecord] | None = None,
    credit_usage: Mapping[str, float | UsageRecord] | None = None,
    customer_reason: DenialReason | None = None,
) -> CustomerSnapshot:
    def records(raw: Mapping[str, float | UsageRecord] | None) -> dict[str, UsageRecord]:
        return {
            k: v if isinstance(v, UsageRecord) else UsageRecord(float(v))
            for k, v in (raw or {}).items()
        }

    state = EntitlementState(
        customer_id="cust",
        denial_reason=customer_reason,
        features={f.feature.id: f for f in features},
        credits={c.currency.currency_id: c for c in credits},
    )
    return CustomerSnapshot(state, records(feature_usage), records(credit_usage))


# --------------------------------------------------------------------------- section 10


@dataclass(frozen=True)
class Outcome:
    has_access: bool
    reason: DenialReason | None
    extra: Mapping[str, object] = field(default_factory=dict)


def _feature(
    s: CustomerSnapshot, fid: str, requested: float = 0.0, values: tuple[str, ...] = ()
) -> Callable[[], Outcome]:
    def run() -> Outcome:
        d = decide_feature(s, fid, NOW, requested, values)
        return Outcome(
            d.has_access,
            d.reason,
            {
                "current_usage": d.usage.current_usage,
                "period_start": d.usage.period_start,
                "period_end": d.usage.period_end,
                "soft_limit": d.soft_limit,
                "unlimited": d.entitlement.unlimited if d.entitlement else None,
            },
        )

    return run


def _typed(
    s: CustomerSnapshot | None,
    kind: Kind,
    fid: str,
    requested: float = 0.0,
    global_fallbacks: Mapping[str, FallbackValues] | None = None,
) -> Callable[[], Outcome]:
    def run() -> Outcome:
        r = typed_entitlement(
            s, kind, fid, NOW, requested_usage=requested, global_fallbacks=global_fallbacks or {}
        )
        return Outcome(
            r.has_access,
            r.reason,
            {"is_fallback": r.is_fallback, "usage_limit": r.usage_limit, "value": r.value},
        )

    return run


def _credit(s: CustomerSnapshot, cid: str) -> Callable[[], Outcome]:
    def run() -> Outcome:
        r = credit_entitlement(s, cid)
        return Outcome(r.has_access, r.reason, {"soft_limit": r.soft_limit})

    return run


_ROLLED = snap(
    metered(reset_period=ResetPeriod.MONTH, usage_period_anchor=utc(2024, 1, 10)),
    feature_usage={"calls": usage(10.0, utc(2024, 4, 10), utc(2024, 5, 10))},
)

SECTION_10: list[Any] = [
    pytest.param(
        _feature(snap(metered(), feature_usage={"calls": 10}), "calls"),
        Outcome(True, None),
        id="metered-limit10-usage10-hard-R-omitted",
    ),
    pytest.param(
        _feature(snap(metered(), feature_usage={"calls": 10}), "calls", 1),
        Outcome(False, R.REQUESTED_USAGE_EXCEEDING_LIMIT),
        id="metered-limit10-usage10-hard-R1",
    ),
    pytest.param(
        _feature(snap(metered(), feature_usage={"calls": 9.5}), "calls", 0.5),
        Outcome(True, None),
        id="metered-limit10-usage9.5-R0.5",
    ),
    pytest.param(
        _feature(snap(metered(soft_limit=True), feature_usage={"calls": 50}), "calls", 100),
        Outcome(True, None, {"soft_limit": True}),
        id="metered-limit10-usage50-soft-R100",
    ),
    pytest.param(
        _feature(snap(metered(limit=None, unlimited=True)), "calls", 10**9),
        Outcome(True, None, {"unlimited": True}),
        id="metered-unlimited-R1e9",
    ),
    pytest.param(
        _feature(snap(metered(limit=None)), "calls", 1),
        Outcome(False, R.REQUESTED_USAGE_EXCEEDING_LIMIT),
        id="metered-null-limit-hard-R1",
    ),
    pytest.param(
        _feature(_ROLLED, "calls", 1),
        Outcome(
            True,
            None,
            {
                "current_usage": 0.0,
                "period_start": utc(2024, 6, 10),
                "period_end": utc(2024, 7, 10),
            },
        ),
        id="metered-period-ended-anchor-month-R1",
    ),
    pytest.param(
        _feature(
            snap(metered(limit=None, unlimited=True, denial_reason=R.BUDGET_EXCEEDED)),
            "calls",
            0,
        ),
        Outcome(False, R.BUDGET_EXCEEDED),
        id="metered-unlimited-budget-exceeded",
    ),
    pytest.param(_feature(snap(enum()), "tier", 0, ("a",)), Outcome(True, None), id="enum-ab-V-a"),
    pytest.param(
        _feature(snap(enum()), "tier", 0, ("a", "c")),
        Outcome(False, R.REQUESTED_VALUES_MISMATCH),
        id="enum-ab-V-ac",
    ),
    pytest.param(_feature(snap(enum()), "tier", 0, ()), Outcome(True, None), id="enum-ab-V-empty"),
    pytest.param(
        _typed(snap(numeric(value=5)), Kind.NUMERIC, "seats", 100),
        Outcome(True, None, {"is_fallback": False, "value": 5}),
        id="numeric-value5-R100",
    ),
    pytest.param(
        _feature(snap(boolean("other")), "flag"),
        Outcome(False, R.NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION),
        id="boolean-not-in-set",
    ),
    pytest.param(
        _typed(snap(boolean()), Kind.METERED, "flag"),
        Outcome(False, R.FEATURE_TYPE_MISMATCH, {"is_fallback": True}),
        id="boolean-via-metered-getter",
    ),
    pytest.param(
        _typed(
            None,
            Kind.METERED,
            "calls",
            global_fallbacks={"calls": FallbackValues(has_access=True, usage_limit=1000.0)},
        ),
        Outcome(True, R.UNKNOWN, {"is_fallback": True, "usage_limit": 1000.0}),
        id="api-down-cold-cache-global-fallback",
    ),
    pytest.param(
        _credit(snap(credits=(wallet(granted=100),), credit_usage={"cred": 100}), "cred"),
        Outcome(False, R.INSUFFICIENT_CREDITS),
        id="wallet-100-of-100-hard",
    ),
    pytest.param(
        _credit(
            snap(credits=(wallet(granted=100, soft=True),), credit_usage={"cred": 100}), "cred"
        ),
        Outcome(True, None, {"soft_limit": True}),
        id="wallet-100-of-100-soft",
    ),
]


@pytest.mark.parametrize(("check", "expected"), SECTION_10)
def test_section_10_vectors(check: Callable[[], Outcome], expected: Outcome) -> None:
    got = check()
    assert (got.has_access, got.reason) == (expected.has_access, expected.reason)
    for key, value in expected.extra.items():
        assert got.extra[key] == value, key


# --------------------------------------------------------------------------- every reason


def _feature_reason(s: CustomerSnapshot, fid: str, **kw: Any) -> Callable[[], Outcome]:
    def run() -> Outcome:
        d = decide_feature(s, fid, NOW, **kw)
        return Outcome(d.has_access, d.reason)

    return run


def _credit_reason(s: CustomerSnapshot, cid: str) -> Callable[[], Outcome]:
    def run() -> Outcome:
        d = decide_credit(s, cid)
        return Outcome(d.has_access, d.reason)

    return run


_UNLIMITED_SOFT: dict[str, Any] = {"limit": None, "unlimited": True, "soft_limit": True}

REASON_CASES: dict[DenialReason, Callable[[], Outcome]] = {
    **{
        reason: _feature_reason(snap(boolean("other"), customer_reason=reason), "flag")
        for reason in CUSTOMER_REASONS
    },
    **{
        reason: _feature_reason(
            snap(metered(denial_reason=reason, **_UNLIMITED_SOFT)), "calls", requested_usage=0
        )
        for reason in SERVER_REASONS
    },
    R.NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION: _feature_reason(snap(), "flag"),
    R.REQUESTED_USAGE_EXCEEDING_LIMIT: _feature_reason(
        snap(metered(), feature_usage={"calls": 3}), "calls", requested_usage=8
    ),
    R.REQUESTED_VALUES_MISMATCH: _feature_reason(snap(enum()), "tier", requested_values=("z",)),
    R.FEATURE_TYPE_MISMATCH: _typed(snap(enum()), Kind.BOOLEAN, "tier"),
    R.ENTITLEMENT_NOT_FOUND: _credit_reason(snap(), "cred"),
    R.UNKNOWN: _typed(None, Kind.BOOLEAN, "flag"),
}


def test_reason_cases_cover_every_denial_reason() -> None:
    assert set(REASON_CASES) == set(DenialReason)
    assert len(DenialReason) == 14


@pytest.mark.parametrize(
    ("reason", "check"), [pytest.param(r, c, id=r.value) for r, c in REASON_CASES.items()]
)
def test_every_denial_reason_applies(reason: DenialReason, check: Callable[[], Outcome]) -> None:
    got = check()
    assert got.has_access is False
    assert got.reason is reason


# --------------------------------------------------------------------------- precedence

ENTITLEMENT_SHAPES: list[Any] = [
    pytest.param(lambda **kw: boolean("f", **kw), id="boolean"),
    pytest.param(lambda **kw: numeric("f", **kw), id="numeric"),
    pytest.param(lambda **kw: enum("f", **kw), id="enum"),
    pytest.param(lambda **kw: metered("f", None, unlimited=True, **kw), id="metered-unlimited"),
    pytest.param(lambda **kw: metered("f", 1.0, soft_limit=True, **kw), id="metered-soft"),
    pytest.param(
        lambda **kw: metered("f", 1.0, meter=MeterType.FLUCTUATING, unlimited=True, **kw),
        id="fluctuating-unlimited",
    ),
    pytest.param(lambda **kw: credit_backed("f", soft_limit=True, **kw), id="credit-backed-soft"),
]


@pytest.mark.parametrize("make", ENTITLEMENT_SHAPES)
@pytest.mark.parametrize("reason", SERVER_REASONS, ids=lambda r: r.value)
def test_server_reason_beats_every_type_rule(
    make: Callable[..., FeatureEntitlement], reason: DenialReason
) -> None:
    s = snap(make(denial_reason=reason), credits=(wallet(soft=True),))
    d = decide_feature(s, "f", NOW, 0.0, ())
    assert (d.has_access, d.reason) == (False, reason)
    assert d.entitlement is s.state.features["f"]


@pytest.mark.parametrize("make", ENTITLEMENT_SHAPES)
def test_same_entitlements_without_server_reason_are_granted(
    make: Callable[..., FeatureEntitlement],
) -> None:
    s = snap(make(), credits=(wallet(soft=True),), feature_usage={"f": 1e6})
    d = decide_feature(s, "f", NOW, 1e6, ())
    assert (d.has_access, d.reason) == (True, None)


@pytest.mark.parametrize("customer_reason", CUSTOMER_REASONS, ids=lambda r: r.value)
@pytest.mark.parametrize("requested", [pytest.param(0.0, id="R0"), pytest.param(5.0, id="R5")])
def test_customer_reason_wins_when_the_feature_is_missing(
    customer_reason: DenialReason, requested: float
) -> None:
    s = snap(metered("other"), customer_reason=customer_reason)
    d = decide_feature(s, "calls", NOW, requested)
    assert (d.has_access, d.reason, d.entitlement) == (False, customer_reason, None)
    assert d.usage == NO_USAGE


@pytest.mark.parametrize("customer_reason", CUSTOMER_REASONS, ids=lambda r: r.value)
def test_customer_reason_does_not_override_a_present_entitlement(
    customer_reason: DenialReason,
) -> None:
    # [I] in the reference: the state-level reason only answers for missing features.
    s = snap(boolean(), customer_reason=customer_reason)
    assert decide_feature(s, "flag", NOW).has_access is True


# --------------------------------------------------------------------------- type rules


@pytest.mark.parametrize(
    ("values", "granted"),
    [
        pytest.param((), True, id="empty"),
        pytest.param(("a",), True, id="a"),
        pytest.param(("b", "a"), True, id="b-a"),
        pytest.param(("a", "a"), True, id="duplicates"),
        pytest.param(("c",), False, id="c"),
        pytest.param(("a", "c"), False, id="a-c"),
        pytest.param(("A",), False, id="case-sensitive"),
        pytest.param(("",), False, id="empty-string"),
    ],
)
def test_enum_subset_rule(values: tuple[str, ...], granted: bool) -> None:
    d = decide_feature(snap(enum()), "tier", NOW, 0.0, values)
    assert d.has_access is granted
    assert d.reason is (None if granted else R.REQUESTED_VALUES_MISMATCH)


def test_enum_with_no_entitled_values_only_grants_empty_request() -> None:
    s = snap(enum(values=()))
    assert decide_feature(s, "tier", NOW).has_access is True
    assert decide_feature(s, "tier", NOW, requested_values=["a"]).reason is (
        R.REQUESTED_VALUES_MISMATCH
    )


@pytest.mark.parametrize("meter", [pytest.param(MeterType.NONE, id="meter-none")])
@pytest.mark.parametrize(
    ("limit", "used", "requested"),
    [
        pytest.param(5.0, 0.0, 100.0, id="value5-R100"),
        pytest.param(None, 0.0, 1.0, id="value-null-R1"),
        pytest.param(0.0, 50.0, 1.0, id="value0-usage50"),
    ],
)
def test_numeric_configuration_ignores_usage_and_request(
    meter: MeterType, limit: float | None, used: float, requested: float
) -> None:
    ent = FeatureEntitlement(Feature("seats", FeatureType.NUMBER, meter), limit)
    d = decide_feature(snap(ent, feature_usage={"seats": used}), "seats", NOW, requested)
    assert (d.has_access, d.reason) == (True, None)
    assert d.usage == NO_USAGE


def test_boolean_ignores_request() -> None:
    d = decide_feature(snap(boolean()), "flag", NOW, 1e9, ("x",))
    assert (d.has_access, d.reason) == (True, None)


@pytest.mark.parametrize("meter", [MeterType.INCREMENTAL, MeterType.FLUCTUATING], ids=str)
@pytest.mark.parametrize(
    ("limit", "used", "requested", "granted"),
    [
        pytest.param(10.0, 0.0, 0.0, True, id="empty"),
        pytest.param(10.0, 0.0, 10.0, True, id="request-exactly-limit"),
        pytest.param(10.0, 0.0, 10.000001, False, id="request-just-over"),
        pytest.param(10.0, 10.0, 0.0, True, id="at-limit-R0-inclusive"),
        pytest.param(10.0, 10.0, 1.0, False, id="at-limit-R1"),
        pytest.param(10.0, 11.0, 0.0, False, id="over-limit-R0"),
        pytest.param(10.0, 4.0, 6.0, True, id="sum-equals-limit"),
        pytest.param(10.0, 4.0, 7.0, False, id="sum-over-limit"),
        pytest.param(0.0, 0.0, 0.0, True, id="zero-limit-R0"),
        pytest.param(0.0, 0.0, 1.0, False, id="zero-limit-R1"),
        pytest.param(None, 0.0, 0.0, True, id="null-limit-R0"),
        pytest.param(None, 0.0, 0.5, False, id="null-limit-counts-as-zero"),
        pytest.param(None, 1.0, 0.0, False, id="null-limit-with-usage"),
    ],
)
def test_hard_limit_rule(
    meter: MeterType, limit: float | None, used: float, requested: float, granted: bool
) -> None:
    s = snap(metered(limit=limit, meter=meter), feature_usage={"calls": used})
    d = decide_feature(s, "calls", NOW, requested)
    assert d.has_access is granted
    assert d.reason is (None if granted else R.REQUESTED_USAGE_EXCEEDING_LIMIT)
    assert d.usage.current_usage == used
    assert d.soft_limit is False


@pytest.mark.parametrize(
    ("kw", "soft"),
    [
        pytest.param({"unlimited": True}, False, id="unlimited"),
        pytest.param({"unlimited": True, "limit": None}, False, id="unlimited-null-limit"),
        pytest.param({"soft_limit": True}, True, id="soft"),
        pytest.param({"soft_limit": True, "limit": None}, True, id="soft-null-limit"),
        pytest.param({"soft_limit": True, "unlimited": True}, True, id="soft-and-unlimited"),
    ],
)
def test_unlimited_and_soft_bypass_the_limit(kw: dict[str, Any], soft: bool) -> None:
    s = snap(metered(**kw), feature_usage={"calls": 1e12})
    d = decide_feature(s, "calls", NOW, 1e12)
    assert (d.has_access, d.reason, d.soft_limit) == (True, None, soft)
    assert d.usage.current_usage == 1e12


def test_missing_usage_record_counts_as_zero() -> None:
    d = decide_feature(snap(metered()), "calls", NOW, 10.0)
    assert (d.has_access, d.usage) == (True, NO_USAGE)


# --------------------------------------------------------------------------- roll-over

_ANCHOR = utc(2024, 1, 31, 10, 30)

ROLLOVER_PERIODS: list[Any] = [
    pytest.param(ResetPeriod.HOUR, utc(2024, 6, 15, 11, 30), utc(2024, 6, 15, 12, 30), id="HOUR"),
    pytest.param(ResetPeriod.DAY, utc(2024, 6, 15, 10, 30), utc(2024, 6, 16, 10, 30), id="DAY"),
    pytest.param(ResetPeriod.WEEK, utc(2024, 6, 12, 10, 30), utc(2024, 6, 19, 10, 30), id="WEEK"),
    pytest.param(ResetPeriod.MONTH, utc(2024, 5, 31, 10, 30), utc(2024, 6, 30, 10, 30), id="MONTH"),
    pytest.param(ResetPeriod.YEAR, utc(2024, 1, 31, 10, 30), utc(2025, 1, 31, 10, 30), id="YEAR"),
]


@pytest.mark.parametrize(("period", "start", "end"), ROLLOVER_PERIODS)
def test_ended_period_rolls_over_to_zero_with_a_new_period(
    period: ResetPeriod, start: datetime, end: datetime
) -> None:
    ent = metered(reset_period=period, usage_period_anchor=_ANCHOR)
    record = usage(10.0, utc(2020, 1, 1), utc(2020, 2, 1))
    got = effective_usage(ent, record, NOW)
    assert got == EffectiveUsage(0.0, start, end)
    assert got.period_start is not None and got.period_end is not None
    assert got.period_start <= NOW < got.period_end
    d = decide_feature(snap(ent, feature_usage={"calls": record}), "calls", NOW, 10.0)
    assert (d.has_access, d.usage) == (True, got)


@pytest.mark.parametrize(
    ("period", "anchor"),
    [
        pytest.param(ResetPeriod.MONTH, None, id="no-anchor"),
        pytest.param(None, _ANCHOR, id="no-reset-period"),
        pytest.param(None, None, id="neither"),
    ],
)
def test_ended_period_without_anchor_and_period_has_an_empty_period(
    period: ResetPeriod | None, anchor: datetime | None
) -> None:
    ent = metered(reset_period=period, usage_period_anchor=anchor)
    record = usage(10.0, utc(2024, 5, 1), utc(2024, 6, 1))
    assert effective_usage(ent, record, NOW) == EffectiveUsage(0.0, None, None)
    d = decide_feature(snap(ent, feature_usage={"calls": record}), "calls", NOW, 1.0)
    assert d.has_access is True


@pytest.mark.parametrize(
    ("end", "rolled"),
    [
        pytest.param(NOW - timedelta(microseconds=1), True, id="just-ended"),
        pytest.param(NOW, True, id="end-equals-now"),
        pytest.param(NOW + timedelta(microseconds=1), False, id="just-before-end"),
        pytest.param(None, False, id="no-period-end"),
    ],
)
def test_period_end_boundary(end: datetime | None, rolled: bool) -> None:
    ent = metered(reset_period=ResetPeriod.MONTH, usage_period_anchor=utc(2024, 5, 15, 12))
    record = usage(10.0, utc(2024, 5, 15, 12), end)
    got = effective_usage(ent, record, NOW)
    if rolled:
        assert got == EffectiveUsage(0.0, utc(2024, 6, 15, 12), utc(2024, 7, 15, 12))
    else:
        assert got == EffectiveUsage(10.0, utc(2024, 5, 15, 12), end)
    d = decide_feature(snap(ent, feature_usage={"calls": record}), "calls", NOW, 1.0)
    assert d.has_access is rolled


def test_missing_record_with_anchor_gets_the_current_period() -> None:
    ent = metered(reset_period=ResetPeriod.WEEK, usage_period_anchor=utc(2024, 6, 3))
    assert effective_usage(ent, None, NOW) == EffectiveUsage(
        0.0, utc(2024, 6, 10), utc(2024, 6, 17)
    )


def test_missing_record_without_anchor_is_no_usage() -> None:
    assert effective_usage(metered(reset_period=ResetPeriod.WEEK), None, NOW) is NO_USAGE


def test_rollover_does_not_rewrite_the_cached_record() -> None:
    record = usage(10.0, utc(2024, 4, 10), utc(2024, 5, 10))
    s = snap(
        metered(reset_period=ResetPeriod.MONTH, usage_period_anchor=utc(2024, 1, 10)),
        feature_usage={"calls": record},
    )
    decide_feature(s, "calls", NOW, 1.0)
    assert s.feature_usage["calls"] is record


def test_naive_now_is_rejected() -> None:
    ent = metered(reset_period=ResetPeriod.DAY, usage_period_anchor=_ANCHOR)
    with pytest.raises(ValueError, match="timezone-aware"):
        effective_usage(ent, usage(1.0, None, _ANCHOR), NOW.replace(tzinfo=None))


# --------------------------------------------------------------------------- credit wallets


@pytest.mark.parametrize(
    ("granted", "consumed", "soft", "requested", "granted_access", "remaining"),
    [
        pytest.param(100.0, 0.0, False, 0.0, True, 100.0, id="fresh-R0"),
        pytest.param(100.0, 40.0, False, 60.0, True, 60.0, id="request-exactly-remaining"),
        pytest.param(100.0, 40.0, False, 60.5, False, 60.0, id="request-over-remaining"),
        pytest.param(100.0, 99.5, False, 0.0, True, 0.5, id="almost-exhausted-R0"),
        pytest.param(100.0, 100.0, False, 0.0, False, 0.0, id="exhausted-R0-denied"),
        pytest.param(100.0, 120.0, False, 0.0, False, -20.0, id="overdrawn-R0"),
        pytest.param(0.0, 0.0, False, 0.0, False, 0.0, id="empty-wallet-R0"),
        pytest.param(100.0, 100.0, True, 0.0, True, 0.0, id="soft-exhausted"),
        pytest.param(100.0, 150.0, True, 1e6, True, -50.0, id="soft-overdrawn-big-request"),
    ],
)
def test_credit_wallet(
    granted: float,
    consumed: float,
    soft: bool,
    requested: float,
    granted_access: bool,
    remaining: float,
) -> None:
    s = snap(credits=(wallet(granted=granted, soft=soft),), credit_usage={"cred": consumed})
    d = decide_credit(s, "cred", requested)
    assert d.has_access is granted_access
    assert d.reason is (None if granted_access else R.INSUFFICIENT_CREDITS)
    assert d.wallet is not None
    assert (d.wallet.granted, d.wallet.consumed, d.wallet.remaining) == (
        granted,
        consumed,
        remaining,
    )


def test_wallet_without_usage_record_has_nothing_consumed() -> None:
    s = snap(credits=(wallet(granted=7),))
    view = wallet_view(s, "cred")
    assert view == WalletView(s.state.credits["cred"], 0.0, None)
    assert view.remaining == 7.0


def test_wallet_view_carries_the_period_end() -> None:
    end = utc(2024, 7, 1)
    s = snap(credits=(wallet(),), credit_usage={"cred": usage(3.0, None, end)})
    view = wallet_view(s, "cred")
    assert view is not None
    assert (view.consumed, view.period_end) == (3.0, end)
    assert wallet_view(s, "other") is None


@pytest.mark.parametrize(
    "customer_reason",
    [None, *CUSTOMER_REASONS],
    ids=lambda r: r.value if r else "customer-ok",
)
def test_missing_wallet(customer_reason: DenialReason | None) -> None:
    s = snap(credits=(wallet("other"),), customer_reason=customer_reason)
    d = decide_credit(s, "cred")
    assert (d.has_access, d.wallet) == (False, None)
    assert d.reason is (customer_reason or R.ENTITLEMENT_NOT_FOUND)


@pytest.mark.parametrize("reason", SERVER_REASONS, ids=lambda r: r.value)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_wallet_server_reason_beats_balance_and_soft_limit(
    reason: DenialReason, soft: bool
) -> None:
    s = snap(credits=(wallet(granted=1e9, soft=soft, reason=reason),))
    d = decide_credit(s, "cred")
    assert (d.has_access, d.reason) == (False, reason)
    assert d.wallet is not None


@pytest.mark.parametrize(
    ("remaining", "cost", "covered"),
    [
        pytest.param(10.0, 0.0, True, id="zero-cost-positive-balance"),
        pytest.param(0.0, 0.0, False, id="zero-cost-exhausted"),
        pytest.param(-1.0, 0.0, False, id="zero-cost-overdrawn"),
        pytest.param(10.0, 10.0, True, id="exact"),
        pytest.param(10.0, 10.5, False, id="over"),
        pytest.param(10.0, -3.0, True, id="negative-cost-positive-balance"),
        pytest.param(0.0, -3.0, False, id="negative-cost-exhausted"),
    ],
)
def test_credits_cover(remaining: float, cost: float, covered: bool) -> None:
    view = WalletView(wallet(granted=remaining), 0.0, None)
    assert credits_cover(view, cost) is covered


# --------------------------------------------------------------------------- credit-backed


@pytest.mark.parametrize(
    ("amount", "consumed", "requested", "granted"),
    [
        pytest.param(2.0, 0.0, 50.0, True, id="R50x2-fits-100"),
        pytest.param(2.0, 0.0, 50.5, False, id="R50.5x2-over-100"),
        pytest.param(2.0, 90.0, 5.0, True, id="R5x2-exactly-remaining-10"),
        pytest.param(2.0, 90.0, 6.0, False, id="R6x2-over-remaining-10"),
        pytest.param(0.5, 90.0, 20.0, True, id="fractional-rate-fits"),
        pytest.param(0.5, 90.0, 21.0, False, id="fractional-rate-over"),
        pytest.param(2.0, 99.0, 0.0, True, id="R0-positive-balance"),
        pytest.param(2.0, 100.0, 0.0, False, id="R0-exhausted"),
        pytest.param(0.0, 50.0, 1e9, True, id="free-rate-positive-balance"),
        pytest.param(0.0, 100.0, 1.0, False, id="free-rate-exhausted"),
    ],
)
def test_credit_backed_feature_cost_must_fit_remaining(
    amount: float, consumed: float, requested: float, granted: bool
) -> None:
    s = snap(
        credit_backed(amount=amount),
        credits=(wallet(granted=100.0),),
        credit_usage={"cred": consumed},
    )
    d = decide_feature(s, "tokens", NOW, requested)
    assert d.has_access is granted
    assert d.reason is (None if granted else R.INSUFFICIENT_CREDITS)
    assert d.wallet is not None and d.wallet.consumed == consumed
    assert d.soft_limit is False


@pytest.mark.parametrize(
    ("feature_soft", "wallet_soft"),
    [
        pytest.param(False, True, id="wallet-soft-inherited"),
        pytest.param(True, False, id="feature-soft"),
        pytest.param(True, True, id="both-soft"),
    ],
)
def test_credit_backed_soft_limit(feature_soft: bool, wallet_soft: bool) -> None:
    s = snap(
        credit_backed(soft_limit=feature_soft, limit=1.0),
        credits=(wallet(granted=10.0, soft=wallet_soft),),
        credit_usage={"cred": 500.0},
        feature_usage={"tokens": 50.0},
    )
    d = decide_feature(s, "tokens", NOW, 1000.0)
    assert (d.has_access, d.reason, d.soft_limit) == (True, None, True)


@pytest.mark.parametrize("reason", SERVER_REASONS, ids=lambda r: r.value)
def test_credit_backed_feature_takes_the_wallet_server_reason(reason: DenialReason) -> None:
    s = snap(
        credit_backed(soft_limit=True, unlimited=True),
        credits=(wallet(granted=1e9, soft=True, reason=reason),),
    )
    d = decide_feature(s, "tokens", NOW, 0.0)
    assert (d.has_access, d.reason) == (False, reason)
    assert d.wallet is not None


@pytest.mark.parametrize(
    "customer_reason", [None, *CUSTOMER_REASONS], ids=lambda r: r.value if r else "customer-ok"
)
def test_credit_backed_feature_without_wallet(customer_reason: DenialReason | None) -> None:
    # The feature exists, so the missing wallet - not the customer - is the reason.
    s = snap(credit_backed(), credits=(wallet("other"),), customer_reason=customer_reason)
    d = decide_feature(s, "tokens", NOW, 0.0)
    assert (d.has_access, d.reason, d.wallet) == (False, R.ENTITLEMENT_NOT_FOUND, None)


@pytest.mark.parametrize(
    ("limit", "used", "requested", "consumed", "expected"),
    [
        pytest.param(10.0, 0.0, 10.0, 0.0, None, id="unit-limit-exact-credits-fit"),
        pytest.param(10.0, 5.0, 6.0, 0.0, R.REQUESTED_USAGE_EXCEEDING_LIMIT, id="unit-limit-over"),
        pytest.param(
            10.0, 5.0, 6.0, 100.0, R.REQUESTED_USAGE_EXCEEDING_LIMIT, id="unit-limit-checked-first"
        ),
        pytest.param(10.0, 0.0, 6.0, 90.0, R.INSUFFICIENT_CREDITS, id="unit-ok-credits-short"),
        pytest.param(None, 1e6, 50.0, 0.0, None, id="no-unit-limit"),
    ],
)
def test_credit_backed_unit_limit_applies_on_top(
    limit: float | None,
    used: float,
    requested: float,
    consumed: float,
    expected: DenialReason | None,
) -> None:
    s = snap(
        credit_backed(amount=2.0, limit=limit),
        credits=(wallet(granted=100.0),),
        credit_usage={"cred": consumed},
        feature_usage={"tokens": used},
    )
    d = decide_feature(s, "tokens", NOW, requested)
    assert (d.has_access, d.reason) == (expected is None, expected)


def test_unlimited_credit_backed_feature_is_still_bound_by_the_wallet() -> None:
    s = snap(
        credit_backed(limit=1.0, unlimited=True),
        credits=(wallet(granted=100.0),),
        credit_usage={"cred": 100.0},
        feature_usage={"tokens": 50.0},
    )
    assert decide_feature(s, "tokens", NOW, 0.0).reason is R.INSUFFICIENT_CREDITS
    s2 = snap(credit_backed(limit=1.0, unlimited=True), credits=(wallet(granted=100.0),))
    assert decide_feature(s2, "tokens", NOW, 50.0).has_access is True


def test_credit_backed_feature_usage_rolls_over() -> None:
    ent = credit_backed(
        limit=5.0, reset_period=ResetPeriod.DAY, usage_period_anchor=utc(2024, 1, 1)
    )
    s = snap(
        ent,
        credits=(wallet(),),
        feature_usage={"tokens": usage(5.0, utc(2024, 6, 14), utc(2024, 6, 15))},
    )
    d = decide_feature(s, "tokens", NOW, 5.0)
    assert d.has_access is True
    assert d.usage == EffectiveUsage(0.0, utc(2024, 6, 15), utc(2024, 6, 16))


def test_credit_rate_on_a_non_metered_feature_is_ignored() -> None:
    ent = FeatureEntitlement(
        Feature("seats", FeatureType.NUMBER, MeterType.NONE), 3.0, credit_rate=CreditRate(1, "x")
    )
    d = decide_feature(snap(ent), "seats", NOW, 1e6)
    assert (d.has_access, d.wallet) == (True, None)


# --------------------------------------------------------------------------- properties

finite = st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False)
limits = st.one_of(st.none(), finite)
meters = st.sampled_from([MeterType.INCREMENTAL, MeterType.FLUCTUATING])


@PROPERTY
@given(limit=limits, used=finite, n=finite, extra=finite, meter=meters)
def test_hard_metered_denial_is_monotone(
    limit: float | None, used: float, n: float, extra: float, meter: MeterType
) -> None:
    s = snap(metered(limit=limit, meter=meter), feature_usage={"calls": used})
    first = decide_feature(s, "calls", NOW, n)
    if not first.has_access:
        bigger = decide_feature(s, "calls", NOW, n + extra)
        assert (bigger.has_access, bigger.reason) == (False, first.reason)


@PROPERTY
@given(limit=limits, used=finite, n=finite, fraction=st.floats(0, 1), meter=meters)
def test_hard_metered_grant_is_downward_closed(
    limit: float | None, used: float, n: float, fraction: float, meter: MeterType
) -> None:
    s = snap(metered(limit=limit, meter=meter), feature_usage={"calls": used})
    if decide_feature(s, "calls", NOW, n).has_access:
        m = n * fraction
        assert decide_feature(s, "calls", NOW, m).has_access is True
        assert decide_feature(s, "calls", NOW, 0.0).has_access is True


@PROPERTY
@given(
    granted=finite,
    consumed=finite,
    amount=st.floats(0, 1e3),
    n=finite,
    extra=finite,
    unlimited=st.booleans(),
)
def test_credit_backed_denial_is_monotone(
    granted: float, consumed: float, amount: float, n: float, extra: float, unlimited: bool
) -> None:
    s = snap(
        credit_backed(amount=amount, unlimited=unlimited),
        credits=(wallet(granted=granted),),
        credit_usage={"cred": consumed},
    )
    first = decide_feature(s, "tokens", NOW, n)
    if not first.has_access:
        assert first.reason is R.INSUFFICIENT_CREDITS
        bigger = decide_feature(s, "tokens", NOW, n + extra)
        assert (bigger.has_access, bigger.reason) == (False, first.reason)


@PROPERTY
@given(
    granted=finite,
    consumed=finite,
    amount=st.floats(0, 1e3),
    limit=finite,
    used=finite,
    n=finite,
    extra=finite,
)
def test_credit_backed_with_unit_limit_denial_is_monotone(
    granted: float,
    consumed: float,
    amount: float,
    limit: float,
    used: float,
    n: float,
    extra: float,
) -> None:
    # With two limits the reason may move from INSUFFICIENT_CREDITS to the unit
    # limit (checked first) as R grows; the denial itself must persist.
    s = snap(
        credit_backed(amount=amount, limit=limit),
        credits=(wallet(granted=granted),),
        credit_usage={"cred": consumed},
        feature_usage={"tokens": used},
    )
    first = decide_feature(s, "tokens", NOW, n)
    if not first.has_access:
        bigger = decide_feature(s, "tokens", NOW, n + extra)
        assert bigger.has_access is False
        assert bigger.reason in {R.INSUFFICIENT_CREDITS, R.REQUESTED_USAGE_EXCEEDING_LIMIT}
        if first.reason is R.REQUESTED_USAGE_EXCEEDING_LIMIT:
            assert bigger.reason is R.REQUESTED_USAGE_EXCEEDING_LIMIT


@PROPERTY
@given(
    granted=finite,
    consumed=finite,
    amount=st.floats(0, 1e3),
    limit=limits,
    n=finite,
    fraction=st.floats(0, 1),
)
def test_credit_backed_grant_is_downward_closed(
    granted: float,
    consumed: float,
    amount: float,
    limit: float | None,
    n: float,
    fraction: float,
) -> None:
    s = snap(
        credit_backed(amount=amount, limit=limit),
        credits=(wallet(granted=granted),),
        credit_usage={"cred": consumed},
    )
    if decide_feature(s, "tokens", NOW, n).has_access:
        assert decide_feature(s, "tokens", NOW, n * fraction).has_access is True
        assert decide_feature(s, "tokens", NOW, 0.0).has_access is True


@PROPERTY
@given(granted=finite, consumed=finite, n=finite, extra=finite, fraction=st.floats(0, 1))
def test_wallet_check_is_monotone(
    granted: float, consumed: float, n: float, extra: float, fraction: float
) -> None:
    s = snap(credits=(wallet(granted=granted),), credit_usage={"cred": consumed})
    first = decide_credit(s, "cred", n)
    if first.has_access:
        assert decide_credit(s, "cred", n * fraction).has_access is True
    else:
        bigger = decide_credit(s, "cred", n + extra)
        assert (bigger.has_access, bigger.reason) == (False, R.INSUFFICIENT_CREDITS)


values_alphabet = st.sampled_from(["a", "b", "c", "d", "e", "f"])
value_sets = st.lists(values_alphabet, max_size=6)


@PROPERTY
@given(entitled=value_sets, requested=value_sets, more=value_sets)
def test_enum_denial_survives_any_superset(
    entitled: list[str], requested: list[str], more: list[str]
) -> None:
    s = snap(enum(values=tuple(entitled)))
    first = decide_feature(s, "tier", NOW, requested_values=requested)
    assert first.has_access is set(requested).issubset(entitled)
    if not first.has_access:
        superset = decide_feature(s, "tier", NOW, requested_values=[*more, *requested])
        assert (superset.has_access, superset.reason) == (False, R.REQUESTED_VALUES_MISMATCH)


@PROPERTY
@given(
    limit=limits,
    used=finite,
    requested=finite,
    unlimited=st.booleans(),
    soft=st.booleans(),
    meter=meters,
)
def test_unlimited_or_soft_is_always_granted(
    limit: float | None,
    used: float,
    requested: float,
    unlimited: bool,
    soft: bool,
    meter: MeterType,
) -> None:
    if not (unlimited or soft):
        unlimited = True
    s = snap(
        metered(limit=limit, meter=meter, unlimited=unlimited, soft_limit=soft),
        feature_usage={"calls": used},
    )
    d = decide_feature(s, "calls", NOW, requested)
    assert (d.has_access, d.reason) == (True, None)


@PROPERTY
@given(
    limit=limits,
    used=finite,
    consumed=finite,
    granted=finite,
    requested=finite,
    feature_soft=st.booleans(),
)
def test_soft_credit_backed_is_always_granted(
    limit: float | None,
    used: float,
    consumed: float,
    granted: float,
    requested: float,
    feature_soft: bool,
) -> None:
    s = snap(
        credit_backed(limit=limit, soft_limit=feature_soft),
        credits=(wallet(granted=granted, soft=not feature_soft),),
        credit_usage={"cred": consumed},
        feature_usage={"tokens": used},
    )
    d = decide_feature(s, "tokens", NOW, requested)
    assert (d.has_access, d.reason) == (True, None)


def _entitlements(fid: str) -> st.SearchStrategy[FeatureEntitlement]:
    reasons = st.one_of(st.none(), st.sampled_from(list(DenialReason)))
    features = st.one_of(
        st.just(Feature(fid, FeatureType.BOOLEAN)),
        st.just(Feature(fid, FeatureType.ENUM)),
        st.sampled_from(list(MeterType)).map(lambda m: Feature(fid, FeatureType.NUMBER, m)),
    )
    return st.builds(
        FeatureEntitlement,
        feature=features,
        usage_limit=limits,
        unlimited=st.booleans(),
        soft_limit=st.booleans(),
        denial_reason=reasons,
        enum_values=st.lists(values_alphabet, max_size=3).map(tuple),
        reset_period=st.one_of(st.none(), st.sampled_from(list(ResetPeriod))),
        usage_period_anchor=st.one_of(st.none(), st.just(utc(2023, 3, 31, 7))),
        credit_rate=st.one_of(st.none(), st.builds(CreditRate, st.floats(0, 10), st.just("cred"))),
    )


snapshots = st.builds(
    lambda ent, present, credit, consumed, used, end, customer: snap(
        *([ent] if present else []),
        credits=(credit,) if credit else (),
        credit_usage={"cred": consumed},
        feature_usage={"f": usage(used, None, end)},
        customer_reason=customer,
    ),
    _entitlements("f"),
    st.booleans(),
    st.one_of(
        st.none(),
        st.builds(
            wallet,
            st.just("cred"),
            finite,
            soft=st.booleans(),
            reason=st.one_of(st.none(), st.sampled_from(SERVER_REASONS)),
        ),
    ),
    finite,
    finite,
    st.sampled_from([None, NOW - timedelta(days=1), NOW, NOW + timedelta(days=1)]),
    st.one_of(st.none(), st.sampled_from(CUSTOMER_REASONS)),
)


@PROPERTY
@given(s=snapshots, requested=finite, values=value_sets)
def test_granted_decisions_never_carry_a_reason(
    s: CustomerSnapshot, requested: float, values: list[str]
) -> None:
    d = decide_feature(s, "f", NOW, requested, values)
    assert (d.reason is None) is d.has_access
    c = decide_credit(s, "cred", requested)
    assert (c.reason is None) is c.has_access
    if s.state.features.get("f") is None:
        assert d.has_access is False
        assert d.reason is (s.state.denial_reason or R.NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION)
    elif s.state.features["f"].denial_reason is not None:
        assert d.reason is s.state.features["f"].denial_reason
