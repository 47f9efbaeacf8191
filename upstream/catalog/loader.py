"""Load and validate a catalog written as YAML.

Validation never stops at the first problem: an operator fixing a catalog
wants the whole list at once, so every reader records problems and carries on
with what it could parse, and :class:`CatalogError` is raised at the end.
Unknown keys are problems too, because a misspelt optional key (``softlimit``)
would otherwise silently fall back to its default.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from entitlements.model.state import CreditRate, Currency, FeatureType, MeterType, ResetPeriod
from upstream.catalog.model import (
    Addon,
    AddonBehavior,
    Aggregation,
    Catalog,
    CatalogError,
    CreditCadence,
    CreditConfig,
    EntitlementDef,
    EventMeter,
    FeatureDef,
    Plan,
    Product,
    ResetAnchor,
)
from upstream.catalog.yaml_reader import (
    Node,
    Problems,
    load_yaml,
)

__all__ = ["load_catalog", "parse_catalog"]

_T = TypeVar("_T")
_E = TypeVar("_E", bound=StrEnum)

_ROOT_KEYS = ("currencies", "features", "products", "plans", "addons")
_CURRENCY_KEYS = ("id", "displayName", "description", "unitSingular", "unitPlural", "metadata")
_FEATURE_KEYS = (
    "id", "displayName", "type", "meter", "units", "unitsPlural", "enumValues", "eventMeter",
)  # fmt: skip
_METER_KEYS = ("eventName", "filters", "aggregation", "dimension")
_PRODUCT_KEYS = ("id", "displayName", "multipleSubscriptions")
_ADDON_KEYS = ("id", "product", "displayName", "entitlements", "credits")
_PLAN_KEYS = (*_ADDON_KEYS, "extends", "trialDays")
_CREDIT_KEYS = ("currency", "amount", "cadence", "softLimit")
_RATE_KEYS = ("currency", "amount")
# The entitlement keys each feature shape accepts; add-ons also accept "behavior".
_SHAPE_KEYS: Mapping[str, tuple[str, ...]] = {
    "boolean": ("feature",),
    "numeric": ("feature", "value", "unlimited", "perUnit"),
    "metered": (
        "feature", "limit", "unlimited", "softLimit", "resetPeriod", "resetAnchor", "perUnit",
        "creditRate",
    ),
    "enum": ("feature", "enumValues"),
}  # fmt: skip
_ENTITLEMENT_KEYS = tuple(dict.fromkeys(k for keys in _SHAPE_KEYS.values() for k in keys))


def load_catalog(path: Path) -> Catalog:
    """Read and validate the catalog at ``path``; problems name the file as given."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError([f"{path}: cannot read: {exc}"]) from exc
    return parse_catalog(text, str(path))


def parse_catalog(text: str, source: str) -> Catalog:
    """Parse and validate catalog YAML; ``source`` names it in every problem.

    Raises:
        CatalogError: listing every problem found.
    """
    problems = Problems(source)
    raw = load_yaml(text, problems)
    if not problems.items:
        catalog = _Builder(Node(raw, "", problems, _ROOT_KEYS)).build()
        if not problems.items:
            return catalog
    raise CatalogError(problems.items)


# --------------------------------------------------------------------------- YAML


@dataclass
class _Indexed:
    """Parsed items of one kind by id, remembering where each was declared."""

    items: dict[str, Any] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    # Ids of items that were declared but are invalid: their own problems are reported,
    # so references to them must not add "unknown ..." noise on top.
    broken: set[str] = field(default_factory=set)


class _Builder:
    def __init__(self, root: Node) -> None:
        self.root = root
        self.kinds = {kind: _Indexed() for kind in _ROOT_KEYS}

    def build(self) -> Catalog:
        # Order matters: entitlements are checked against the features and currencies.
        self._collect("currencies", _CURRENCY_KEYS, _currency)
        self._collect("features", _FEATURE_KEYS, _feature)
        self._collect("products", _PRODUCT_KEYS, _product)
        self._collect("plans", _PLAN_KEYS, self._plan)
        self._collect("addons", _ADDON_KEYS, self._addon)
        self._check_inheritance()
        by_id = {kind: MappingProxyType(dict(ix.items)) for kind, ix in self.kinds.items()}
        return Catalog(**by_id)

    def _collect(self, kind: str, keys: Collection[str], parse: Callable[[Node], Any]) -> None:
        into = self.kinds[kind]
        for path, raw in self.root.items(kind):
            node = Node(raw, path, self.root.problems, keys)
            item = parse(node)
            if item is None:
                into.broken.add(str(raw.get("id")) if isinstance(raw, dict) else "")
                continue
            item_id: str = item.currency_id if isinstance(item, Currency) else item.id
            if item_id in into.items:
                node.problem("id", f"duplicate id {item_id!r} (first at {into.paths[item_id]})")
                continue
            into.items[item_id] = item
            into.paths[item_id] = path

    def _known(self, node: Node, key: str, kind: str, what: str) -> str | None:
        ref = node.text(key, required=True)
        known = self.kinds[kind]
        if ref is not None and ref not in known.items:
            if ref not in known.broken:
                node.problem(key, f"unknown {what} {ref!r}")
            return None
        return ref

    def _package(self, node: Node, *, addon: bool) -> dict[str, Any] | None:
        """The fields plans and add-ons share; None if the item is unusable."""
        item_id = node.text("id", required=True)
        product = self._known(node, "product", "products", "product")
        fields = {
            "id": item_id,
            "product_id": product,
            "display_name": node.text("displayName"),
            "entitlements": self._entitlements(node, addon=addon),
            "credits": self._credits(node),
        }
        return fields if item_id and product else None

    def _plan(self, node: Node) -> Plan | None:
        fields = self._package(node, addon=False)
        extends = node.text("extends")
        trial_days = node.integer("trialDays", minimum=0)
        return Plan(**fields, extends=extends, trial_days=trial_days) if fields else None

    def _addon(self, node: Node) -> Addon | None:
        fields = self._package(node, addon=True)
        return Addon(**fields) if fields else None

    def _entitlements(self, parent: Node, *, addon: bool) -> tuple[EntitlementDef, ...]:
        keys = (*_ENTITLEMENT_KEYS, "behavior") if addon else _ENTITLEMENT_KEYS
        parsed = [
            (path, self._entitlement(Node(raw, path, parent.problems, keys), addon=addon))
            for path, raw in parent.items("entitlements")
        ]
        return _unique(parent.problems, "feature", parsed, lambda e: e.feature_id)

    def _entitlement(self, node: Node, *, addon: bool) -> EntitlementDef | None:
        feature_id = self._known(node, "feature", "features", "feature")
        behavior = (node.choice("behavior", AddonBehavior) if addon else None) or (
            AddonBehavior.INCREMENT
        )
        if feature_id is None:
            return None
        feature: FeatureDef = self.kinds["features"].items[feature_id]
        shape = _shape(feature)
        for key in node.present_keys():
            if key in _ENTITLEMENT_KEYS and key not in _SHAPE_KEYS[shape]:
                node.problem(key, f"not allowed for {shape} feature {feature_id!r}")
        if shape == "numeric":
            value, unlimited = _limit_or_unlimited(node, "value", optional=False)
            per_unit = node.flag("perUnit")
            return EntitlementDef(
                feature_id, value, unlimited, per_unit=per_unit, behavior=behavior
            )
        if shape == "metered":
            return self._metered(node, feature_id, behavior)
        if shape == "enum":
            values = _enum_values(node, feature)
            return EntitlementDef(feature_id, enum_values=values, behavior=behavior)
        return EntitlementDef(feature_id, behavior=behavior)

    def _metered(self, node: Node, feature_id: str, behavior: AddonBehavior) -> EntitlementDef:
        rate = self._credit_rate(node.child("creditRate", _RATE_KEYS))
        # A credit-backed feature may be limited by its wallet alone.
        limit, unlimited = _limit_or_unlimited(node, "limit", optional=node.has("creditRate"))
        period = node.choice("resetPeriod", ResetPeriod)
        anchor = node.choice("resetAnchor", ResetAnchor)
        if node.has("resetAnchor") and not node.has("resetPeriod"):
            node.problem("resetAnchor", "requires a resetPeriod")
        return EntitlementDef(
            feature_id,
            value=limit,
            unlimited=unlimited,
            soft_limit=node.flag("softLimit"),
            reset_period=period,
            reset_anchor=anchor or ResetAnchor.SUBSCRIPTION_START,
            per_unit=node.flag("perUnit"),
            credit_rate=rate,
            behavior=behavior,
        )

    def _credit_rate(self, node: Node | None) -> CreditRate | None:
        if node is None:
            return None
        currency = self._known(node, "currency", "currencies", "currency")
        amount = node.number("amount", required=True, positive=True)
        return CreditRate(amount, currency) if currency and amount else None

    def _credits(self, parent: Node) -> tuple[CreditConfig, ...]:
        parsed = [
            (path, self._credit(Node(raw, path, parent.problems, _CREDIT_KEYS)))
            for path, raw in parent.items("credits")
        ]
        return _unique(parent.problems, "currency", parsed, lambda c: c.currency_id)

    def _credit(self, node: Node) -> CreditConfig | None:
        currency = self._known(node, "currency", "currencies", "currency")
        amount = node.number("amount", required=True, positive=True)
        cadence = node.choice("cadence", CreditCadence, required=True)
        soft = node.flag("softLimit")
        if currency is None or amount is None or cadence is None:
            return None
        return CreditConfig(currency, amount, cadence, soft)

    def _check_inheritance(self) -> None:
        plans: dict[str, Plan] = self.kinds["plans"].items
        for plan_id, plan in plans.items():
            if plan.extends is None:
                continue
            at = f"{self.kinds['plans'].paths[plan_id]}.extends"
            parent = plans.get(plan.extends)
            if parent is None:
                if plan.extends not in self.kinds["plans"].broken:
                    self.root.problems.add(at, f"unknown plan {plan.extends!r}")
            elif parent.product_id != plan.product_id:
                other = f"plan {parent.id!r} belongs to product {parent.product_id!r}"
                self.root.problems.add(at, f"{other}, not {plan.product_id!r}")
            cycle = _cycle_from(plans, plan_id)
            if cycle:
                self.root.problems.add(at, "inheritance cycle " + " -> ".join(cycle))


# --------------------------------------------------------------------------- items


def _currency(node: Node) -> Currency | None:
    currency_id = node.text("id", required=True)
    display_name = node.text("displayName", required=True)
    currency = Currency(
        currency_id=currency_id or "",
        display_name=display_name or "",
        description=node.text("description"),
        unit_singular=node.text("unitSingular"),
        unit_plural=node.text("unitPlural"),
        metadata=node.scalar_mapping("metadata"),
    )
    return currency if currency_id and display_name else None


def _feature(node: Node) -> FeatureDef | None:
    feature_id = node.text("id", required=True)
    feature_type = node.choice("type", FeatureType, required=True)
    meter = node.choice("meter", MeterType) or MeterType.NONE
    if meter is not MeterType.NONE and feature_type not in (None, FeatureType.NUMBER):
        node.problem("meter", "only NUMBER features can be metered")
    enum_values: tuple[str, ...] = ()
    if feature_type is FeatureType.ENUM:
        enum_values = node.strings("enumValues", required=True) or ()
    elif node.has("enumValues"):
        node.problem("enumValues", "only ENUM features have enumValues")
    event_meter = _event_meter(node.child("eventMeter", _METER_KEYS))
    if node.has("eventMeter") and meter is MeterType.NONE:
        node.problem("eventMeter", "only metered features can have an eventMeter")
    if feature_id is None or feature_type is None:
        return None
    return FeatureDef(
        id=feature_id,
        feature_type=feature_type,
        meter_type=meter,
        display_name=node.text("displayName"),
        units=node.text("units"),
        units_plural=node.text("unitsPlural"),
        enum_values=enum_values,
        event_meter=event_meter,
    )


def _event_meter(node: Node | None) -> EventMeter | None:
    if node is None:
        return None
    event_name = node.text("eventName", required=True)
    aggregation = node.choice("aggregation", Aggregation, required=True)
    dimension = node.text("dimension")
    if aggregation is Aggregation.COUNT and node.has("dimension"):
        node.problem("dimension", "COUNT counts events and takes no dimension")
    elif aggregation not in (None, Aggregation.COUNT) and not node.has("dimension"):
        node.problem("dimension", f"is required for {aggregation}")
    filters = node.scalar_mapping("filters") or MappingProxyType({})
    if event_name is None or aggregation is None:
        return None
    return EventMeter(event_name, aggregation, dimension, filters)


def _product(node: Node) -> Product | None:
    product_id = node.text("id", required=True)
    multiple = node.flag("multipleSubscriptions")
    display_name = node.text("displayName")
    return Product(product_id, multiple, display_name) if product_id else None


def _shape(feature: FeatureDef) -> str:
    if feature.feature_type is FeatureType.BOOLEAN:
        return "boolean"
    if feature.feature_type is FeatureType.ENUM:
        return "enum"
    return "metered" if feature.is_metered else "numeric"


def _limit_or_unlimited(node: Node, key: str, *, optional: bool) -> tuple[float | None, bool]:
    value = node.number(key)
    unlimited = node.flag("unlimited")
    if node.has(key) and unlimited:
        node.problem(key, "cannot be combined with unlimited: true")
    elif not node.has(key) and not unlimited and not optional:
        node.problem(key, "is required (or unlimited: true)")
    return value, unlimited


def _enum_values(node: Node, feature: FeatureDef) -> tuple[str, ...]:
    values = node.strings("enumValues", required=True) or ()
    for value in values:
        if value not in feature.enum_values:
            node.problem("enumValues", f"unknown value {value!r} of feature {feature.id!r}")
    return values


def _unique(
    problems: Problems,
    key_name: str,
    parsed: Iterable[tuple[str, _T | None]],
    key: Callable[[_T], str],
) -> tuple[_T, ...]:
    """Drop (and report) a second item for one feature or currency within a plan or add-on."""
    result: dict[str, _T] = {}
    first: dict[str, str] = {}
    for path, item in parsed:
        if item is None:
            continue
        if key(item) in result:
            problems.add(
                f"{path}.{key_name}", f"{key(item)!r} is already listed at {first[key(item)]}"
            )
            continue
        result[key(item)] = item
        first[key(item)] = path
    return tuple(result.values())


def _cycle_from(plans: Mapping[str, Plan], start: str) -> list[str]:
    """The ids around the inheritance cycle ``start`` lies on, or [] if it lies on none."""
    path = [start]
    current = plans[start].extends
    while current is not None and current in plans and current not in path:
        path.append(current)
        current = plans[current].extends
    return [*path, start] if current == start else []
