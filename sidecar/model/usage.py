"""Usage reports, raw events and their acknowledgements, as exchanged with a source."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from entitlements.model.state import UsageRecord

DimensionValue = str | float | bool


class UpdateBehavior(StrEnum):
    DELTA = "DELTA"
    SET = "SET"


@dataclass(frozen=True, slots=True)
class UsageReport:
    customer_id: str
    feature_id: str
    value: float
    resource_id: str | None = None
    behavior: UpdateBehavior = UpdateBehavior.DELTA
    dimensions: Mapping[str, DimensionValue] = field(default_factory=dict)
    timestamp: datetime | None = None
    # Upstream counts a report once per key: a retry with the same key is answered with the
    # first acknowledgement. Set by the caller, or by the service before it forwards.
    idempotency_key: str | None = None

    def with_key(self, idempotency_key: str) -> UsageReport:
        """This report with ``idempotency_key``; ``dataclasses.replace`` costs twice as much,
        and the service keys every report it forwards without one. Lists every field: keep it
        in step with them (tests/unit/service/test_report_usage.py checks it)."""
        return UsageReport(
            self.customer_id,
            self.feature_id,
            self.value,
            self.resource_id,
            self.behavior,
            self.dimensions,
            self.timestamp,
            idempotency_key,
        )


@dataclass(frozen=True, slots=True)
class CreditAck:
    """The credit wallet after a report on a credit-backed feature."""

    currency_id: str
    granted: float
    # ``record.current_usage`` is the wallet-wide consumption after this report.
    record: UsageRecord
    consumed: float


@dataclass(frozen=True, slots=True)
class UsageAck:
    measurement_id: str
    customer_id: str
    feature_id: str
    resource_id: str | None = None
    # The feature's usage after this report; None when the source does not know it.
    usage: UsageRecord | None = None
    credit: CreditAck | None = None


@dataclass(frozen=True, slots=True)
class RawEvent:
    event_name: str
    customer_id: str
    idempotency_key: str
    resource_id: str | None = None
    dimensions: Mapping[str, DimensionValue] = field(default_factory=dict)
    timestamp: datetime | None = None
