"""Small builders for entitlement state used across the test suite."""

from __future__ import annotations

from datetime import UTC, datetime

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

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def boolean(feature_id: str, **kw: object) -> FeatureEntitlement:
    return FeatureEntitlement(Feature(feature_id, FeatureType.BOOLEAN), **kw)  # type: ignore[arg-type]


def numeric(feature_id: str, value: float | None, **kw: object) -> FeatureEntitlement:
    return FeatureEntitlement(
        Feature(feature_id, FeatureType.NUMBER, MeterType.NONE, units="seat", units_plural="seats"),
        usage_limit=value,
        **kw,  # type: ignore[arg-type]
    )


def metered(feature_id: str, limit: float | None, **kw: object) -> FeatureEntitlement:
    kw.setdefault("reset_period", ResetPeriod.MONTH)
    kw.setdefault("usage_period_anchor", datetime(2026, 1, 31, tzinfo=UTC))
    return FeatureEntitlement(
        Feature(
            feature_id,
            FeatureType.NUMBER,
            MeterType.INCREMENTAL,
            units="call",
            units_plural="calls",
        ),
        usage_limit=limit,
        **kw,  # type: ignore[arg-type]
    )


def enum(feature_id: str, values: tuple[str, ...], **kw: object) -> FeatureEntitlement:
    return FeatureEntitlement(Feature(feature_id, FeatureType.ENUM), enum_values=values, **kw)  # type: ignore[arg-type]


def credit_backed(
    feature_id: str, currency_id: str, rate: float, **kw: object
) -> FeatureEntitlement:
    return metered(feature_id, None, credit_rate=CreditRate(rate, currency_id), **kw)


def wallet(currency_id: str, granted: float, **kw: object) -> CreditEntitlement:
    currency = Currency(
        currency_id,
        f"{currency_id} credits",
        description="AI credits",
        unit_singular="credit",
        unit_plural="credits",
        metadata={"tier": "gold"},
    )
    return CreditEntitlement(currency, granted, **kw)  # type: ignore[arg-type]


def usage(
    current: float, start: datetime | None = None, end: datetime | None = None
) -> UsageRecord:
    return UsageRecord(
        current_usage=current,
        period_start=start or datetime(2026, 5, 31, tzinfo=UTC),
        period_end=end or datetime(2026, 6, 30, tzinfo=UTC),
        updated_at=NOW,
        version=1,
    )


def snapshot(
    customer_id: str = "cust-1",
    *entitlements: FeatureEntitlement,
    resource_id: str | None = None,
    credits: tuple[CreditEntitlement, ...] = (),
    feature_usage: dict[str, UsageRecord] | None = None,
    credit_usage: dict[str, UsageRecord] | None = None,
    reason: DenialReason | None = None,
) -> CustomerSnapshot:
    state = EntitlementState(
        customer_id,
        resource_id,
        reason,
        {e.feature.id: e for e in entitlements},
        {c.currency.currency_id: c for c in credits},
    )
    return CustomerSnapshot(state, feature_usage or {}, credit_usage or {})


def demo_snapshot(customer_id: str = "cust-1", resource_id: str | None = None) -> CustomerSnapshot:
    """One of everything: the shape most API tests read."""
    far = datetime(2099, 1, 1, tzinfo=UTC)
    return snapshot(
        customer_id,
        boolean("sso"),
        numeric("seats", 5),
        metered("api-calls", 10),
        metered("storage", 100, soft_limit=True),
        enum("region", ("eu", "us")),
        credit_backed("ai-tokens", "ai-credits", 2.0),
        resource_id=resource_id,
        credits=(wallet("ai-credits", 100),),
        feature_usage={
            "api-calls": usage(7, end=far),
            "storage": usage(150, end=far),
        },
        credit_usage={"ai-credits": usage(40, end=far)},
    )
