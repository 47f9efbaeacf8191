"""Tests for sidecar.evaluation.fallback: the ENTITLEMENTS_FALLBACK parser and shapes.

The format is Stigg's flat camelCase JSON (stigg-compat.md 2.6). Every invalid
input must raise FallbackError with a message naming the offending path.
"""

from __future__ import annotations

import json
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from sidecar.evaluation.fallback import (
    DEFAULT_FALLBACK,
    INT32_MAX,
    INT32_MIN,
    FallbackError,
    FallbackShape,
    FallbackValues,
    parse_fallback_map,
)

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)


# --------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("text", ["", " ", "\n\t  \n"], ids=["empty", "space", "whitespace"])
def test_blank_means_no_fallbacks(text: str) -> None:
    assert parse_fallback_map(text) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("{}", {}, id="empty-object"),
        pytest.param(
            '{"feature-a":{"hasAccess":true,"usageLimit":1000},'
            '"feature-b":{"hasAccess":true,"isUnlimited":true}}',
            {
                "feature-a": FallbackValues(has_access=True, usage_limit=1000.0),
                "feature-b": FallbackValues(has_access=True, is_unlimited=True),
            },
            id="docs-example",
        ),
        pytest.param('{"f":{}}', {"f": DEFAULT_FALLBACK}, id="empty-entry-is-default"),
        pytest.param('{"f":{"hasAccess":false}}', {"f": FallbackValues()}, id="has-access-false"),
        pytest.param(
            '{"f":{"hasAccess":true,"value":5}}',
            {"f": FallbackValues(has_access=True, value=5)},
            id="numeric",
        ),
        pytest.param(
            '{"f":{"hasAccess":true,"value":5,"isUnlimited":false}}',
            {"f": FallbackValues(has_access=True, value=5, is_unlimited=False)},
            id="numeric-with-unlimited-flag",
        ),
        pytest.param(
            '{"f":{"hasAccess":true,"usageLimit":2.5}}',
            {"f": FallbackValues(has_access=True, usage_limit=2.5)},
            id="metered-float-limit",
        ),
        pytest.param(
            '{"f":{"usageLimit":-1}}',
            {"f": FallbackValues(usage_limit=-1.0)},
            id="metered-negative-limit",
        ),
        pytest.param(
            '{"f":{"hasAccess":true,"enumValues":["a","b"]}}',
            {"f": FallbackValues(has_access=True, enum_values=("a", "b"))},
            id="enum",
        ),
        pytest.param('{"f":{"enumValues":[]}}', {"f": FallbackValues()}, id="enum-empty"),
        pytest.param(
            '{"f":{"value":null,"isUnlimited":null,"usageLimit":null}}',
            {"f": FallbackValues()},
            id="nulls-are-absent",
        ),
        pytest.param(
            f'{{"f":{{"value":{INT32_MIN}}},"g":{{"value":{INT32_MAX}}}}}',
            {"f": FallbackValues(value=INT32_MIN), "g": FallbackValues(value=INT32_MAX)},
            id="int32-bounds",
        ),
        pytest.param(
            '{"f":{"hasAccess":true,"value":1,"isUnlimited":true,"usageLimit":3,'
            '"enumValues":["x"]}}',
            {
                "f": FallbackValues(
                    has_access=True, value=1, is_unlimited=True, usage_limit=3.0, enum_values=("x",)
                )
            },
            id="all-keys",
        ),
        pytest.param(
            '{"f":{"value":1},"f":{"value":2}}',
            {"f": FallbackValues(value=2)},
            id="duplicate-key-last-wins",
        ),
        pytest.param(
            '{"":{"hasAccess":true}," spaced id ":{}}',
            {"": FallbackValues(has_access=True), " spaced id ": FallbackValues()},
            id="odd-ids-kept-verbatim",
        ),
        pytest.param('  {"f":{}}  ', {"f": FallbackValues()}, id="surrounding-space"),
    ],
)
def test_parse(text: str, expected: dict[str, FallbackValues]) -> None:
    assert parse_fallback_map(text) == expected


def test_usage_limit_is_stored_as_float() -> None:
    parsed = parse_fallback_map('{"f":{"usageLimit":1000}}')
    assert isinstance(parsed["f"].usage_limit, float)


# --------------------------------------------------------------------------- invalid input

P = "ENTITLEMENTS_FALLBACK['f']"


@pytest.mark.parametrize(
    ("text", "path", "problem"),
    [
        pytest.param("{", "ENTITLEMENTS_FALLBACK", "not valid JSON", id="truncated-json"),
        pytest.param("nope", "ENTITLEMENTS_FALLBACK", "not valid JSON", id="not-json"),
        pytest.param("{'f': {}}", "ENTITLEMENTS_FALLBACK", "not valid JSON", id="single-quotes"),
        pytest.param("[]", "ENTITLEMENTS_FALLBACK", "expected a JSON object", id="array"),
        pytest.param('"x"', "ENTITLEMENTS_FALLBACK", "expected a JSON object", id="string"),
        pytest.param("1", "ENTITLEMENTS_FALLBACK", "expected a JSON object", id="number"),
        pytest.param("null", "ENTITLEMENTS_FALLBACK", "expected a JSON object", id="null"),
        pytest.param('{"f":true}', P, "expected an object", id="entry-bool"),
        pytest.param('{"f":[]}', P, "expected an object", id="entry-array"),
        pytest.param('{"f":null}', P, "expected an object", id="entry-null"),
        pytest.param('{"f":"x"}', P, "expected an object", id="entry-string"),
        pytest.param('{"f":{"hasacces":true}}', P, "unknown keys ['hasacces']", id="unknown-key"),
        pytest.param(
            '{"f":{"usage_limit":1,"enum":[]}}',
            P,
            "unknown keys ['enum', 'usage_limit']",
            id="unknown-keys-sorted",
        ),
        pytest.param('{"f":{"hasAccess":"true"}}', f"{P}.hasAccess", "boolean", id="access-str"),
        pytest.param('{"f":{"hasAccess":1}}', f"{P}.hasAccess", "boolean", id="access-int"),
        pytest.param('{"f":{"hasAccess":null}}', f"{P}.hasAccess", "boolean", id="access-null"),
        pytest.param('{"f":{"value":1.5}}', f"{P}.value", "32-bit integer", id="value-float"),
        pytest.param('{"f":{"value":1.0}}', f"{P}.value", "32-bit integer", id="value-float-int"),
        pytest.param('{"f":{"value":"5"}}', f"{P}.value", "32-bit integer", id="value-string"),
        pytest.param('{"f":{"value":true}}', f"{P}.value", "32-bit integer", id="value-bool"),
        pytest.param(
            f'{{"f":{{"value":{INT32_MAX + 1}}}}}', f"{P}.value", "32-bit integer", id="value-big"
        ),
        pytest.param(
            f'{{"f":{{"value":{INT32_MIN - 1}}}}}', f"{P}.value", "32-bit integer", id="value-small"
        ),
        pytest.param('{"f":{"isUnlimited":"yes"}}', f"{P}.isUnlimited", "boolean", id="unl-str"),
        pytest.param('{"f":{"isUnlimited":0}}', f"{P}.isUnlimited", "boolean", id="unl-int"),
        pytest.param('{"f":{"usageLimit":"NaN"}}', f"{P}.usageLimit", "finite", id="limit-nan-str"),
        pytest.param('{"f":{"usageLimit":NaN}}', f"{P}.usageLimit", "finite", id="limit-nan"),
        pytest.param('{"f":{"usageLimit":Infinity}}', f"{P}.usageLimit", "finite", id="limit-inf"),
        pytest.param('{"f":{"usageLimit":-Infinity}}', f"{P}.usageLimit", "finite", id="lim-ninf"),
        pytest.param('{"f":{"usageLimit":1e999}}', f"{P}.usageLimit", "finite", id="limit-1e999"),
        pytest.param('{"f":{"usageLimit":true}}', f"{P}.usageLimit", "finite", id="limit-bool"),
        pytest.param('{"f":{"usageLimit":"10"}}', f"{P}.usageLimit", "finite", id="limit-str"),
        pytest.param('{"f":{"usageLimit":[1]}}', f"{P}.usageLimit", "finite", id="limit-list"),
        pytest.param('{"f":{"enumValues":"a"}}', f"{P}.enumValues", "strings", id="enum-string"),
        pytest.param('{"f":{"enumValues":[1]}}', f"{P}.enumValues", "strings", id="enum-int"),
        pytest.param('{"f":{"enumValues":["a",null]}}', f"{P}.enumValues", "strings", id="en-null"),
        pytest.param('{"f":{"enumValues":null}}', f"{P}.enumValues", "strings", id="enum-null"),
        pytest.param('{"f":{"enumValues":{"a":1}}}', f"{P}.enumValues", "strings", id="enum-obj"),
    ],
)
def test_invalid_input_names_the_path(text: str, path: str, problem: str) -> None:
    with pytest.raises(FallbackError) as info:
        parse_fallback_map(text)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert problem in message


def test_error_names_the_failing_feature_among_several() -> None:
    with pytest.raises(FallbackError, match=r"^ENTITLEMENTS_FALLBACK\['bad'\]\.value:"):
        parse_fallback_map('{"ok":{"hasAccess":true},"bad":{"value":"x"}}')


def test_error_quotes_feature_ids_unambiguously() -> None:
    with pytest.raises(FallbackError) as info:
        parse_fallback_map('{"a\'b":{"value":"x"}}')
    assert str(info.value).startswith('ENTITLEMENTS_FALLBACK["a\'b"].value:')


def test_fallback_error_is_a_value_error() -> None:
    assert issubclass(FallbackError, ValueError)


def test_huge_integer_usage_limit_is_a_fallback_error() -> None:
    with pytest.raises(FallbackError, match=r"usageLimit"):
        parse_fallback_map(json.dumps({"f": {"usageLimit": 10**400}}))


def test_deeply_nested_json_is_a_fallback_error() -> None:
    with pytest.raises(FallbackError, match=r"^ENTITLEMENTS_FALLBACK"):
        parse_fallback_map('{"f":' * 100_000)


# --------------------------------------------------------------------------- shape


@pytest.mark.parametrize(
    ("values", "shape"),
    [
        pytest.param(FallbackValues(), FallbackShape.BOOLEAN, id="empty"),
        pytest.param(FallbackValues(has_access=True), FallbackShape.BOOLEAN, id="access-only"),
        pytest.param(FallbackValues(value=0), FallbackShape.NUMERIC, id="value-zero"),
        pytest.param(FallbackValues(usage_limit=0.0), FallbackShape.METERED, id="limit-zero"),
        pytest.param(FallbackValues(is_unlimited=False), FallbackShape.METERED, id="unl-false"),
        pytest.param(FallbackValues(is_unlimited=True), FallbackShape.METERED, id="unl-true"),
        pytest.param(FallbackValues(enum_values=("a",)), FallbackShape.ENUM, id="enum"),
        pytest.param(FallbackValues(enum_values=()), FallbackShape.BOOLEAN, id="enum-empty"),
        pytest.param(
            FallbackValues(value=1, usage_limit=1.0), FallbackShape.METERED, id="limit-over-value"
        ),
        pytest.param(
            FallbackValues(value=1, is_unlimited=True), FallbackShape.NUMERIC, id="value-over-unl"
        ),
        pytest.param(
            FallbackValues(value=1, usage_limit=1.0, enum_values=("a",)),
            FallbackShape.ENUM,
            id="enum-over-all",
        ),
    ],
)
def test_shape(values: FallbackValues, shape: FallbackShape) -> None:
    assert values.shape is shape


def test_default_fallback_denies() -> None:
    assert FallbackValues(False, None, None, None, ()) == DEFAULT_FALLBACK
    assert DEFAULT_FALLBACK.shape is FallbackShape.BOOLEAN


# --------------------------------------------------------------------------- properties

entries = st.fixed_dictionaries(
    {},
    optional={
        "hasAccess": st.booleans(),
        "value": st.integers(INT32_MIN, INT32_MAX),
        "isUnlimited": st.booleans(),
        "usageLimit": st.one_of(
            st.integers(-(10**15), 10**15),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        "enumValues": st.lists(st.text(max_size=5), max_size=4),
    },
)


@PROPERTY
@given(raw=st.dictionaries(st.text(max_size=8), entries, max_size=5))
def test_valid_maps_parse_to_their_values(raw: dict[str, dict[str, Any]]) -> None:
    parsed = parse_fallback_map(json.dumps(raw))
    assert set(parsed) == set(raw)
    for fid, entry in raw.items():
        got = parsed[fid]
        assert got.has_access is entry.get("hasAccess", False)
        assert got.value == entry.get("value")
        assert got.is_unlimited == entry.get("isUnlimited")
        limit = entry.get("usageLimit")
        assert got.usage_limit == (None if limit is None else float(limit))
        assert got.enum_values == tuple(entry.get("enumValues", []))


@PROPERTY
@given(
    key=st.text(min_size=1, max_size=12).filter(
        lambda k: k not in {"hasAccess", "value", "isUnlimited", "usageLimit", "enumValues"}
    ),
    value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=3)),
)
def test_any_unknown_key_is_rejected(key: str, value: object) -> None:
    with pytest.raises(FallbackError, match=r"^ENTITLEMENTS_FALLBACK\['f'\]: unknown keys"):
        parse_fallback_map(json.dumps({"f": {"hasAccess": True, key: value}}))
