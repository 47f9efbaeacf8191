"""Tests for entitlements.model.state: the canonical model and its JSON wire format.

Round-trip properties over random valid states, usage records and snapshots;
one table row per decode error path (the error must name the JSON path); and
the version-ordering helpers of CustomerSnapshot.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import example, given, settings

from entitlements.model.state import (
    CUSTOMER_LEVEL_REASONS,
    SCHEMA_VERSION,
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
    StateDecodeError,
    UsageRecord,
    decode_snapshot,
    decode_snapshot_dict,
    decode_state,
    decode_state_dict,
    decode_usage,
    decode_usage_dict,
    encode_snapshot,
    encode_snapshot_dict,
    encode_state,
    encode_state_dict,
    encode_usage,
    encode_usage_record,
)
from tests.unit.entitlements.model.state_strategies import (
    MS_MAX,
    MS_MIN,
    ms_datetimes,
    snapshots,
    states,
    usage_records,
)

PROPERTY = settings(max_examples=200, derandomize=True, database=None, deadline=None)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


# A millisecond instant that float-based encoding used to get wrong by 1 ms (regression).
MS_REGRESSION_INSTANT = utc(2004, 5, 31, 13, 17, 20, 909000)


# --------------------------------------------------------------------------- round trips


@PROPERTY
@given(state=states(ms_datetimes))
def test_state_round_trip(state: EntitlementState) -> None:
    assert decode_state(encode_state(state)) == state
    assert decode_state_dict(encode_state_dict(state)) == state
    assert decode_state(encode_state(state).decode()) == state


@PROPERTY
@given(record=usage_records(ms_datetimes))
def test_usage_record_round_trip(record: UsageRecord) -> None:
    assert decode_usage(encode_usage(record)) == record
    assert decode_usage_dict(encode_usage_record(record)) == record


@PROPERTY
@given(snapshot=snapshots(ms_datetimes))
def test_snapshot_round_trip(snapshot: CustomerSnapshot) -> None:
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot
    assert decode_snapshot_dict(encode_snapshot_dict(snapshot)) == snapshot
    # A snapshot payload is also a valid state payload (usage maps are ignored).
    assert decode_state(encode_snapshot(snapshot)) == snapshot.state


@PROPERTY
@given(ms=st.integers(MS_MIN, MS_MAX))
def test_epoch_milliseconds_decode_exactly(ms: int) -> None:
    payload = json.dumps({"schemaVersion": 1, "usagePeriodEnd": ms})
    assert decode_usage(payload).period_end == EPOCH + timedelta(milliseconds=ms)


@PROPERTY
@given(snapshot=snapshots(ms_datetimes))
@example(
    snapshot=CustomerSnapshot(
        EntitlementState("c", updated_at=MS_REGRESSION_INSTANT),
        {"f": UsageRecord(1.0, period_end=MS_REGRESSION_INSTANT)},
    )
)
def test_snapshot_round_trip_at_millisecond_precision(snapshot: CustomerSnapshot) -> None:
    assert decode_snapshot(encode_snapshot(snapshot)) == snapshot


@pytest.mark.parametrize(
    ("instant", "ms"),
    [
        pytest.param(MS_REGRESSION_INSTANT, 1_086_009_440_909, id="2004-05-31T13:17:20.909"),
        pytest.param(utc(1935, 6, 19, 8, 29, 45, 157000), -1_089_905_414_843, id="pre-epoch"),
    ],
)
def test_encoder_writes_exact_milliseconds(instant: datetime, ms: int) -> None:
    assert encode_usage_record(UsageRecord(period_end=instant))["usagePeriodEnd"] == ms


def test_far_future_milliseconds_decode_exactly() -> None:
    payload = json.dumps({"schemaVersion": 1, "usagePeriodEnd": 9_000_000_000_123})
    assert decode_usage(payload).period_end == EPOCH + timedelta(milliseconds=9_000_000_000_123)


# --------------------------------------------------------------------------- encoding


FULL_STATE = EntitlementState(
    customer_id="cust-1",
    resource_id="res-1",
    denial_reason=None,
    features={
        "calls": FeatureEntitlement(
            Feature("calls", FeatureType.NUMBER, MeterType.INCREMENTAL, "call", "calls", "Calls"),
            usage_limit=100.0,
            soft_limit=True,
            reset_period=ResetPeriod.MONTH,
            usage_period_anchor=utc(2024, 1, 1),
            credit_rate=CreditRate(2.5, "tokens"),
            valid_until=utc(2024, 7, 1),
        ),
        "tier": FeatureEntitlement(
            Feature("tier", FeatureType.ENUM),
            enum_values=("gold", "silver"),
            denial_reason=DenialReason.REVOKED,
        ),
    },
    credits={
        "tokens": CreditEntitlement(
            Currency("tokens", "Tokens", "AI tokens", "token", "tokens", {"k": [1, "v"]}),
            granted=500.0,
            soft_limit=False,
            valid_until=utc(2024, 8, 1),
        )
    },
    version=7,
    updated_at=utc(2024, 6, 1, 12, 0, 0),
)

FULL_SNAPSHOT = CustomerSnapshot(
    FULL_STATE,
    feature_usage={
        "calls": UsageRecord(12.5, utc(2024, 6, 1), utc(2024, 7, 1), utc(2024, 6, 2), 3)
    },
    credit_usage={"tokens": UsageRecord(40.0, None, utc(2024, 7, 1), None, 4)},
)


def test_state_encoding_layout() -> None:
    body = json.loads(encode_state(FULL_STATE))
    assert body == {
        "schemaVersion": SCHEMA_VERSION,
        "customerId": "cust-1",
        "resourceId": "res-1",
        "accessDeniedReason": None,
        "features": [
            {
                "feature": {
                    "id": "calls",
                    "featureType": "NUMBER",
                    "meterType": "INCREMENTAL",
                    "units": "call",
                    "unitsPlural": "calls",
                    "displayName": "Calls",
                },
                "usageLimit": 100.0,
                "hasUnlimitedUsage": False,
                "hasSoftLimit": True,
                "accessDeniedReason": None,
                "enumValues": [],
                "resetPeriod": "MONTH",
                "usagePeriodAnchor": 1_704_067_200_000,
                "creditRate": {"amount": 2.5, "currencyId": "tokens"},
                "validUntil": 1_719_792_000_000,
            },
            {
                "feature": {
                    "id": "tier",
                    "featureType": "ENUM",
                    "meterType": "NONE",
                    "units": None,
                    "unitsPlural": None,
                    "displayName": None,
                },
                "usageLimit": None,
                "hasUnlimitedUsage": False,
                "hasSoftLimit": False,
                "accessDeniedReason": "REVOKED",
                "enumValues": ["gold", "silver"],
                "resetPeriod": None,
                "usagePeriodAnchor": None,
                "creditRate": None,
                "validUntil": None,
            },
        ],
        "credits": [
            {
                "currency": {
                    "currencyId": "tokens",
                    "displayName": "Tokens",
                    "description": "AI tokens",
                    "unitSingular": "token",
                    "unitPlural": "tokens",
                    "metadata": {"k": [1, "v"]},
                },
                "granted": 500.0,
                "hasSoftLimit": False,
                "accessDeniedReason": None,
                "validUntil": 1_722_470_400_000,
            }
        ],
        "version": 7,
        "updatedAt": 1_717_243_200_000,
    }
    assert b" " not in encode_state(FULL_STATE).replace(b"AI tokens", b"")


def test_usage_and_snapshot_encoding_layout() -> None:
    body = json.loads(encode_snapshot(FULL_SNAPSHOT))
    assert body["featureUsage"] == {
        "calls": {
            "schemaVersion": SCHEMA_VERSION,
            "currentUsage": 12.5,
            "usagePeriodStart": 1_717_200_000_000,
            "usagePeriodEnd": 1_719_792_000_000,
            "updatedAt": 1_717_286_400_000,
            "version": 3,
        }
    }
    assert body["creditUsage"]["tokens"]["usagePeriodStart"] is None
    assert {k: v for k, v in body.items() if k not in {"featureUsage", "creditUsage"}} == (
        encode_state_dict(FULL_STATE)
    )
    assert decode_snapshot(encode_snapshot(FULL_SNAPSHOT)) == FULL_SNAPSHOT


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(
            EntitlementState(
                "c",
                features={
                    "f": FeatureEntitlement(Feature("f", FeatureType.NUMBER), usage_limit=math.nan)
                },
            ),
            id="nan-limit",
        ),
        pytest.param(
            EntitlementState(
                "c", credits={"x": CreditEntitlement(Currency("x", "X"), granted=math.inf)}
            ),
            id="inf-granted",
        ),
    ],
)
def test_encoder_refuses_non_finite_numbers(bad: EntitlementState) -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode_state(bad)


def test_customer_level_reasons() -> None:
    assert (
        frozenset(
            {
                DenialReason.CUSTOMER_NOT_FOUND,
                DenialReason.CUSTOMER_IS_ARCHIVED,
                DenialReason.NO_ACTIVE_SUBSCRIPTION,
            }
        )
        == CUSTOMER_LEVEL_REASONS
    )


# --------------------------------------------------------------------------- lenient decoding


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param({"schemaVersion": 1, "customerId": "c"}, EntitlementState("c"), id="minimal"),
        pytest.param(
            {"schemaVersion": 1, "customerId": "c", "resourceId": ""},
            EntitlementState("c"),
            id="empty-resource-is-none",
        ),
        pytest.param(
            {"schemaVersion": 1, "customerId": "c", "features": None, "credits": None},
            EntitlementState("c"),
            id="null-lists",
        ),
        pytest.param(
            {"schemaVersion": 1, "customerId": "c", "unknownKey": {"ignored": True}},
            EntitlementState("c"),
            id="unknown-keys-ignored",
        ),
        pytest.param(
            {
                "schemaVersion": 1,
                "customerId": "c",
                "features": [{"feature": {"id": "f", "featureType": "NUMBER"}, "usageLimit": 10}],
            },
            EntitlementState(
                "c", features={"f": FeatureEntitlement(Feature("f", FeatureType.NUMBER), 10.0)}
            ),
            id="minimal-feature-defaults",
        ),
        pytest.param(
            {
                "schemaVersion": 1,
                "customerId": "c",
                "credits": [{"currency": {"currencyId": "x"}, "granted": 5}],
            },
            EntitlementState("c", credits={"x": CreditEntitlement(Currency("x", ""), 5.0)}),
            id="minimal-credit-defaults",
        ),
        pytest.param(
            {
                "schemaVersion": 1,
                "customerId": "c",
                "features": [
                    {"feature": {"id": "f", "featureType": "BOOLEAN"}},
                    {"feature": {"id": "f", "featureType": "ENUM"}},
                ],
            },
            EntitlementState(
                "c", features={"f": FeatureEntitlement(Feature("f", FeatureType.ENUM))}
            ),
            id="duplicate-feature-last-wins",
        ),
    ],
)
def test_lenient_state_decoding(payload: dict[str, Any], expected: EntitlementState) -> None:
    assert decode_state(json.dumps(payload)) == expected


def test_usage_defaults() -> None:
    assert decode_usage(b'{"schemaVersion":1}') == UsageRecord()
    assert decode_usage(b'{"schemaVersion":1,"currentUsage":3}').current_usage == 3.0


# --------------------------------------------------------------------------- decode errors

DELETE = object()


def mutated(base: dict[str, Any], keys: tuple[str | int, ...], value: object) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    target: Any = doc
    for key in keys[:-1]:
        target = target[key]
    if value is DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return doc


STATE_DOC = encode_state_dict(FULL_STATE)
SNAPSHOT_DOC = encode_snapshot_dict(FULL_SNAPSHOT)
USAGE_DOC = encode_usage_record(FULL_SNAPSHOT.feature_usage["calls"])

F0 = ("features", 0)
C0 = ("credits", 0)
NAN, INF = math.nan, math.inf


def err(keys: tuple[str | int, ...], value: object, path: str, problem: str, name: str) -> Any:
    return pytest.param(keys, value, path, problem, id=name)


STATE_ERRORS = [
    err(("customerId",), DELETE, "$.customerId", "is required", "customer-missing"),
    err(("customerId",), None, "$.customerId", "is required", "customer-null"),
    err(("customerId",), "", "$.customerId", "must not be empty", "customer-empty"),
    err(("customerId",), 7, "$.customerId", "expected a string", "customer-int"),
    err(("resourceId",), ["r"], "$.resourceId", "expected a string", "resource-list"),
    err(("schemaVersion",), DELETE, "$.schemaVersion", "unsupported schema version -1", "sv-miss"),
    err(("schemaVersion",), 2, "$.schemaVersion", "unsupported schema version 2", "sv-2"),
    err(("schemaVersion",), 0, "$.schemaVersion", "unsupported schema version 0", "sv-0"),
    err(("schemaVersion",), "1", "$.schemaVersion", "expected an integer", "sv-string"),
    err(("schemaVersion",), True, "$.schemaVersion", "expected an integer", "sv-bool"),
    err(("schemaVersion",), 1.0, "$.schemaVersion", "expected an integer", "sv-float"),
    err(
        ("accessDeniedReason",),
        "CustomerNotFound",
        "$.accessDeniedReason",
        "unknown value 'CustomerNotFound'",
        "reason-graphql-form",
    ),
    err(("accessDeniedReason",), 3, "$.accessDeniedReason", "expected a string", "reason-int"),
    err(("version",), "7", "$.version", "expected an integer", "version-string"),
    err(("version",), 7.5, "$.version", "expected an integer", "version-float"),
    err(("version",), False, "$.version", "expected an integer", "version-bool"),
    err(("updatedAt",), "2024-06-01", "$.updatedAt", "expected epoch milliseconds", "upd-str"),
    err(("updatedAt",), 1.5, "$.updatedAt", "expected epoch milliseconds", "upd-float"),
    err(("updatedAt",), True, "$.updatedAt", "expected epoch milliseconds", "upd-bool"),
    err(("updatedAt",), 10**20, "$.updatedAt", "timestamp out of range", "upd-huge"),
    err(("updatedAt",), -(10**20), "$.updatedAt", "timestamp out of range", "upd-negative-huge"),
    err(("features",), {}, "$.features", "expected an array", "features-object"),
    err(("features",), "x", "$.features", "expected an array", "features-string"),
    err(F0, "x", "$.features[0]", "expected an object", "feature-string"),
    err(("features", 1), [], "$.features[1]", "expected an object", "second-feature-list"),
    err((*F0, "feature"), DELETE, "$.features[0].feature", "is required", "feature-missing"),
    err((*F0, "feature"), [], "$.features[0].feature", "expected an object", "feature-list"),
    err((*F0, "feature", "id"), DELETE, "$.features[0].feature.id", "is required", "fid-miss"),
    err((*F0, "feature", "id"), "", "$.features[0].feature.id", "must not be empty", "fid-empty"),
    err((*F0, "feature", "id"), 1, "$.features[0].feature.id", "expected a string", "fid-int"),
    err(
        (*F0, "feature", "featureType"),
        DELETE,
        "$.features[0].feature.featureType",
        "is required",
        "ftype-missing",
    ),
    err(
        (*F0, "feature", "featureType"),
        "Boolean",
        "$.features[0].feature.featureType",
        "unknown value 'Boolean'",
        "ftype-unknown",
    ),
    err(
        (*F0, "feature", "meterType"),
        "Metered",
        "$.features[0].feature.meterType",
        "unknown value 'Metered'",
        "meter-unknown",
    ),
    err((*F0, "feature", "units"), 5, "$.features[0].feature.units", "expected a string", "units"),
    err(
        (*F0, "feature", "unitsPlural"),
        True,
        "$.features[0].feature.unitsPlural",
        "expected a string",
        "units-plural",
    ),
    err(
        (*F0, "feature", "displayName"),
        {},
        "$.features[0].feature.displayName",
        "expected a string",
        "display-name",
    ),
    err((*F0, "usageLimit"), "10", "$.features[0].usageLimit", "expected a number", "limit-str"),
    err((*F0, "usageLimit"), True, "$.features[0].usageLimit", "expected a number", "limit-bool"),
    err((*F0, "usageLimit"), NAN, "$.features[0].usageLimit", "must be finite", "limit-nan"),
    err((*F0, "usageLimit"), INF, "$.features[0].usageLimit", "must be finite", "limit-inf"),
    err((*F0, "usageLimit"), -INF, "$.features[0].usageLimit", "must be finite", "limit-ninf"),
    err(
        (*F0, "hasUnlimitedUsage"),
        "true",
        "$.features[0].hasUnlimitedUsage",
        "expected a boolean",
        "unlimited-str",
    ),
    err((*F0, "hasSoftLimit"), 1, "$.features[0].hasSoftLimit", "expected a boolean", "soft-int"),
    err(
        (*F0, "accessDeniedReason"),
        "Revoked",
        "$.features[0].accessDeniedReason",
        "unknown value 'Revoked'",
        "feature-reason",
    ),
    err((*F0, "enumValues"), "a", "$.features[0].enumValues", "expected an array", "enum-str"),
    err(
        (*F0, "enumValues"),
        ["a", 1],
        "$.features[0].enumValues[1]",
        "expected a string",
        "enum-item",
    ),
    err(
        (*F0, "resetPeriod"),
        "MINUTE",
        "$.features[0].resetPeriod",
        "unknown value 'MINUTE'",
        "reset-unknown",
    ),
    err(
        (*F0, "usagePeriodAnchor"),
        "x",
        "$.features[0].usagePeriodAnchor",
        "expected epoch milliseconds",
        "anchor-str",
    ),
    err((*F0, "creditRate"), [], "$.features[0].creditRate", "expected an object", "rate-list"),
    err(
        (*F0, "creditRate", "amount"),
        DELETE,
        "$.features[0].creditRate.amount",
        "is required",
        "rate-amount-missing",
    ),
    err(
        (*F0, "creditRate", "amount"),
        INF,
        "$.features[0].creditRate.amount",
        "must be finite",
        "rate-amount-inf",
    ),
    err(
        (*F0, "creditRate", "currencyId"),
        "",
        "$.features[0].creditRate.currencyId",
        "must not be empty",
        "rate-currency-empty",
    ),
    err(
        (*F0, "creditRate", "currencyId"),
        DELETE,
        "$.features[0].creditRate.currencyId",
        "is required",
        "rate-currency-missing",
    ),
    err(
        (*F0, "validUntil"),
        1.5,
        "$.features[0].validUntil",
        "expected epoch milliseconds",
        "valid-until-float",
    ),
    err(("credits",), {}, "$.credits", "expected an array", "credits-object"),
    err(C0, 1, "$.credits[0]", "expected an object", "credit-int"),
    err((*C0, "currency"), DELETE, "$.credits[0].currency", "is required", "currency-missing"),
    err((*C0, "currency"), "x", "$.credits[0].currency", "expected an object", "currency-str"),
    err(
        (*C0, "currency", "currencyId"),
        DELETE,
        "$.credits[0].currency.currencyId",
        "is required",
        "currency-id-missing",
    ),
    err(
        (*C0, "currency", "currencyId"),
        "",
        "$.credits[0].currency.currencyId",
        "must not be empty",
        "currency-id-empty",
    ),
    err(
        (*C0, "currency", "displayName"),
        5,
        "$.credits[0].currency.displayName",
        "expected a string",
        "currency-name-int",
    ),
    err(
        (*C0, "currency", "description"),
        5,
        "$.credits[0].currency.description",
        "expected a string",
        "currency-description",
    ),
    err(
        (*C0, "currency", "unitSingular"),
        5,
        "$.credits[0].currency.unitSingular",
        "expected a string",
        "unit-singular",
    ),
    err(
        (*C0, "currency", "unitPlural"),
        5,
        "$.credits[0].currency.unitPlural",
        "expected a string",
        "unit-plural",
    ),
    err(
        (*C0, "currency", "metadata"),
        [],
        "$.credits[0].currency.metadata",
        "expected an object",
        "metadata-list",
    ),
    err((*C0, "granted"), DELETE, "$.credits[0].granted", "is required", "granted-missing"),
    err((*C0, "granted"), "5", "$.credits[0].granted", "expected a number", "granted-str"),
    err((*C0, "granted"), NAN, "$.credits[0].granted", "must be finite", "granted-nan"),
    err(
        (*C0, "hasSoftLimit"),
        "no",
        "$.credits[0].hasSoftLimit",
        "expected a boolean",
        "credit-soft-str",
    ),
    err(
        (*C0, "accessDeniedReason"),
        "x",
        "$.credits[0].accessDeniedReason",
        "unknown value 'x'",
        "credit-reason",
    ),
    err(
        (*C0, "validUntil"),
        "x",
        "$.credits[0].validUntil",
        "expected epoch milliseconds",
        "credit-valid-until",
    ),
]

SNAPSHOT_ERRORS = [
    err(("featureUsage",), [], "$.featureUsage", "expected an object", "feature-usage-list"),
    err(("creditUsage",), "x", "$.creditUsage", "expected an object", "credit-usage-string"),
    err(("featureUsage", "calls"), 3, "$.featureUsage.calls", "expected an object", "record-int"),
    err(
        ("featureUsage", "calls", "schemaVersion"),
        DELETE,
        "$.featureUsage.calls.schemaVersion",
        "unsupported schema version -1",
        "record-sv",
    ),
    err(
        ("featureUsage", "calls", "currentUsage"),
        "1",
        "$.featureUsage.calls.currentUsage",
        "expected a number",
        "record-usage-str",
    ),
    err(
        ("featureUsage", "calls", "currentUsage"),
        INF,
        "$.featureUsage.calls.currentUsage",
        "must be finite",
        "record-usage-inf",
    ),
    err(
        ("creditUsage", "tokens", "usagePeriodEnd"),
        "x",
        "$.creditUsage.tokens.usagePeriodEnd",
        "expected epoch milliseconds",
        "credit-record-end",
    ),
    err(
        ("creditUsage", "tokens", "version"),
        1.5,
        "$.creditUsage.tokens.version",
        "expected an integer",
        "credit-record-version",
    ),
    err(("customerId",), DELETE, "$.customerId", "is required", "state-part-still-checked"),
]

USAGE_ERRORS = [
    err(("schemaVersion",), DELETE, "$.schemaVersion", "unsupported schema version -1", "sv"),
    err(("schemaVersion",), 99, "$.schemaVersion", "unsupported schema version 99", "sv-99"),
    err(("currentUsage",), True, "$.currentUsage", "expected a number", "usage-bool"),
    err(("currentUsage",), NAN, "$.currentUsage", "must be finite", "usage-nan"),
    err(("usagePeriodStart",), "x", "$.usagePeriodStart", "expected epoch milliseconds", "start"),
    err(("usagePeriodEnd",), 2.5, "$.usagePeriodEnd", "expected epoch milliseconds", "end"),
    err(("updatedAt",), 10**20, "$.updatedAt", "timestamp out of range", "updated-huge"),
    err(("version",), "x", "$.version", "expected an integer", "version"),
]


def _expect_error(
    decode: Callable[[bytes], object], doc: dict[str, Any], path: str, problem: str
) -> None:
    # json.dumps writes NaN/Infinity, which Python's json.loads accepts: the
    # decoder itself must reject them.
    with pytest.raises(StateDecodeError) as info:
        decode(json.dumps(doc).encode())
    assert info.value.path == path
    assert problem in info.value.problem
    assert str(info.value).startswith(f"{path}: ")


@pytest.mark.parametrize(("keys", "value", "path", "problem"), STATE_ERRORS)
def test_state_decode_error_names_the_path(
    keys: tuple[str | int, ...], value: object, path: str, problem: str
) -> None:
    _expect_error(decode_state, mutated(STATE_DOC, keys, value), path, problem)


@pytest.mark.parametrize(("keys", "value", "path", "problem"), SNAPSHOT_ERRORS)
def test_snapshot_decode_error_names_the_path(
    keys: tuple[str | int, ...], value: object, path: str, problem: str
) -> None:
    _expect_error(decode_snapshot, mutated(SNAPSHOT_DOC, keys, value), path, problem)


@pytest.mark.parametrize(("keys", "value", "path", "problem"), USAGE_ERRORS)
def test_usage_decode_error_names_the_path(
    keys: tuple[str | int, ...], value: object, path: str, problem: str
) -> None:
    _expect_error(decode_usage, mutated(USAGE_DOC, keys, value), path, problem)


DECODERS = [
    pytest.param(decode_state, id="state"),
    pytest.param(decode_usage, id="usage"),
    pytest.param(decode_snapshot, id="snapshot"),
]


@pytest.mark.parametrize("decode", DECODERS)
@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        pytest.param(b"", "not valid JSON", id="empty"),
        pytest.param(b"{", "not valid JSON", id="truncated"),
        pytest.param(b"{'a': 1}", "not valid JSON", id="single-quotes"),
        pytest.param(b"\xff\xfe\x00", "not valid JSON", id="not-utf8"),
        pytest.param("nope", "not valid JSON", id="str-garbage"),
        pytest.param(b"[]", "expected an object", id="array"),
        pytest.param(b"null", "expected an object", id="null"),
        pytest.param(b"1", "expected an object", id="number"),
        pytest.param(b'"x"', "expected an object", id="string"),
    ],
)
def test_malformed_payload_is_reported_at_the_root(
    decode: Callable[[bytes | str], object], payload: bytes | str, problem: str
) -> None:
    with pytest.raises(StateDecodeError) as info:
        decode(payload)
    assert info.value.path == "$"
    assert problem in info.value.problem


@pytest.mark.parametrize(
    "custom_path", ["$", "$.cache['k']", "entry"], ids=["root", "nested", "bare"]
)
def test_dict_decoders_prefix_errors_with_the_given_path(custom_path: str) -> None:
    with pytest.raises(StateDecodeError) as info:
        decode_state_dict(mutated(STATE_DOC, (*F0, "usageLimit"), "x"), custom_path)
    assert info.value.path == f"{custom_path}.features[0].usageLimit"
    with pytest.raises(StateDecodeError) as info:
        decode_usage_dict({"schemaVersion": 1, "version": "x"}, custom_path)
    assert info.value.path == f"{custom_path}.version"


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(StateDecodeError, ValueError)


BIG_INT = int("1" + "0" * 400)


@pytest.mark.parametrize(
    ("decode", "doc", "path"),
    [
        pytest.param(
            decode_state,
            mutated(STATE_DOC, (*F0, "usageLimit"), BIG_INT),
            "$.features[0].usageLimit",
            id="state-usage-limit",
        ),
        pytest.param(
            decode_state,
            mutated(STATE_DOC, (*C0, "granted"), BIG_INT),
            "$.credits[0].granted",
            id="state-granted",
        ),
        pytest.param(
            decode_usage,
            mutated(USAGE_DOC, ("currentUsage",), BIG_INT),
            "$.currentUsage",
            id="usage-current",
        ),
    ],
)
def test_huge_integers_are_decode_errors(
    decode: Callable[[bytes], object], doc: dict[str, Any], path: str
) -> None:
    with pytest.raises(StateDecodeError) as info:
        decode(json.dumps(doc).encode())
    assert info.value.path == path


@pytest.mark.parametrize("decode", DECODERS)
def test_deeply_nested_payload_is_a_decode_error(decode: Callable[[bytes], object]) -> None:
    with pytest.raises(StateDecodeError):
        decode(b"[" * 100_000)


# --------------------------------------------------------------------------- version order


def rec(version: int, usage: float = 0.0) -> UsageRecord:
    return UsageRecord(current_usage=usage, version=version)


VERSION_CASES = [
    pytest.param(None, 0, True, id="nothing-stored"),
    pytest.param(1, 2, True, id="newer-applied"),
    pytest.param(2, 1, False, id="older-ignored"),
    pytest.param(2, 2, True, id="tie-applies-incoming"),
    pytest.param(-1, -5, False, id="negative-older-ignored"),
]

Setter = Callable[[CustomerSnapshot, str, UsageRecord], CustomerSnapshot]
Getter = Callable[[CustomerSnapshot], Any]

USAGE_SETTERS = [
    pytest.param(
        CustomerSnapshot.with_feature_usage,
        lambda s: s.feature_usage,
        lambda s: s.credit_usage,
        id="feature",
    ),
    pytest.param(
        CustomerSnapshot.with_credit_usage,
        lambda s: s.credit_usage,
        lambda s: s.feature_usage,
        id="credit",
    ),
]


@pytest.mark.parametrize(("setter", "own", "other"), USAGE_SETTERS)
@pytest.mark.parametrize(("stored", "incoming", "applied"), VERSION_CASES)
def test_usage_setters_keep_the_newer_version(
    setter: Setter,
    own: Getter,
    other: Getter,
    stored: int | None,
    incoming: int,
    applied: bool,
) -> None:
    base = CustomerSnapshot(EntitlementState("c"), {"keep": rec(9)}, {"keep": rec(9)})
    if stored is not None:
        base = setter(base, "k", rec(stored, usage=1.0))
    new = rec(incoming, usage=2.0)
    result = setter(base, "k", new)
    if applied:
        assert own(result)["k"] is new
        assert own(result)["keep"] == rec(9)
        assert other(result) == other(base)
    else:
        assert result is base
    assert own(base).get("k") is not new, "the original snapshot must not change"


@pytest.mark.parametrize(
    ("stored", "incoming", "applied"),
    [
        pytest.param(1, 2, True, id="newer-applied"),
        pytest.param(2, 1, False, id="older-ignored"),
        pytest.param(2, 2, True, id="tie-applies-incoming"),
    ],
)
def test_with_state_keeps_the_newer_version(stored: int, incoming: int, applied: bool) -> None:
    base = CustomerSnapshot(EntitlementState("c", version=stored), {"f": rec(1)}, {"x": rec(2)})
    new_state = EntitlementState("c", DenialReason.NO_ACTIVE_SUBSCRIPTION, version=incoming)
    result = base.with_state(new_state)
    if applied:
        assert result.state is new_state
        assert (result.feature_usage, result.credit_usage) == (
            base.feature_usage,
            base.credit_usage,
        )
    else:
        assert result is base
    assert base.state.version == stored


@PROPERTY
@given(
    versions=st.lists(st.integers(-1000, 1000), min_size=1, max_size=8, unique=True),
    order=st.randoms(use_true_random=False),
)
def test_delivery_order_is_irrelevant(versions: list[int], order: Any) -> None:
    shuffled = list(versions)
    order.shuffle(shuffled)
    snapshot = CustomerSnapshot(EntitlementState("c"))
    for v in shuffled:
        snapshot = snapshot.with_feature_usage("f", rec(v, usage=float(v)))
        snapshot = snapshot.with_credit_usage("x", rec(v, usage=float(v)))
        snapshot = snapshot.with_state(EntitlementState("c", version=v))
    newest = max(versions)
    assert snapshot.feature_usage["f"] == rec(newest, usage=float(newest))
    assert snapshot.credit_usage["x"] == rec(newest, usage=float(newest))
    assert snapshot.state.version == max(newest, 0)


def test_merged_keeps_the_newest_record_of_each_kind() -> None:
    old_usage = UsageRecord(current_usage=1.0, version=5)
    new_usage = UsageRecord(current_usage=9.0, version=8)
    held = CustomerSnapshot(
        EntitlementState("c", version=3), {"f": new_usage}, {"cur": UsageRecord(2.0, version=9)}
    )
    incoming = CustomerSnapshot(
        EntitlementState("c", version=4), {"f": old_usage, "g": old_usage}, {}
    )
    merged = held.merged(incoming)
    assert merged.state.version == 4
    assert merged.feature_usage == {"f": new_usage, "g": old_usage}
    assert merged.credit_usage == {"cur": UsageRecord(2.0, version=9)}
    # An older state never replaces a newer one, but its newer usage still counts.
    stale = CustomerSnapshot(EntitlementState("c", version=1), {"f": UsageRecord(3.0, version=10)})
    kept = merged.merged(stale)
    assert kept.state.version == 4
    assert kept.feature_usage["f"].current_usage == 3.0
    assert merged.merged(merged) is merged
