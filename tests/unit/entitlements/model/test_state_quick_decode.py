"""The quick decoders of entitlements.model.state agree with the checked ones.

The public decoders try a quick path first and fall back to the checked decoder on anything
the quick path refuses. Two properties keep that honest:

* every valid payload the encoder produces takes the quick path (otherwise the speed silently
  goes) and decodes to the same value as the checked decoder;
* for any payload, valid or damaged, whatever the quick path accepts the checked decoder
  accepts too, with an equal value: the quick path never lets through what the checked one
  would refuse, nor reads a field differently.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from entitlements.model import state as model
from entitlements.model.state import (
    CustomerSnapshot,
    StateDecodeError,
    decode_snapshot_dict,
    encode_snapshot_dict,
    encode_usage_record,
)
from tests.unit.entitlements.model.state_strategies import (
    json_values,
    ms_datetimes,
    snapshots,
    usage_records,
)

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)

# Values a damaged payload may carry in place of any field: every JSON type, values that are
# equal to valid ones but of another type (True == 1, 1.0 == 1), out-of-range numbers and
# timestamps, non-finite floats (json.loads accepts NaN), empty and unknown strings.
odd_values = st.one_of(
    json_values,
    st.sampled_from(
        [
            None,
            True,
            False,
            1,
            1.0,
            0,
            -1,
            "",
            "NUMBER",
            "BOOLEAN",
            "MONTH",
            "REVOKED",
            "nope",
            2**63,
            -(2**63),
            2**63 - 1,
            10**20,
            math.nan,
            math.inf,
            -math.inf,
            [],
            {},
            ["a", 1],
        ]
    ),
)

FEATURE_KEYS = [
    "feature",
    "usageLimit",
    "hasUnlimitedUsage",
    "hasSoftLimit",
    "accessDeniedReason",
    "enumValues",
    "resetPeriod",
    "usagePeriodAnchor",
    "creditRate",
    "validUntil",
]
FEATURE_INNER_KEYS = ["id", "featureType", "meterType", "units", "unitsPlural", "displayName"]
CREDIT_KEYS = ["currency", "granted", "hasSoftLimit", "accessDeniedReason", "validUntil"]
CURRENCY_KEYS = [
    "currencyId",
    "displayName",
    "description",
    "unitSingular",
    "unitPlural",
    "metadata",
]
STATE_KEYS = [
    "schemaVersion",
    "customerId",
    "resourceId",
    "accessDeniedReason",
    "features",
    "credits",
    "version",
    "updatedAt",
    "featureUsage",
    "creditUsage",
]
USAGE_KEYS = [
    "schemaVersion",
    "currentUsage",
    "usagePeriodStart",
    "usagePeriodEnd",
    "updatedAt",
    "version",
]


def _objects(value: object) -> list[dict[str, Any]]:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [item for item in items if isinstance(item, dict)]


def _targets(body: dict[str, Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """Every object still in a (possibly already damaged) encoded snapshot, with the keys its
    decoder reads."""
    found: list[tuple[dict[str, Any], list[str]]] = [(body, STATE_KEYS)]
    for feature in _objects(body.get("features")):
        found.append((feature, FEATURE_KEYS))
        for key, keys in (
            ("feature", FEATURE_INNER_KEYS),
            ("creditRate", ["amount", "currencyId"]),
        ):
            if isinstance(feature.get(key), dict):
                found.append((feature[key], keys))
    for credit in _objects(body.get("credits")):
        found.append((credit, CREDIT_KEYS))
        if isinstance(credit.get("currency"), dict):
            found.append((credit["currency"], CURRENCY_KEYS))
    for name in ("featureUsage", "creditUsage"):
        found += [(record, USAGE_KEYS) for record in _objects(body.get(name))]
    return found


def _outcome(decode: Any, body: Any) -> tuple[str, Any]:
    try:
        return ("value", decode(body))
    except StateDecodeError as exc:
        return ("error", str(exc))


@PROPERTY
@given(snapshot=snapshots(ms_datetimes))
def test_every_encoded_snapshot_takes_the_quick_path(snapshot: CustomerSnapshot) -> None:
    body = encode_snapshot_dict(snapshot)
    assert model._quick_snapshot(body) == snapshot
    assert model._quick_state(body) == snapshot.state
    assert model._checked_snapshot_dict(body, "$") == snapshot


@PROPERTY
@given(record=usage_records(ms_datetimes))
def test_every_encoded_usage_record_takes_the_quick_path(record: Any) -> None:
    assert model._quick_usage(encode_usage_record(record)) == record


@PROPERTY
@given(snapshot=snapshots(ms_datetimes), data=st.data())
def test_a_damaged_payload_decodes_as_the_checked_decoder_says(
    snapshot: CustomerSnapshot, data: st.DataObject
) -> None:
    body = encode_snapshot_dict(snapshot)
    for _ in range(data.draw(st.integers(1, 3), label="damages")):
        target, keys = data.draw(st.sampled_from(_targets(body)), label="object")
        key = data.draw(st.sampled_from(keys), label="key")
        if data.draw(st.booleans(), label="delete"):
            target.pop(key, None)
        else:
            target[key] = data.draw(odd_values, label="value")
    checked = _outcome(lambda b: model._checked_snapshot_dict(b, "$"), copy.deepcopy(body))
    try:
        quick = model._quick_snapshot(copy.deepcopy(body))
    except Exception:
        quick = None
    if quick is not None:
        assert checked == ("value", quick)
    # The public decoder answers exactly what the checked one does, whichever path it took.
    assert _outcome(decode_snapshot_dict, body) == checked


@pytest.mark.parametrize(
    ("damage", "path"),
    [
        pytest.param(
            lambda b: b["features"][0]["feature"].update(id=""), "$.features[0].feature.id"
        ),
        pytest.param(
            lambda b: b["features"][0].update(usageLimit=True), "$.features[0].usageLimit"
        ),
        pytest.param(lambda b: b.update(schemaVersion=True), "$.schemaVersion"),
        pytest.param(lambda b: b.update(version=1.0), "$.version"),
        pytest.param(
            lambda b: b["features"][0].update(validUntil=10**20), "$.features[0].validUntil"
        ),
        pytest.param(
            lambda b: b["featureUsage"]["f"].update(currentUsage=math.nan),
            "$.featureUsage.f.currentUsage",
        ),
    ],
)
def test_a_value_equal_to_a_valid_one_but_of_another_type_is_still_refused(
    damage: Any, path: str
) -> None:
    snapshot = CustomerSnapshot(
        model.EntitlementState(
            "c",
            features={
                "f": model.FeatureEntitlement(
                    model.Feature("f", model.FeatureType.NUMBER, model.MeterType.INCREMENTAL)
                )
            },
        ),
        {"f": model.UsageRecord(1.0)},
    )
    body = encode_snapshot_dict(snapshot)
    damage(body)
    with pytest.raises(StateDecodeError) as raised:
        decode_snapshot_dict(body)
    assert raised.value.path == path


def _metered_body(customer: str, limit: float) -> dict[str, Any]:
    feature = model.FeatureEntitlement(
        model.Feature("calls", model.FeatureType.NUMBER, model.MeterType.INCREMENTAL),
        usage_limit=limit,
        reset_period=model.ResetPeriod.MONTH,
    )
    return model.encode_state_dict(model.EntitlementState(customer, features={"calls": feature}))


def test_customers_on_one_plan_share_their_decoded_entitlements() -> None:
    first = decode_snapshot_dict(_metered_body("a", 100.0))
    second = decode_snapshot_dict(_metered_body("b", 100.0))
    other = decode_snapshot_dict(_metered_body("c", 200.0))
    assert first.state.features["calls"] is second.state.features["calls"]
    assert other.state.features["calls"] is not first.state.features["calls"]
    assert other.state.features["calls"].usage_limit == 200.0


def test_zero_and_negative_zero_limits_are_not_confused() -> None:
    # Equal as dict keys, different numbers: the second must not be handed the first's object.
    positive = decode_snapshot_dict(_metered_body("a", 0.0)).state.features["calls"]
    negative = decode_snapshot_dict(_metered_body("b", -0.0)).state.features["calls"]
    assert positive.usage_limit is not None and negative.usage_limit is not None
    assert math.copysign(1.0, positive.usage_limit) == 1.0
    assert math.copysign(1.0, negative.usage_limit) == -1.0


def test_a_value_of_another_type_never_matches_a_shared_entitlement() -> None:
    # 1 == 1.0 == True as dict keys: a shared entitlement with limit 1.0 must not let a
    # payload whose limit is true through.
    decode_snapshot_dict(_metered_body("a", 1.0))
    body = _metered_body("b", 1.0)
    body["features"][0]["usageLimit"] = True
    with pytest.raises(StateDecodeError):
        decode_snapshot_dict(body)


def test_the_shared_entitlements_stay_bounded() -> None:
    for index in range(model.SHARED_ENTITLEMENTS_MAX + 10):
        decode_snapshot_dict(_metered_body("a", float(index + 1)))
    assert 0 < len(model._SHARED) <= model.SHARED_ENTITLEMENTS_MAX


def _with_credit_rate(body: dict[str, Any], amount: object) -> dict[str, Any]:
    body["features"][0]["creditRate"] = {"amount": amount, "currencyId": "tokens"}
    return body


# Each pair: a valid entitlement, decoded first (and so shared), then JSON that equals it as a
# dict key would compare it, but is invalid. The second must still be refused.
@pytest.mark.parametrize(
    ("field", "valid", "invalid"),
    [
        ("usageLimit", 1.0, True),
        ("usageLimit", 0.0, False),
        ("hasUnlimitedUsage", True, 1),
        ("hasSoftLimit", False, 0),
        ("hasSoftLimit", True, 1.0),
        ("usagePeriodAnchor", 1, True),
        ("usagePeriodAnchor", 1, 1.0),
        ("validUntil", 0, False),
        ("enumValues", ["a", "b"], "ab"),
        ("enumValues", ["a"], {"a": 1}),
    ],
)
def test_json_equal_as_a_key_but_invalid_is_refused(
    field: str, valid: object, invalid: object
) -> None:
    good = _metered_body("a", 5.0)
    good["features"][0][field] = valid
    decode_snapshot_dict(good)
    bad = _metered_body("b", 5.0)
    bad["features"][0][field] = invalid
    with pytest.raises(StateDecodeError) as raised:
        decode_snapshot_dict(bad)
    assert raised.value.path == f"$.features[0].{field}"


def test_a_credit_rate_equal_as_a_key_but_invalid_is_refused() -> None:
    decode_snapshot_dict(_with_credit_rate(_metered_body("a", 5.0), 1.0))
    with pytest.raises(StateDecodeError) as raised:
        decode_snapshot_dict(_with_credit_rate(_metered_body("b", 5.0), True))
    assert raised.value.path == "$.features[0].creditRate.amount"


def test_instants_are_shared_and_bounded() -> None:
    first = model.decode_usage(b'{"schemaVersion":1,"usagePeriodStart":1700000000000}')
    second = model.decode_usage(b'{"schemaVersion":1,"usagePeriodStart":1700000000000}')
    assert first.period_start is second.period_start
    for ms in range(model.SHARED_INSTANTS_MAX + 10):
        model.decode_usage(f'{{"schemaVersion":1,"updatedAt":{ms}}}')
    assert 0 < len(model._INSTANTS) <= model.SHARED_INSTANTS_MAX
