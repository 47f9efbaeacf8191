"""What each read RPC answers, as transport-free results.

Combines the access rules with the fallback policy. ``snapshot is None`` means no
entitlement state could be obtained (offline, or every tier failed), which is
the only case besides a type mismatch where fallback values are served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from entitlements.model.state import (
    CustomerSnapshot,
    DenialReason,
    Feature,
    FeatureEntitlement,
    FeatureType,
)
from sidecar.evaluation.fallback import DEFAULT_FALLBACK, FallbackShape, FallbackValues
from sidecar.evaluation.rules import (
    NO_USAGE,
    EffectiveUsage,
    FeatureDecision,
    WalletView,
    decide_credit,
    decide_feature,
)

INT32_MAX = 2**31 - 1


class Kind(Enum):
    BOOLEAN = "boolean"
    NUMERIC = "numeric"
    METERED = "metered"
    ENUM = "enum"
    CREDIT = "credit"


_SHAPE_KIND = {
    FallbackShape.BOOLEAN: Kind.BOOLEAN,
    FallbackShape.NUMERIC: Kind.NUMERIC,
    FallbackShape.METERED: Kind.METERED,
    FallbackShape.ENUM: Kind.ENUM,
}


def kind_of(feature: Feature) -> Kind:
    if feature.feature_type is FeatureType.BOOLEAN:
        return Kind.BOOLEAN
    if feature.feature_type is FeatureType.ENUM:
        return Kind.ENUM
    return Kind.METERED if feature.is_metered else Kind.NUMERIC


@dataclass(frozen=True, slots=True)
class Result:
    """One entitlement answer; which fields matter depends on ``kind``."""

    kind: Kind
    has_access: bool
    is_fallback: bool
    reason: DenialReason | None
    # Feature id, or currency id for credit results.
    subject_id: str
    entitlement: FeatureEntitlement | None = None
    usage: EffectiveUsage = NO_USAGE
    usage_limit: float | None = None
    is_unlimited: bool = False
    soft_limit: bool = False
    value: int | None = None
    enum_values: tuple[str, ...] = ()
    requested_usage: float = 0.0
    requested_values: tuple[str, ...] = ()
    wallet: WalletView | None = None


@dataclass(frozen=True, slots=True)
class ListResult:
    entitlements: list[Result]
    reason: DenialReason | None
    is_fallback: bool


def numeric_value(limit: float | None) -> int | None:
    if limit is None:
        return None
    return max(-INT32_MAX - 1, min(INT32_MAX, int(limit)))


def _from_decision(
    kind: Kind,
    feature_id: str,
    decision: FeatureDecision,
    requested_usage: float,
    requested_values: tuple[str, ...],
) -> Result:
    ent = decision.entitlement
    if ent is None:
        return Result(
            kind,
            False,
            False,
            decision.reason,
            feature_id,
            requested_usage=requested_usage,
            requested_values=requested_values,
        )
    return Result(
        kind,
        decision.has_access,
        False,
        decision.reason,
        feature_id,
        entitlement=ent,
        usage=decision.usage,
        usage_limit=ent.usage_limit,
        is_unlimited=ent.unlimited,
        soft_limit=decision.soft_limit,
        value=numeric_value(ent.usage_limit),
        enum_values=ent.enum_values,
        requested_usage=requested_usage,
        requested_values=requested_values,
        wallet=decision.wallet,
    )


def _from_fallback(
    kind: Kind,
    feature_id: str,
    fallback: FallbackValues,
    reason: DenialReason | None,
    requested_usage: float,
    requested_values: tuple[str, ...],
) -> Result:
    return Result(
        kind,
        fallback.has_access,
        True,
        reason,
        feature_id,
        usage_limit=fallback.usage_limit,
        is_unlimited=bool(fallback.is_unlimited),
        value=fallback.value,
        enum_values=fallback.enum_values,
        requested_usage=requested_usage,
        requested_values=requested_values,
    )


def _pick_fallback(
    feature_id: str,
    request_fallback: FallbackValues | None,
    global_fallbacks: Mapping[str, FallbackValues],
) -> FallbackValues:
    # Per-request beats global; the chosen one replaces the default wholesale.
    if request_fallback is not None:
        return request_fallback
    return global_fallbacks.get(feature_id, DEFAULT_FALLBACK)


def typed_entitlement(
    snapshot: CustomerSnapshot | None,
    kind: Kind,
    feature_id: str,
    now: datetime,
    *,
    requested_usage: float = 0.0,
    requested_values: Sequence[str] = (),
    request_fallback: FallbackValues | None = None,
    global_fallbacks: Mapping[str, FallbackValues],
) -> Result:
    """GetBoolean/Numeric/Metered/EnumEntitlement."""
    values = tuple(requested_values)
    if snapshot is None:
        fallback = _pick_fallback(feature_id, request_fallback, global_fallbacks)
        return _from_fallback(
            kind, feature_id, fallback, DenialReason.UNKNOWN, requested_usage, values
        )
    ent = snapshot.state.features.get(feature_id)
    if ent is not None and kind_of(ent.feature) is not kind:
        fallback = _pick_fallback(feature_id, request_fallback, global_fallbacks)
        return _from_fallback(
            kind, feature_id, fallback, DenialReason.FEATURE_TYPE_MISMATCH, requested_usage, values
        )
    decision = decide_feature(snapshot, feature_id, now, requested_usage, values)
    return _from_decision(kind, feature_id, decision, requested_usage, values)


def feature_entitlement(
    snapshot: CustomerSnapshot | None,
    feature_id: str,
    now: datetime,
    *,
    requested_usage: float = 0.0,
    requested_values: Sequence[str] = (),
    request_fallback: FallbackValues | None = None,
    global_fallbacks: Mapping[str, FallbackValues],
    v2: bool = False,
) -> Result:
    """GetEntitlement (v1) and the feature form of GetEntitlementV2."""
    values = tuple(requested_values)
    if snapshot is None:
        fallback = _pick_fallback(feature_id, request_fallback, global_fallbacks)
        reason: DenialReason | None = DenialReason.UNKNOWN
        if v2 and request_fallback is None and fallback.has_access:
            # V2 drops the reason when a granting global fallback was merged in.
            reason = None
        kind = _SHAPE_KIND[fallback.shape]
        return _from_fallback(kind, feature_id, fallback, reason, requested_usage, values)
    ent = snapshot.state.features.get(feature_id)
    if ent is not None:
        kind = kind_of(ent.feature)
    else:
        kind = _SHAPE_KIND[_pick_fallback(feature_id, request_fallback, global_fallbacks).shape]
    decision = decide_feature(snapshot, feature_id, now, requested_usage, values)
    return _from_decision(kind, feature_id, decision, requested_usage, values)


def credit_entitlement(
    snapshot: CustomerSnapshot | None,
    currency_id: str,
    *,
    requested_usage: float = 0.0,
    request_fallback: FallbackValues | None = None,
) -> Result:
    """The currency form of GetEntitlementV2."""
    if snapshot is None:
        fallback = request_fallback or DEFAULT_FALLBACK
        return Result(
            Kind.CREDIT,
            fallback.has_access,
            True,
            DenialReason.UNKNOWN,
            currency_id,
            usage_limit=fallback.usage_limit,
            requested_usage=requested_usage,
        )
    decision = decide_credit(snapshot, currency_id, requested_usage)
    wallet = decision.wallet
    return Result(
        Kind.CREDIT,
        decision.has_access,
        False,
        decision.reason,
        currency_id,
        usage_limit=wallet.granted if wallet else None,
        soft_limit=wallet.credit.soft_limit if wallet else False,
        requested_usage=requested_usage,
        wallet=wallet,
    )


def entitlement_list(
    snapshot: CustomerSnapshot | None,
    now: datetime,
    *,
    include_credits: bool,
    global_fallbacks: Mapping[str, FallbackValues],
) -> ListResult:
    """GetEntitlements (features only) and GetEntitlementsStateV2 (with credits)."""
    if snapshot is None:
        synthetic = [
            _from_fallback(_SHAPE_KIND[fb.shape], fid, fb, DenialReason.UNKNOWN, 0.0, ())
            for fid, fb in global_fallbacks.items()
        ]
        return ListResult(synthetic, None, True)
    results = [
        _from_decision(kind_of(ent.feature), fid, decide_feature(snapshot, fid, now), 0.0, ())
        for fid, ent in snapshot.state.features.items()
    ]
    if include_credits:
        results.extend(credit_entitlement(snapshot, cid) for cid in snapshot.state.credits)
    return ListResult(results, snapshot.state.denial_reason, False)
