"""The product catalog as immutable values: currencies, features, products, plans and add-ons.

Instances are built and validated by :mod:`upstream.catalog.loader`; everything
here assumes a valid catalog (every reference resolves, no inheritance cycles)
except :meth:`Catalog.plan_chain`, which still refuses a cycle so that a
hand-built catalog cannot loop forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from entitlements.model.state import (
    CreditRate,
    Currency,
    Feature,
    FeatureType,
    MeterType,
    ResetPeriod,
)

__all__ = [
    "Addon",
    "AddonBehavior",
    "Aggregation",
    "Catalog",
    "CatalogError",
    "CreditCadence",
    "CreditConfig",
    "EntitlementDef",
    "EventMeter",
    "FeatureDef",
    "FilterValue",
    "Plan",
    "Product",
    "ResetAnchor",
]

#: An event dimension value an event-meter filter can compare against.
FilterValue = str | int | float | bool


class Aggregation(StrEnum):
    COUNT = "COUNT"
    SUM = "SUM"
    MIN = "MIN"
    MAX = "MAX"
    COUNT_DISTINCT = "COUNT_DISTINCT"


class ResetAnchor(StrEnum):
    """Where usage periods are counted from."""

    SUBSCRIPTION_START = "SUBSCRIPTION_START"
    # Start of the calendar hour/day/ISO week/month/year, identical for every customer.
    CALENDAR = "CALENDAR"


class AddonBehavior(StrEnum):
    INCREMENT = "INCREMENT"
    OVERRIDE = "OVERRIDE"


class CreditCadence(StrEnum):
    MONTH = "MONTH"
    YEAR = "YEAR"

    @property
    def period(self) -> ResetPeriod:
        return ResetPeriod(self.value)


class CatalogError(ValueError):
    """The catalog is invalid; ``problems`` lists every problem as ``file: path: reason``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        header = f"invalid catalog ({count} problem{'s' if count != 1 else ''}):"
        super().__init__("\n  ".join([header, *self.problems]))


@dataclass(frozen=True, slots=True)
class EventMeter:
    """How raw usage events turn into a metered feature's usage."""

    event_name: str
    aggregation: Aggregation
    # The aggregated event dimension; None only for COUNT.
    dimension: str | None = None
    # Only events whose dimensions equal every one of these are counted.
    filters: Mapping[str, FilterValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FeatureDef:
    id: str
    feature_type: FeatureType
    meter_type: MeterType = MeterType.NONE
    display_name: str | None = None
    units: str | None = None
    units_plural: str | None = None
    # The values an ENUM feature can take, in catalog order.
    enum_values: tuple[str, ...] = ()
    event_meter: EventMeter | None = None

    @property
    def is_metered(self) -> bool:
        return self.as_feature().is_metered

    def as_feature(self) -> Feature:
        """The feature as the canonical state model describes it."""
        return Feature(
            id=self.id,
            feature_type=self.feature_type,
            meter_type=self.meter_type,
            units=self.units,
            units_plural=self.units_plural,
            display_name=self.display_name,
        )


@dataclass(frozen=True, slots=True)
class Product:
    id: str
    # True: a customer may hold several subscriptions, one per resource id.
    multiple_subscriptions: bool = False
    display_name: str | None = None


@dataclass(frozen=True, slots=True)
class EntitlementDef:
    """One feature granted by a plan or add-on; which fields matter depends on the feature type."""

    feature_id: str
    # The limit of a metered feature or the value of a numeric one; None for boolean
    # and enum features, and for a credit-backed feature without a unit cap.
    value: float | None = None
    unlimited: bool = False
    soft_limit: bool = False
    # None: usage never resets.
    reset_period: ResetPeriod | None = None
    reset_anchor: ResetAnchor = ResetAnchor.SUBSCRIPTION_START
    # Multiply the value by the subscription's billable quantity of this feature (seats...).
    per_unit: bool = False
    credit_rate: CreditRate | None = None
    enum_values: tuple[str, ...] = ()
    # Add-ons only; plans ignore it.
    behavior: AddonBehavior = AddonBehavior.INCREMENT


@dataclass(frozen=True, slots=True)
class CreditConfig:
    """A recurring credit grant issued every ``cadence`` to subscribers."""

    currency_id: str
    amount: float
    cadence: CreditCadence
    soft_limit: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    product_id: str
    display_name: str | None = None
    extends: str | None = None
    trial_days: int = 0
    entitlements: tuple[EntitlementDef, ...] = ()
    credits: tuple[CreditConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class Addon:
    id: str
    product_id: str
    display_name: str | None = None
    entitlements: tuple[EntitlementDef, ...] = ()
    credits: tuple[CreditConfig, ...] = ()


@dataclass(frozen=True, slots=True)
class Catalog:
    """A validated catalog; every mapping is keyed by id."""

    currencies: Mapping[str, Currency] = field(default_factory=dict)
    features: Mapping[str, FeatureDef] = field(default_factory=dict)
    products: Mapping[str, Product] = field(default_factory=dict)
    plans: Mapping[str, Plan] = field(default_factory=dict)
    addons: Mapping[str, Addon] = field(default_factory=dict)

    def plan_chain(self, plan_id: str) -> tuple[Plan, ...]:
        """The plan and its ancestors, root first.

        Raises:
            KeyError: an unknown plan id.
            CatalogError: the inheritance loops.
        """
        chain: list[Plan] = []
        seen: set[str] = set()
        current: str | None = plan_id
        while current is not None:
            if current in seen:
                raise CatalogError([f"plans: inheritance cycle through {current!r}"])
            seen.add(current)
            plan = self.plans[current]
            chain.append(plan)
            current = plan.extends
        return tuple(reversed(chain))

    def resolved_plan_entitlements(self, plan_id: str) -> Mapping[str, EntitlementDef]:
        """Feature id -> entitlement with inheritance applied (a child overrides per feature)."""
        resolved: dict[str, EntitlementDef] = {}
        for plan in self.plan_chain(plan_id):
            resolved.update((e.feature_id, e) for e in plan.entitlements)
        return resolved

    def resolved_plan_credits(self, plan_id: str) -> Mapping[str, CreditConfig]:
        """Currency id -> recurring credit config, a child overriding its parent per currency."""
        resolved: dict[str, CreditConfig] = {}
        for plan in self.plan_chain(plan_id):
            resolved.update((c.currency_id, c) for c in plan.credits)
        return resolved
