"""Catalog loading: the parsed model, and every validation problem reported at once."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from entitlements.model.state import CreditRate, Currency, FeatureType, MeterType, ResetPeriod
from upstream.catalog import (
    AddonBehavior,
    Aggregation,
    Catalog,
    CatalogError,
    CreditCadence,
    CreditConfig,
    EntitlementDef,
    EventMeter,
    Plan,
    Product,
    ResetAnchor,
    load_catalog,
    parse_catalog,
)

SOURCE = "catalog.yaml"
DELETE = object()

BASE: dict[str, Any] = {
    "currencies": [
        {"id": "credits", "displayName": "Credits", "unitSingular": "credit",
         "unitPlural": "credits", "description": "d", "metadata": {"tier": 1, "on": True}},
    ],
    "features": [
        {"id": "flag", "type": "BOOLEAN", "displayName": "Flag"},
        {"id": "seats", "type": "NUMBER", "units": "seat", "unitsPlural": "seats"},
        {"id": "calls", "type": "NUMBER", "meter": "INCREMENTAL",
         "eventMeter": {"eventName": "req", "aggregation": "COUNT", "filters": {"ok": True}}},
        {"id": "tier", "type": "ENUM", "enumValues": ["a", "b", "c"]},
        {"id": "storage", "type": "NUMBER", "meter": "FLUCTUATING",
         "eventMeter": {"eventName": "snap", "aggregation": "MAX", "dimension": "gb"}},
    ],
    "products": [{"id": "core"}, {"id": "other", "multipleSubscriptions": True}],
    "plans": [
        {
            "id": "free",
            "product": "core",
            "entitlements": [
                {"feature": "flag"},
                {"feature": "seats", "value": 3},
                {"feature": "calls", "limit": 100, "resetPeriod": "MONTH"},
                {"feature": "tier", "enumValues": ["a"]},
            ],
            "credits": [{"currency": "credits", "amount": 10, "cadence": "MONTH"}],
        },
        {
            "id": "pro",
            "product": "core",
            "extends": "free",
            "trialDays": 7,
            "entitlements": [
                {"feature": "calls", "unlimited": True},
                {"feature": "tier", "enumValues": ["b", "c"]},
                {"feature": "storage", "limit": 5, "softLimit": True, "resetPeriod": "DAY",
                 "resetAnchor": "CALENDAR", "perUnit": True,
                 "creditRate": {"currency": "credits", "amount": 0.5}},
            ],
            "credits": [{"currency": "credits", "amount": 99, "cadence": "YEAR",
                         "softLimit": True}],
        },
        {"id": "side", "product": "other"},
    ],
    "addons": [
        {"id": "boost", "product": "core", "displayName": "Boost",
         "entitlements": [{"feature": "calls", "limit": 50, "behavior": "OVERRIDE"},
                          {"feature": "seats", "value": 1}],
         "credits": [{"currency": "credits", "amount": 5, "cadence": "MONTH"}]},
    ],
}  # fmt: skip


def mutate(doc: dict[str, Any], path: str, value: object) -> None:
    """Set (or delete, or append at index len) the value at a 'a[0].b' style path."""
    tokens: list[str | int] = [
        int(t[1:-1]) if t.startswith("[") else t for t in re.findall(r"[^.\[\]]+|\[\d+\]", path)
    ]
    parent: Any = doc
    for token in tokens[:-1]:
        parent = parent[token]
    last = tokens[-1]
    if value is DELETE:
        del parent[last]
    elif isinstance(last, int) and last == len(parent):
        parent.append(value)
    else:
        parent[last] = value


def parse(**changes: object) -> Catalog:
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        mutate(doc, path, value)
    return parse_catalog(yaml.safe_dump(doc), SOURCE)


def problems_of(changes: dict[str, object]) -> tuple[str, ...]:
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        mutate(doc, path, value)
    with pytest.raises(CatalogError) as caught:
        parse_catalog(yaml.safe_dump(doc), SOURCE)
    return caught.value.problems


# --------------------------------------------------------------------------- valid


def test_base_catalog_parses_into_the_model() -> None:
    catalog = parse()
    assert catalog.currencies["credits"] == Currency(
        "credits", "Credits", "d", "credit", "credits", {"tier": 1, "on": True}
    )
    calls = catalog.features["calls"]
    assert (calls.feature_type, calls.meter_type, calls.is_metered) == (
        FeatureType.NUMBER,
        MeterType.INCREMENTAL,
        True,
    )
    assert calls.event_meter == EventMeter("req", Aggregation.COUNT, None, {"ok": True})
    assert catalog.features["storage"].event_meter == EventMeter("snap", Aggregation.MAX, "gb")
    assert catalog.features["seats"].meter_type is MeterType.NONE
    assert catalog.features["tier"].enum_values == ("a", "b", "c")
    assert catalog.features["flag"].as_feature().display_name == "Flag"
    assert catalog.products == {"core": Product("core"), "other": Product("other", True)}
    assert catalog.plans["free"].trial_days == 0
    assert catalog.plans["pro"].trial_days == 7
    assert catalog.plans["side"] == Plan("side", "other")


def test_entitlement_shapes_and_defaults() -> None:
    catalog = parse()
    free = {e.feature_id: e for e in catalog.plans["free"].entitlements}
    assert free["flag"] == EntitlementDef("flag")
    assert free["seats"] == EntitlementDef("seats", 3)
    assert free["calls"] == EntitlementDef("calls", 100, reset_period=ResetPeriod.MONTH)
    assert free["calls"].reset_anchor is ResetAnchor.SUBSCRIPTION_START
    assert free["tier"] == EntitlementDef("tier", enum_values=("a",))
    pro = {e.feature_id: e for e in catalog.plans["pro"].entitlements}
    assert pro["calls"] == EntitlementDef("calls", unlimited=True)
    assert pro["storage"] == EntitlementDef(
        "storage",
        5,
        soft_limit=True,
        reset_period=ResetPeriod.DAY,
        reset_anchor=ResetAnchor.CALENDAR,
        per_unit=True,
        credit_rate=CreditRate(0.5, "credits"),
    )
    boost = catalog.addons["boost"]
    assert [e.behavior for e in boost.entitlements] == [
        AddonBehavior.OVERRIDE,
        AddonBehavior.INCREMENT,
    ]
    assert boost.credits == (CreditConfig("credits", 5, CreditCadence.MONTH),)


def test_credit_backed_metered_feature_needs_no_limit() -> None:
    rate = {"currency": "credits", "amount": 2}
    catalog = parse(**{"plans[0].entitlements[2]": {"feature": "calls", "creditRate": rate}})
    calls = catalog.plans["free"].entitlements[2]
    assert (calls.value, calls.unlimited, calls.credit_rate) == (
        None,
        False,
        CreditRate(2, "credits"),
    )


def test_inheritance_resolves_per_feature_and_per_currency() -> None:
    catalog = parse()
    resolved = catalog.resolved_plan_entitlements("pro")
    assert list(resolved) == ["flag", "seats", "calls", "tier", "storage"]
    assert resolved["calls"].unlimited
    assert resolved["tier"].enum_values == ("b", "c")
    assert resolved["seats"].value == 3
    credits = catalog.resolved_plan_credits("pro")
    assert credits["credits"].cadence is CreditCadence.YEAR
    assert [p.id for p in catalog.plan_chain("pro")] == ["free", "pro"]
    assert catalog.resolved_plan_entitlements("free")["calls"].value == 100


def test_plan_chain_refuses_unknown_plans_and_hand_built_cycles() -> None:
    catalog = parse()
    with pytest.raises(KeyError):
        catalog.plan_chain("ghost")
    looped = Catalog(
        plans={"a": Plan("a", "core", extends="b"), "b": Plan("b", "core", extends="a")}
    )
    with pytest.raises(CatalogError, match="cycle"):
        looped.resolved_plan_entitlements("a")


def test_catalog_mappings_are_read_only() -> None:
    catalog = parse()
    with pytest.raises(TypeError):
        catalog.features["x"] = catalog.features["flag"]  # type: ignore[index]


def test_load_catalog_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    assert set(load_catalog(path).plans) == {"free", "pro", "side"}


def test_load_catalog_names_the_file_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("features: [{id: x}]\n", encoding="utf-8")
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.problems == (f"{path}: features[0].type: is required",)


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "absent.yaml")


def test_empty_catalog_is_valid_but_an_empty_document_is_not() -> None:
    assert parse_catalog("{}", SOURCE) == Catalog()
    with pytest.raises(CatalogError) as caught:
        parse_catalog("", SOURCE)
    assert caught.value.problems == ("catalog.yaml: expected a mapping",)


def test_yaml_anchors_and_merge_keys_work() -> None:
    text = """
features:
  - &number {id: seats, type: NUMBER, units: seat}
  - {<<: *number, id: projects, units: project}
"""
    catalog = parse_catalog(text, SOURCE)
    assert catalog.features["projects"].units == "project"
    assert catalog.features["projects"].feature_type is FeatureType.NUMBER


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("features: [\n", "catalog.yaml: line 2, column 1: invalid YAML: "),
        ("plans: []\nplans: []\n", "catalog.yaml: line 2, column 1: invalid YAML: duplicate key"),
        ("features:\n  - {id: a, id: b}\n", "invalid YAML: duplicate key 'id'"),
    ],
    ids=["syntax", "duplicate-root-key", "duplicate-nested-key"],
)
def test_yaml_errors(text: str, problem: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(text, SOURCE)
    (only,) = caught.value.problems
    assert problem in only


# --------------------------------------------------------------------------- invalid

_ENT_KEYS = (
    "feature, value, unlimited, perUnit, limit, softLimit, resetPeriod, resetAnchor, creditRate,"
    " enumValues"
)
CASES: list[tuple[str, dict[str, object], str]] = [
    ("currency-name", {"currencies[0].displayName": DELETE}, "currencies[0].displayName: is required"),
    ("currency-metadata", {"currencies[0].metadata": {"k": [1]}},
     "currencies[0].metadata.k: expected a string, finite number or boolean"),
    ("currency-metadata-type", {"currencies[0].metadata": [1]},
     "currencies[0].metadata: expected a mapping"),
    ("feature-type", {"features[0].type": "BOOL"},
     "features[0].type: expected one of: BOOLEAN, NUMBER, ENUM"),
    ("feature-type-missing", {"features[0].type": DELETE}, "features[0].type: is required"),
    ("feature-id-empty", {"features[0].id": " "}, "features[0].id: expected a non-empty string"),
    ("feature-id-number", {"features[0].id": 7}, "features[0].id: expected a non-empty string"),
    ("boolean-metered", {"features[0].meter": "INCREMENTAL"},
     "features[0].meter: only NUMBER features can be metered"),
    ("enum-metered", {"features[3].meter": "FLUCTUATING"},
     "features[3].meter: only NUMBER features can be metered"),
    ("meter-value", {"features[1].meter": "CONTINUOUS"},
     "features[1].meter: expected one of: NONE, FLUCTUATING, INCREMENTAL"),
    ("duplicate-feature", {"features[1].id": "flag"},
     "features[1].id: duplicate id 'flag' (first at features[0])"),
    ("enum-empty", {"features[3].enumValues": []}, "features[3].enumValues: must not be empty"),
    ("enum-duplicate", {"features[3].enumValues": ["a", "a"]},
     "features[3].enumValues[1]: duplicate value 'a'"),
    ("enum-missing", {"features[3].enumValues": DELETE}, "features[3].enumValues: is required"),
    ("enum-not-strings", {"features[3].enumValues": ["a", 3]},
     "features[3].enumValues[1]: expected a non-empty string"),
    ("enum-values-on-number", {"features[1].enumValues": ["x"]},
     "features[1].enumValues: only ENUM features have enumValues"),
    ("event-meter-unmetered", {"features[1].eventMeter": {"eventName": "e", "aggregation": "COUNT"}},
     "features[1].eventMeter: only metered features can have an eventMeter"),
    ("count-with-dimension", {"features[2].eventMeter.dimension": "x"},
     "features[2].eventMeter.dimension: COUNT counts events and takes no dimension"),
    ("max-without-dimension", {"features[4].eventMeter.dimension": DELETE},
     "features[4].eventMeter.dimension: is required for MAX"),
    ("aggregation", {"features[4].eventMeter.aggregation": "AVG"},
     "features[4].eventMeter.aggregation: expected one of: COUNT, SUM, MIN, MAX, COUNT_DISTINCT"),
    ("event-name", {"features[4].eventMeter.eventName": DELETE},
     "features[4].eventMeter.eventName: is required"),
    ("filter-value", {"features[2].eventMeter.filters": {"n": [1]}},
     "features[2].eventMeter.filters.n: expected a string, finite number or boolean"),
    ("filter-nan", {"features[2].eventMeter.filters": {"n": float("nan")}},
     "features[2].eventMeter.filters.n: expected a string, finite number or boolean"),
    ("meter-not-mapping", {"features[2].eventMeter": "req"}, "features[2].eventMeter: expected a mapping"),
    ("unknown-feature-key", {"features[0].colour": "red"},
     "features[0].colour: unknown key (expected one of: id, displayName, type, meter, units,"
     " unitsPlural, enumValues, eventMeter)"),
    ("multiple-subscriptions", {"products[0].multipleSubscriptions": "yes"},
     "products[0].multipleSubscriptions: expected true or false"),
    ("duplicate-product", {"products[1].id": "core"},
     "products[1].id: duplicate id 'core' (first at products[0])"),
    ("unknown-product", {"plans[0].product": "nope"}, "plans[0].product: unknown product 'nope'"),
    ("unknown-feature", {"plans[0].entitlements[0].feature": "api-calls2"},
     "plans[0].entitlements[0].feature: unknown feature 'api-calls2'"),
    ("boolean-with-value", {"plans[0].entitlements[0].value": 1},
     "plans[0].entitlements[0].value: not allowed for boolean feature 'flag'"),
    ("numeric-missing-value", {"plans[0].entitlements[1].value": DELETE},
     "plans[0].entitlements[1].value: is required (or unlimited: true)"),
    ("numeric-both", {"plans[0].entitlements[1].unlimited": True},
     "plans[0].entitlements[1].value: cannot be combined with unlimited: true"),
    ("numeric-negative", {"plans[0].entitlements[1].value": -1},
     "plans[0].entitlements[1].value: expected a finite number >= 0"),
    ("numeric-string", {"plans[0].entitlements[1].value": "3"},
     "plans[0].entitlements[1].value: expected a finite number >= 0"),
    ("numeric-bool", {"plans[0].entitlements[1].value": True},
     "plans[0].entitlements[1].value: expected a finite number >= 0"),
    ("numeric-infinite", {"plans[0].entitlements[1].value": float("inf")},
     "plans[0].entitlements[1].value: expected a finite number >= 0"),
    ("numeric-huge-int", {"plans[0].entitlements[1].value": 10**400},
     "plans[0].entitlements[1].value: expected a finite number >= 0"),
    ("numeric-soft", {"plans[0].entitlements[1].softLimit": True},
     "plans[0].entitlements[1].softLimit: not allowed for numeric feature 'seats'"),
    ("numeric-reset", {"plans[0].entitlements[1].resetPeriod": "DAY"},
     "plans[0].entitlements[1].resetPeriod: not allowed for numeric feature 'seats'"),
    ("unlimited-not-bool", {"plans[0].entitlements[1].unlimited": "yes"},
     "plans[0].entitlements[1].unlimited: expected true or false"),
    ("metered-missing-limit", {"plans[0].entitlements[2].limit": DELETE},
     "plans[0].entitlements[2].limit: is required (or unlimited: true)"),
    ("metered-value-key", {"plans[0].entitlements[2].value": 5},
     "plans[0].entitlements[2].value: not allowed for metered feature 'calls'"),
    ("reset-period", {"plans[0].entitlements[2].resetPeriod": "QUARTER"},
     "plans[0].entitlements[2].resetPeriod: expected one of: HOUR, DAY, WEEK, MONTH, YEAR"),
    ("reset-anchor", {"plans[0].entitlements[2].resetAnchor": "START"},
     "plans[0].entitlements[2].resetAnchor: expected one of: SUBSCRIPTION_START, CALENDAR"),
    ("anchor-without-period",
     {"plans[0].entitlements[2].resetAnchor": "CALENDAR", "plans[0].entitlements[2].resetPeriod": DELETE},
     "plans[0].entitlements[2].resetAnchor: requires a resetPeriod"),
    ("rate-currency", {"plans[0].entitlements[2].creditRate": {"currency": "nope", "amount": 1}},
     "plans[0].entitlements[2].creditRate.currency: unknown currency 'nope'"),
    ("rate-amount", {"plans[0].entitlements[2].creditRate": {"currency": "credits", "amount": 0}},
     "plans[0].entitlements[2].creditRate.amount: expected a finite number > 0"),
    ("rate-unknown-key", {"plans[0].entitlements[2].creditRate": {"currency": "credits",
                                                                   "amount": 1, "formula": "x"}},
     "plans[0].entitlements[2].creditRate.formula: unknown key (expected one of: currency, amount)"),
    ("enum-unknown-value", {"plans[0].entitlements[3].enumValues": ["a", "z"]},
     "plans[0].entitlements[3].enumValues: unknown value 'z' of feature 'tier'"),
    ("enum-limit", {"plans[0].entitlements[3].limit": 5},
     "plans[0].entitlements[3].limit: not allowed for enum feature 'tier'"),
    ("enum-missing-values", {"plans[0].entitlements[3].enumValues": DELETE},
     "plans[0].entitlements[3].enumValues: is required"),
    ("plan-behavior", {"plans[0].entitlements[0].behavior": "OVERRIDE"},
     f"plans[0].entitlements[0].behavior: unknown key (expected one of: {_ENT_KEYS})"),
    ("entitlement-typo", {"plans[0].entitlements[2].softlimit": True},
     f"plans[0].entitlements[2].softlimit: unknown key (expected one of: {_ENT_KEYS})"),
    ("duplicate-entitlement", {"plans[0].entitlements[4]": {"feature": "seats", "value": 1}},
     "plans[0].entitlements[4].feature: 'seats' is already listed at plans[0].entitlements[1]"),
    ("entitlement-not-mapping", {"plans[0].entitlements[4]": "seats"},
     "plans[0].entitlements[4]: expected a mapping"),
    ("entitlements-not-list", {"plans[0].entitlements": {"feature": "flag"}},
     "plans[0].entitlements: expected a list"),
    ("cadence", {"plans[0].credits[0].cadence": "WEEK"},
     "plans[0].credits[0].cadence: expected one of: MONTH, YEAR"),
    ("credit-amount", {"plans[0].credits[0].amount": 0},
     "plans[0].credits[0].amount: expected a finite number > 0"),
    ("credit-currency", {"plans[0].credits[0].currency": "gold"},
     "plans[0].credits[0].currency: unknown currency 'gold'"),
    ("credit-soft", {"plans[0].credits[0].softLimit": 1},
     "plans[0].credits[0].softLimit: expected true or false"),
    ("duplicate-credit", {"plans[0].credits[1]": {"currency": "credits", "amount": 1, "cadence": "YEAR"}},
     "plans[0].credits[1].currency: 'credits' is already listed at plans[0].credits[0]"),
    ("trial-negative", {"plans[0].trialDays": -1}, "plans[0].trialDays: expected an integer >= 0"),
    ("trial-fraction", {"plans[0].trialDays": 1.5}, "plans[0].trialDays: expected an integer >= 0"),
    ("extends-unknown", {"plans[1].extends": "ghost"}, "plans[1].extends: unknown plan 'ghost'"),
    ("extends-other-product", {"plans[1].extends": "side"},
     "plans[1].extends: plan 'side' belongs to product 'other', not 'core'"),
    ("extends-self", {"plans[1].extends": "pro"}, "plans[1].extends: inheritance cycle pro -> pro"),
    ("extends-cycle", {"plans[0].extends": "pro"},
     "plans[0].extends: inheritance cycle free -> pro -> free"),
    ("duplicate-plan", {"plans[2].id": "free"}, "plans[2].id: duplicate id 'free' (first at plans[0])"),
    ("addon-behavior", {"addons[0].entitlements[0].behavior": "REPLACE"},
     "addons[0].entitlements[0].behavior: expected one of: INCREMENT, OVERRIDE"),
    ("addon-product", {"addons[0].product": DELETE}, "addons[0].product: is required"),
    ("addon-trial", {"addons[0].trialDays": 3},
     "addons[0].trialDays: unknown key (expected one of: id, product, displayName, entitlements,"
     " credits)"),
    ("duplicate-addon", {"addons[1]": {"id": "boost", "product": "core"}},
     "addons[1].id: duplicate id 'boost' (first at addons[0])"),
    ("addon-unknown-feature", {"addons[0].entitlements[1].feature": "ghost"},
     "addons[0].entitlements[1].feature: unknown feature 'ghost'"),
    ("metadata-key", {"currencies[0].metadata": {1: "x"}},
     "currencies[0].metadata: key 1 is not a non-empty string"),
    ("enum-not-list", {"features[3].enumValues": "a"},
     "features[3].enumValues: expected a list of strings"),
    ("trial-bool", {"plans[0].trialDays": True}, "plans[0].trialDays: expected an integer >= 0"),
    ("credit-missing-cadence", {"plans[0].credits[0].cadence": DELETE},
     "plans[0].credits[0].cadence: is required"),
    ("rate-missing-amount", {"plans[1].entitlements[2].creditRate.amount": DELETE},
     "plans[1].entitlements[2].creditRate.amount: is required"),
    ("plans-not-list", {"plans": "free"}, "plans: expected a list"),
    ("plan-not-mapping", {"plans[3]": "oops"}, "plans[3]: expected a mapping"),
    ("root-unknown-key", {"extras": 1},
     "extras: unknown key (expected one of: currencies, features, products, plans, addons)"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_problem(changes: dict[str, object], problem: str) -> None:
    assert f"{SOURCE}: {problem}" in problems_of(changes)


TOGETHER = [
    "currency-metadata",
    "meter-value",
    "count-with-dimension",
    "unknown-feature-key",
    "multiple-subscriptions",
    "unknown-feature",
    "numeric-both",
    "reset-period",
    "duplicate-entitlement",
    "cadence",
    "extends-cycle",
    "addon-behavior",
    "root-unknown-key",
]


def test_every_problem_is_reported_at_once() -> None:
    cases = [c for c in CASES if c[0] in TOGETHER]
    changes = {path: value for _, case, _ in cases for path, value in case.items()}
    problems = problems_of(changes)
    assert sorted(problems) == sorted(
        [f"{SOURCE}: {p}" for _, _, p in cases]
        # A cycle is reported on every plan around it.
        + [f"{SOURCE}: plans[1].extends: inheritance cycle pro -> free -> pro"]
    )


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"features[1].type": "NUM"}, "plans[0].entitlements[1].feature"),
        ({"plans[0].product": "nope"}, "plans[1].extends"),
        ({"currencies[0].displayName": DELETE}, "credits[0].currency"),
    ],
    ids=["broken-feature", "broken-parent-plan", "broken-currency"],
)
def test_invalid_items_do_not_cascade_into_unknown_references(
    changes: dict[str, object], problem: str
) -> None:
    problems = problems_of(changes)
    assert len(problems) == 1
    assert problem not in problems[0]


def test_error_message_lists_the_problems() -> None:
    with pytest.raises(CatalogError) as caught:
        parse(**{"plans[0].entitlements[0].feature": "api-calls2", "plans[0].product": "x"})
    message = str(caught.value)
    assert message.startswith("invalid catalog (2 problems):\n  catalog.yaml: ")
    assert "catalog.yaml: plans[0].entitlements[0].feature: unknown feature 'api-calls2'" in message


def test_a_bad_value_is_reported_once() -> None:
    problems = problems_of({"plans[0].entitlements[1].unlimited": "yes"})
    assert len([p for p in problems if ".unlimited" in p]) == 1
