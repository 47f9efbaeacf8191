"""The local projection of a buffered usage report: what upstream will make of it, applied to
the snapshot this sidecar holds so enforcement keeps working while upstream is unreachable.

Pure: the time is an argument. Upstream's own answer (the acknowledgement when the report is
shipped, or the next change from the stream) carries a newer version and replaces it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from entitlements.model.state import CustomerSnapshot, UsageRecord
from sidecar.evaluation.rules import effective_usage
from sidecar.model.usage import UpdateBehavior, UsageReport


def project_usage(
    snapshot: CustomerSnapshot, report: UsageReport, now: datetime
) -> tuple[CustomerSnapshot, str | None]:
    """``snapshot`` with ``report`` applied as upstream applies it (DELTA adds to the current
    period's usage, SET replaces it; a credit-backed feature also burns its wallet), and the
    currency whose wallet changed. ``snapshot`` itself when the feature is not entitled: the
    projection claims nothing upstream would refuse.

    The records keep the versions they had, so anything upstream says about them next (its
    versions only grow) replaces the projection.
    """
    entitlement = snapshot.state.features.get(report.feature_id)
    if entitlement is None:
        return snapshot, None
    held = snapshot.feature_usage.get(report.feature_id)
    usage = effective_usage(entitlement, held, now)
    base = usage.current_usage
    new = report.value if report.behavior is UpdateBehavior.SET else base + report.value
    record = replace(
        held or UsageRecord(),
        current_usage=new,
        period_start=usage.period_start,
        period_end=usage.period_end,
        updated_at=now,
    )
    projected = snapshot.with_feature_usage(report.feature_id, record)
    rate = entitlement.credit_rate
    if rate is None:
        return projected, None
    wallet = snapshot.credit_usage.get(rate.currency_id) or UsageRecord()
    burnt = replace(
        wallet,
        current_usage=wallet.current_usage + (new - base) * rate.amount,
        updated_at=now,
    )
    return projected.with_credit_usage(rate.currency_id, burnt), rate.currency_id
