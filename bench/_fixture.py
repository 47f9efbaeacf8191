"""Synthetic customers shared by the benchmarks.

Every customer gets the same 20-entitlement plan (5 boolean, 5 numeric
configuration values, 6 metered features with usage records, 4 enums) built
from *fresh* objects, the way a real source's decoder would hand them over:
nothing but the enum members is shared between two customers, so what the
cache holds per customer is what a production sidecar would hold.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

from entitlements.model.state import (
    CustomerSnapshot,
    EntitlementState,
    Feature,
    FeatureEntitlement,
    FeatureType,
    MeterType,
    ResetPeriod,
    UsageRecord,
)

N_BOOLEAN = 5
N_NUMERIC = 5
N_METERED = 6
N_ENUM = 4
ENTITLEMENTS_PER_CUSTOMER = N_BOOLEAN + N_NUMERIC + N_METERED + N_ENUM  # 20

BOOLEAN_IDS = [f"feature-boolean-{i}" for i in range(N_BOOLEAN)]
NUMERIC_IDS = [f"feature-numeric-{i}" for i in range(N_NUMERIC)]
METERED_IDS = [f"feature-metered-{i}" for i in range(N_METERED)]
ENUM_IDS = [f"feature-enum-{i}" for i in range(N_ENUM)]
ALL_FEATURE_IDS = BOOLEAN_IDS + NUMERIC_IDS + METERED_IDS + ENUM_IDS


def customer_id(i: int) -> str:
    return f"customer-{i:08d}"


def _month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


def build_snapshot(i: int, now: datetime | None = None) -> CustomerSnapshot:
    """Customer ``i``'s state: 20 entitlements, usage on every metered feature.

    The numbers vary with ``i`` but never change a field's encoded size class
    (usage is never zero, limits stay in the same varint range), so every
    customer produces the same response sizes.
    """
    now = now or datetime.now(UTC)
    period_start, period_end = _month_bounds(now)
    # A fixed anchor in the past: the period arithmetic has real work to do.
    anchor = datetime(2024, 1, 1, tzinfo=UTC).replace(day=1 + i % 28)
    features: dict[str, FeatureEntitlement] = {}
    usage: dict[str, UsageRecord] = {}
    for n in range(N_BOOLEAN):
        fid = f"feature-boolean-{n}"
        features[fid] = FeatureEntitlement(
            feature=Feature(fid, FeatureType.BOOLEAN, display_name=f"Boolean feature {n}")
        )
    for n in range(N_NUMERIC):
        fid = f"feature-numeric-{n}"
        features[fid] = FeatureEntitlement(
            feature=Feature(
                fid, FeatureType.NUMBER, units="seat", units_plural="seats",
                display_name=f"Numeric feature {n}",
            ),
            usage_limit=float(10 + n * 10 + i % 7),  # < 128: same varint size for all
        )
    for n in range(N_METERED):
        fid = f"feature-metered-{n}"
        meter = MeterType.INCREMENTAL if n % 2 == 0 else MeterType.FLUCTUATING
        features[fid] = FeatureEntitlement(
            feature=Feature(
                fid, FeatureType.NUMBER, meter, units="call", units_plural="calls",
                display_name=f"Metered feature {n}",
            ),
            usage_limit=float(1_000_000 + n),
            # One unlimited and one soft-limited feature in the mix.
            unlimited=n == 4,
            soft_limit=n == 5,
            reset_period=ResetPeriod.MONTH if meter is MeterType.INCREMENTAL else None,
            usage_period_anchor=anchor if meter is MeterType.INCREMENTAL else None,
        )
        usage[fid] = UsageRecord(
            current_usage=float(1 + (i * 31 + n) % 5000),
            period_start=period_start if meter is MeterType.INCREMENTAL else None,
            period_end=period_end if meter is MeterType.INCREMENTAL else None,
            updated_at=now,
            version=1 + n,
        )
    for n in range(N_ENUM):
        fid = f"feature-enum-{n}"
        features[fid] = FeatureEntitlement(
            feature=Feature(fid, FeatureType.ENUM, display_name=f"Enum feature {n}"),
            enum_values=tuple(f"value-{n}-{k}" for k in range(3 + n % 3)),
        )
    state = EntitlementState(
        customer_id=customer_id(i), features=features, version=1, updated_at=now
    )
    return CustomerSnapshot(state=state, feature_usage=usage)
