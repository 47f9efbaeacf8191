"""The canonical entitlement state of one (customer, optional resource).

Upstream computes it, the persistent cache stores it in Redis and the sidecar
evaluates it, so all three exchange exactly these types through
:func:`encode_state` / :func:`decode_state` (and the usage-record pair).

Entitlements and usage are separate records on purpose: usage changes on every
report while entitlements change on plan changes, so they are versioned and
shipped independently and a usage update never rewrites the entitlement set.

Every record carries a monotonic ``version`` assigned by upstream; a writer
keeps whichever copy has the higher version, which makes delivery order
irrelevant. See ``docs/state-model.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

SCHEMA_VERSION = 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Beyond this a number cannot be a real quantity, and float conversion would overflow.
_MAX_MAGNITUDE = 2.0**63

_E = TypeVar("_E", bound=StrEnum)


class FeatureType(StrEnum):
    BOOLEAN = "BOOLEAN"
    NUMBER = "NUMBER"
    ENUM = "ENUM"


class MeterType(StrEnum):
    NONE = "NONE"
    FLUCTUATING = "FLUCTUATING"
    INCREMENTAL = "INCREMENTAL"


class ResetPeriod(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"
    YEAR = "YEAR"


class DenialReason(StrEnum):
    """Why access was denied; member names match the gRPC enum's suffixes."""

    UNKNOWN = "UNKNOWN"
    CUSTOMER_IS_ARCHIVED = "CUSTOMER_IS_ARCHIVED"
    CUSTOMER_NOT_FOUND = "CUSTOMER_NOT_FOUND"
    CUSTOMER_RESOURCE_NOT_FOUND = "CUSTOMER_RESOURCE_NOT_FOUND"
    FEATURE_NOT_FOUND = "FEATURE_NOT_FOUND"
    NO_ACTIVE_SUBSCRIPTION = "NO_ACTIVE_SUBSCRIPTION"
    NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION = "NO_FEATURE_ENTITLEMENT_IN_SUBSCRIPTION"
    REQUESTED_USAGE_EXCEEDING_LIMIT = "REQUESTED_USAGE_EXCEEDING_LIMIT"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    REQUESTED_VALUES_MISMATCH = "REQUESTED_VALUES_MISMATCH"
    FEATURE_TYPE_MISMATCH = "FEATURE_TYPE_MISMATCH"
    INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"
    REVOKED = "REVOKED"
    ENTITLEMENT_NOT_FOUND = "ENTITLEMENT_NOT_FOUND"


#: Reasons that describe the customer rather than one feature.
CUSTOMER_LEVEL_REASONS = frozenset(
    {
        DenialReason.CUSTOMER_NOT_FOUND,
        DenialReason.CUSTOMER_IS_ARCHIVED,
        DenialReason.NO_ACTIVE_SUBSCRIPTION,
    }
)


@dataclass(frozen=True, slots=True)
class Feature:
    id: str
    feature_type: FeatureType
    meter_type: MeterType = MeterType.NONE
    units: str | None = None
    units_plural: str | None = None
    display_name: str | None = None

    @property
    def is_metered(self) -> bool:
        return self.feature_type is FeatureType.NUMBER and self.meter_type in (
            MeterType.FLUCTUATING,
            MeterType.INCREMENTAL,
        )


@dataclass(frozen=True, slots=True)
class CreditRate:
    """Credits of ``currency_id`` burnt per unit of a credit-backed feature."""

    amount: float
    currency_id: str


@dataclass(frozen=True, slots=True)
class FeatureEntitlement:
    feature: Feature
    usage_limit: float | None = None
    unlimited: bool = False
    soft_limit: bool = False
    # Set by upstream when it already knows the answer is "no" (budget, revoked...);
    # it beats every local rule, including unlimited and soft limits.
    denial_reason: DenialReason | None = None
    enum_values: tuple[str, ...] = ()
    reset_period: ResetPeriod | None = None
    usage_period_anchor: datetime | None = None
    credit_rate: CreditRate | None = None
    # The state must be refetched after this instant (trial end, grant expiry...).
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Currency:
    currency_id: str
    display_name: str
    description: str | None = None
    unit_singular: str | None = None
    unit_plural: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class CreditEntitlement:
    """A credit wallet; what was consumed lives in its usage record."""

    currency: Currency
    granted: float
    soft_limit: bool = False
    denial_reason: DenialReason | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """Usage of one feature, or consumption of one credit currency."""

    current_usage: float = 0.0
    period_start: datetime | None = None
    period_end: datetime | None = None
    updated_at: datetime | None = None
    version: int = 0


@dataclass(frozen=True, slots=True)
class EntitlementState:
    """The effective entitlement set of one (customer, resource)."""

    customer_id: str
    resource_id: str | None = None
    # Customer-level reason: not found, archived or without an active subscription.
    denial_reason: DenialReason | None = None
    features: Mapping[str, FeatureEntitlement] = field(default_factory=dict)
    credits: Mapping[str, CreditEntitlement] = field(default_factory=dict)
    version: int = 0
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class CustomerSnapshot:
    """What a cache holds for one key: the entitlement state plus its usage records."""

    state: EntitlementState
    feature_usage: Mapping[str, UsageRecord] = field(default_factory=dict)
    credit_usage: Mapping[str, UsageRecord] = field(default_factory=dict)

    def with_feature_usage(self, feature_id: str, record: UsageRecord) -> CustomerSnapshot:
        """A copy with ``record`` applied unless the stored one is newer."""
        current = self.feature_usage.get(feature_id)
        if current is not None and current.version > record.version:
            return self
        return replace(self, feature_usage={**self.feature_usage, feature_id: record})

    def with_credit_usage(self, currency_id: str, record: UsageRecord) -> CustomerSnapshot:
        current = self.credit_usage.get(currency_id)
        if current is not None and current.version > record.version:
            return self
        return replace(self, credit_usage={**self.credit_usage, currency_id: record})

    def with_state(self, state: EntitlementState) -> CustomerSnapshot:
        if state.version < self.state.version:
            return self
        return replace(self, state=state)

    def merged(self, other: CustomerSnapshot) -> CustomerSnapshot:
        """Combine two copies of the same key, keeping the newer version of every record.

        A full snapshot can arrive after a usage change it predates; merging
        record by record keeps that newer usage instead of rolling it back.
        """
        base = other if other.state.version >= self.state.version else self
        feature_usage = _newest(self.feature_usage, other.feature_usage)
        credit_usage = _newest(self.credit_usage, other.credit_usage)
        if base.feature_usage == feature_usage and base.credit_usage == credit_usage:
            return base
        return replace(base, feature_usage=feature_usage, credit_usage=credit_usage)


def _newest(
    first: Mapping[str, UsageRecord], second: Mapping[str, UsageRecord]
) -> dict[str, UsageRecord]:
    merged = dict(first)
    for key, record in second.items():
        held = merged.get(key)
        if held is None or record.version >= held.version:
            merged[key] = record
    return merged


# --------------------------------------------------------------------------- wire format


class StateDecodeError(ValueError):
    """A payload does not match the schema; the message names the offending path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def epoch_ms(value: datetime | None) -> int | None:
    if value is None:
        return None
    # Integer arithmetic: going through float seconds loses a millisecond now and then.
    return (value - _EPOCH) // _MS


def encode_feature(ent: FeatureEntitlement) -> dict[str, Any]:
    f = ent.feature
    return {
        "feature": {
            "id": f.id,
            "featureType": f.feature_type.value,
            "meterType": f.meter_type.value,
            "units": f.units,
            "unitsPlural": f.units_plural,
            "displayName": f.display_name,
        },
        "usageLimit": ent.usage_limit,
        "hasUnlimitedUsage": ent.unlimited,
        "hasSoftLimit": ent.soft_limit,
        "accessDeniedReason": ent.denial_reason.value if ent.denial_reason else None,
        "enumValues": list(ent.enum_values),
        "resetPeriod": ent.reset_period.value if ent.reset_period else None,
        "usagePeriodAnchor": epoch_ms(ent.usage_period_anchor),
        "creditRate": (
            {"amount": ent.credit_rate.amount, "currencyId": ent.credit_rate.currency_id}
            if ent.credit_rate
            else None
        ),
        "validUntil": epoch_ms(ent.valid_until),
    }


def encode_credit(ent: CreditEntitlement) -> dict[str, Any]:
    c = ent.currency
    return {
        "currency": {
            "currencyId": c.currency_id,
            "displayName": c.display_name,
            "description": c.description,
            "unitSingular": c.unit_singular,
            "unitPlural": c.unit_plural,
            "metadata": dict(c.metadata) if c.metadata is not None else None,
        },
        "granted": ent.granted,
        "hasSoftLimit": ent.soft_limit,
        "accessDeniedReason": ent.denial_reason.value if ent.denial_reason else None,
        "validUntil": epoch_ms(ent.valid_until),
    }


def encode_usage_record(record: UsageRecord) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "currentUsage": record.current_usage,
        "usagePeriodStart": epoch_ms(record.period_start),
        "usagePeriodEnd": epoch_ms(record.period_end),
        "updatedAt": epoch_ms(record.updated_at),
        "version": record.version,
    }


def encode_state_dict(state: EntitlementState) -> dict[str, Any]:
    return {
        "schemaVersion": SCHEMA_VERSION,
        "customerId": state.customer_id,
        "resourceId": state.resource_id,
        "accessDeniedReason": state.denial_reason.value if state.denial_reason else None,
        "features": [encode_feature(e) for e in state.features.values()],
        "credits": [encode_credit(e) for e in state.credits.values()],
        "version": state.version,
        "updatedAt": epoch_ms(state.updated_at),
    }


def encode_snapshot_dict(snapshot: CustomerSnapshot) -> dict[str, Any]:
    body = encode_state_dict(snapshot.state)
    body["featureUsage"] = {k: encode_usage_record(v) for k, v in snapshot.feature_usage.items()}
    body["creditUsage"] = {k: encode_usage_record(v) for k, v in snapshot.credit_usage.items()}
    return body


def _dumps(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def encode_state(state: EntitlementState) -> bytes:
    return _dumps(encode_state_dict(state))


def encode_usage(record: UsageRecord) -> bytes:
    return _dumps(encode_usage_record(record))


def encode_snapshot(snapshot: CustomerSnapshot) -> bytes:
    return _dumps(encode_snapshot_dict(snapshot))


class JsonReader:
    """Typed access to a JSON object that reports errors by path."""

    __slots__ = ("data", "path")

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, dict):
            raise StateDecodeError(path, "expected an object")
        self.data: dict[str, Any] = data
        self.path = path

    def raw(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise StateDecodeError(f"{self.path}.{key}", "is required")
            return None
        return self.data[key]

    def str_(self, key: str, *, required: bool = False) -> str | None:
        value = self.raw(key, required)
        if value is not None and not isinstance(value, str):
            raise StateDecodeError(f"{self.path}.{key}", "expected a string")
        return value

    def req_str(self, key: str) -> str:
        value = self.str_(key, required=True)
        assert value is not None
        if not value:
            raise StateDecodeError(f"{self.path}.{key}", "must not be empty")
        return value

    def num(self, key: str, *, required: bool = False) -> float | None:
        value = self.raw(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise StateDecodeError(f"{self.path}.{key}", "expected a number")
        if isinstance(value, int):
            if abs(value) >= _MAX_MAGNITUDE:
                raise StateDecodeError(f"{self.path}.{key}", "out of range")
        elif not math.isfinite(value):
            raise StateDecodeError(f"{self.path}.{key}", "must be finite")
        return float(value)

    def int_(self, key: str, default: int = 0) -> int:
        value = self.raw(key, False)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise StateDecodeError(f"{self.path}.{key}", "expected an integer")
        return value

    def bool_(self, key: str) -> bool:
        value = self.raw(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise StateDecodeError(f"{self.path}.{key}", "expected a boolean")
        return value

    def time(self, key: str) -> datetime | None:
        value = self.raw(key, False)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise StateDecodeError(f"{self.path}.{key}", "expected epoch milliseconds")
        try:
            return _EPOCH + timedelta(milliseconds=value)
        except (OverflowError, OSError, ValueError) as exc:
            raise StateDecodeError(f"{self.path}.{key}", "timestamp out of range") from exc

    def enum(self, key: str, kind: type[_E], *, required: bool = False) -> _E | None:
        value = self.str_(key, required=required)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError as exc:
            raise StateDecodeError(f"{self.path}.{key}", f"unknown value {value!r}") from exc

    def child(self, key: str, *, required: bool = False) -> JsonReader | None:
        value = self.raw(key, required)
        return None if value is None else JsonReader(value, f"{self.path}.{key}")

    def items(self, key: str) -> list[object]:
        value = self.raw(key, False)
        if value is None:
            return []
        if not isinstance(value, list):
            raise StateDecodeError(f"{self.path}.{key}", "expected an array")
        return value


def _check_schema(reader: JsonReader) -> None:
    version = reader.int_("schemaVersion", default=-1)
    if version != SCHEMA_VERSION:
        raise StateDecodeError(
            f"{reader.path}.schemaVersion", f"unsupported schema version {version}"
        )


def decode_feature(reader: JsonReader) -> FeatureEntitlement:
    f = reader.child("feature", required=True)
    assert f is not None
    feature_type = f.enum("featureType", FeatureType, required=True)
    assert feature_type is not None
    rate = reader.child("creditRate")
    credit_rate = None
    if rate is not None:
        amount = rate.num("amount", required=True)
        assert amount is not None
        credit_rate = CreditRate(amount=amount, currency_id=rate.req_str("currencyId"))
    enum_values = []
    for i, item in enumerate(reader.items("enumValues")):
        if not isinstance(item, str):
            raise StateDecodeError(f"{reader.path}.enumValues[{i}]", "expected a string")
        enum_values.append(item)
    return FeatureEntitlement(
        feature=Feature(
            id=f.req_str("id"),
            feature_type=feature_type,
            meter_type=f.enum("meterType", MeterType) or MeterType.NONE,
            units=f.str_("units"),
            units_plural=f.str_("unitsPlural"),
            display_name=f.str_("displayName"),
        ),
        usage_limit=reader.num("usageLimit"),
        unlimited=reader.bool_("hasUnlimitedUsage"),
        soft_limit=reader.bool_("hasSoftLimit"),
        denial_reason=reader.enum("accessDeniedReason", DenialReason),
        enum_values=tuple(enum_values),
        reset_period=reader.enum("resetPeriod", ResetPeriod),
        usage_period_anchor=reader.time("usagePeriodAnchor"),
        credit_rate=credit_rate,
        valid_until=reader.time("validUntil"),
    )


def decode_credit(reader: JsonReader) -> CreditEntitlement:
    c = reader.child("currency", required=True)
    assert c is not None
    metadata = c.raw("metadata", False)
    if metadata is not None and not isinstance(metadata, dict):
        raise StateDecodeError(f"{c.path}.metadata", "expected an object")
    granted = reader.num("granted", required=True)
    assert granted is not None
    return CreditEntitlement(
        currency=Currency(
            currency_id=c.req_str("currencyId"),
            display_name=c.str_("displayName") or "",
            description=c.str_("description"),
            unit_singular=c.str_("unitSingular"),
            unit_plural=c.str_("unitPlural"),
            metadata=metadata,
        ),
        granted=granted,
        soft_limit=reader.bool_("hasSoftLimit"),
        denial_reason=reader.enum("accessDeniedReason", DenialReason),
        valid_until=reader.time("validUntil"),
    )


def _checked_usage_dict(data: object, path: str) -> UsageRecord:
    reader = JsonReader(data, path)
    _check_schema(reader)
    return UsageRecord(
        current_usage=reader.num("currentUsage") or 0.0,
        period_start=reader.time("usagePeriodStart"),
        period_end=reader.time("usagePeriodEnd"),
        updated_at=reader.time("updatedAt"),
        version=reader.int_("version"),
    )


def _checked_state_dict(data: object, path: str) -> EntitlementState:
    reader = JsonReader(data, path)
    _check_schema(reader)
    features: dict[str, FeatureEntitlement] = {}
    for i, item in enumerate(reader.items("features")):
        ent = decode_feature(JsonReader(item, f"{path}.features[{i}]"))
        features[ent.feature.id] = ent
    credits: dict[str, CreditEntitlement] = {}
    for i, item in enumerate(reader.items("credits")):
        credit = decode_credit(JsonReader(item, f"{path}.credits[{i}]"))
        credits[credit.currency.currency_id] = credit
    return EntitlementState(
        customer_id=reader.req_str("customerId"),
        resource_id=reader.str_("resourceId") or None,
        denial_reason=reader.enum("accessDeniedReason", DenialReason),
        features=features,
        credits=credits,
        version=reader.int_("version"),
        updated_at=reader.time("updatedAt"),
    )


def _usage_map(reader: JsonReader, key: str) -> dict[str, UsageRecord]:
    raw = reader.child(key)
    if raw is None:
        return {}
    return {k: decode_usage_dict(v, f"{raw.path}.{k}") for k, v in raw.data.items()}


def _checked_snapshot_dict(data: object, path: str) -> CustomerSnapshot:
    state = _checked_state_dict(data, path)
    reader = JsonReader(data, path)
    return CustomerSnapshot(
        state=state,
        feature_usage=_usage_map(reader, "featureUsage"),
        credit_usage=_usage_map(reader, "creditUsage"),
    )


# The decoders below are what callers use. Each first tries a quick decoder that accepts only
# input the checked decoder above would accept, producing the same value, and gives up (any
# exception) on anything else; the checked decoder then either names what is wrong or decodes
# the unusual-but-valid input. The quick path exists because decoding is on every read that
# misses the hot cache: the checked decoder spent ~13 us per entitlement building readers and
# error paths it almost never needs. tests/unit/test_state_quick_decode.py holds the two equal.


def decode_usage_dict(data: object, path: str = "$") -> UsageRecord:
    try:
        return _quick_usage(data)
    except Exception:
        return _checked_usage_dict(data, path)


def decode_state_dict(data: object, path: str = "$") -> EntitlementState:
    try:
        return _quick_state(data)
    except Exception:
        return _checked_state_dict(data, path)


def decode_snapshot_dict(data: object, path: str = "$") -> CustomerSnapshot:
    try:
        return _quick_snapshot(data)
    except Exception:
        return _checked_snapshot_dict(data, path)


class _Refused(Exception):
    """The quick path does not take this input; the checked decoder will."""


_FEATURE_TYPES = {member.value: member for member in FeatureType}
_METER_TYPES = {member.value: member for member in MeterType}
_RESET_PERIODS = {member.value: member for member in ResetPeriod}
_DENIAL_REASONS = {member.value: member for member in DenialReason}


def _q_str(value: object) -> str | None:
    if value is None or type(value) is str:
        return value
    raise _Refused


def _q_req_str(value: object) -> str:
    if type(value) is str and value:
        return value
    raise _Refused


def _q_num(value: object) -> float | None:
    if value is None:
        return None
    kind = type(value)
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return value  # type: ignore[return-value]
    elif kind is int and abs(value) < _MAX_MAGNITUDE:  # type: ignore[arg-type]
        return float(value)  # type: ignore[arg-type]
    raise _Refused


def _q_int(value: object, default: int = 0) -> int:
    if value is None:
        return default
    if type(value) is int:
        return value
    raise _Refused


def _q_bool(value: object) -> bool:
    if value is None:
        return False
    if type(value) is bool:
        return value
    raise _Refused


# Instants repeat across records (period starts and ends, anchors): each is built once and
# shared (datetimes are immutable). Cleared when full.
_INSTANTS: dict[int, datetime] = {}
SHARED_INSTANTS_MAX = 4096


def _q_time(value: object) -> datetime | None:
    if value is None:
        return None
    if type(value) is int:
        found = _INSTANTS.get(value)
        if found is None:
            # Out of range raises OverflowError: the checked decoder reports it.
            found = _EPOCH + timedelta(milliseconds=value)
            if len(_INSTANTS) >= SHARED_INSTANTS_MAX:
                _INSTANTS.clear()
            _INSTANTS[value] = found
        return found
    raise _Refused


def _q_enum(table: Mapping[str, _E], value: object) -> _E | None:
    # An unknown value or one of another type is a KeyError or TypeError: refused.
    return None if value is None else table[value]  # type: ignore[index]


# Decoded entitlements, shared: customers on one plan hold the same entitlements, and a
# FeatureEntitlement (frozen, all fields immutable) is the costliest object a decode builds.
# Keyed by the entitlement's JSON as read (``_raw_key``), so a repeat is found before any of
# it is validated again. Cleared when full, which bounds it whatever the catalog's size.
_SHARED: dict[tuple[object, ...], FeatureEntitlement] = {}
SHARED_ENTITLEMENTS_MAX = 4096


def _raw_key(data: dict[str, Any], f: dict[str, Any]) -> tuple[object, ...]:
    """The fields the decoder reads, as JSON gave them, hashable.

    Two keys are equal only for JSON that decodes the same: strings never equal other types,
    and every value of a type JSON lets compare equal to another (True == 1 == 1.0, a string
    and the list of its letters once made tuples) is paired with its type. A key that cannot
    be hashed (a list where a string belongs) raises TypeError: the checked decoder takes it.
    """
    limit = data.get("usageLimit")
    unlimited = data.get("hasUnlimitedUsage")
    soft = data.get("hasSoftLimit")
    values = data.get("enumValues")
    anchor = data.get("usagePeriodAnchor")
    until = data.get("validUntil")
    rate = data.get("creditRate")
    if type(rate) is dict:
        amount = rate.get("amount")
        rate = (amount, type(amount), rate.get("currencyId"))
    return (
        tuple(f.items()),
        limit,
        type(limit),
        unlimited,
        type(unlimited),
        soft,
        type(soft),
        data.get("accessDeniedReason"),
        tuple(values) if type(values) is list else values,
        type(values),
        data.get("resetPeriod"),
        anchor,
        type(anchor),
        rate,
        type(rate),
        until,
        type(until),
    )


def _q_enum_values(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise _Refused
    values = tuple(value)
    for item in values:
        if type(item) is not str:
            raise _Refused
    return values


def _q_rate(value: object) -> tuple[float, str] | None:
    if value is None:
        return None
    if type(value) is not dict:
        raise _Refused
    amount = _q_num(value.get("amount"))
    if amount is None:
        raise _Refused
    return amount, _q_req_str(value.get("currencyId"))


def _q_feature(data: object) -> FeatureEntitlement:
    if type(data) is not dict:
        raise _Refused
    f = data.get("feature")
    if type(f) is not dict:
        raise _Refused
    key = _raw_key(data, f)
    shared = _SHARED.get(key)
    if shared is not None:
        return shared
    limit = _q_num(data.get("usageLimit"))
    rate = _q_rate(data.get("creditRate"))
    entitlement = FeatureEntitlement(
        feature=Feature(
            id=_q_req_str(f.get("id")),
            feature_type=_FEATURE_TYPES[f["featureType"]],
            meter_type=_q_enum(_METER_TYPES, f.get("meterType")) or MeterType.NONE,
            units=_q_str(f.get("units")),
            units_plural=_q_str(f.get("unitsPlural")),
            display_name=_q_str(f.get("displayName")),
        ),
        usage_limit=limit,
        unlimited=_q_bool(data.get("hasUnlimitedUsage")),
        soft_limit=_q_bool(data.get("hasSoftLimit")),
        denial_reason=_q_enum(_DENIAL_REASONS, data.get("accessDeniedReason")),
        enum_values=_q_enum_values(data.get("enumValues")),
        reset_period=_q_enum(_RESET_PERIODS, data.get("resetPeriod")),
        usage_period_anchor=_q_time(data.get("usagePeriodAnchor")),
        credit_rate=None if rate is None else CreditRate(*rate),
        valid_until=_q_time(data.get("validUntil")),
    )
    # 0.0 and -0.0 are equal keys but not the same number: such an entitlement is not shared.
    if limit != 0.0 and (rate is None or rate[0] != 0.0):
        if len(_SHARED) >= SHARED_ENTITLEMENTS_MAX:
            _SHARED.clear()
        _SHARED[key] = entitlement
    return entitlement


def _q_credit(data: object) -> CreditEntitlement:
    if type(data) is not dict:
        raise _Refused
    c = data.get("currency")
    if type(c) is not dict:
        raise _Refused
    metadata = c.get("metadata")
    if metadata is not None and type(metadata) is not dict:
        raise _Refused
    granted = _q_num(data.get("granted"))
    if granted is None:
        raise _Refused
    return CreditEntitlement(
        currency=Currency(
            currency_id=_q_req_str(c.get("currencyId")),
            display_name=_q_str(c.get("displayName")) or "",
            description=_q_str(c.get("description")),
            unit_singular=_q_str(c.get("unitSingular")),
            unit_plural=_q_str(c.get("unitPlural")),
            metadata=metadata,
        ),
        granted=granted,
        soft_limit=_q_bool(data.get("hasSoftLimit")),
        denial_reason=_q_enum(_DENIAL_REASONS, data.get("accessDeniedReason")),
        valid_until=_q_time(data.get("validUntil")),
    )


def _q_items(value: object) -> list[Any]:
    if value is None:
        return []
    if type(value) is list:
        return value
    raise _Refused


def _quick_state(data: object) -> EntitlementState:
    if type(data) is not dict or data.get("schemaVersion") != SCHEMA_VERSION:
        raise _Refused
    if type(data["schemaVersion"]) is not int:
        raise _Refused
    features: dict[str, FeatureEntitlement] = {}
    for item in _q_items(data.get("features")):
        ent = _q_feature(item)
        features[ent.feature.id] = ent
    credits: dict[str, CreditEntitlement] = {}
    for item in _q_items(data.get("credits")):
        credit = _q_credit(item)
        credits[credit.currency.currency_id] = credit
    return EntitlementState(
        customer_id=_q_req_str(data.get("customerId")),
        resource_id=_q_str(data.get("resourceId")) or None,
        denial_reason=_q_enum(_DENIAL_REASONS, data.get("accessDeniedReason")),
        features=features,
        credits=credits,
        version=_q_int(data.get("version")),
        updated_at=_q_time(data.get("updatedAt")),
    )


def _quick_usage(data: object) -> UsageRecord:
    if type(data) is not dict or data.get("schemaVersion") != SCHEMA_VERSION:
        raise _Refused
    if type(data["schemaVersion"]) is not int:
        raise _Refused
    return UsageRecord(
        current_usage=_q_num(data.get("currentUsage")) or 0.0,
        period_start=_q_time(data.get("usagePeriodStart")),
        period_end=_q_time(data.get("usagePeriodEnd")),
        updated_at=_q_time(data.get("updatedAt")),
        version=_q_int(data.get("version")),
    )


def _q_usage_map(value: object) -> dict[str, UsageRecord]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _Refused
    return {key: _quick_usage(record) for key, record in value.items()}


def _quick_snapshot(data: object) -> CustomerSnapshot:
    state = _quick_state(data)
    assert type(data) is dict
    return CustomerSnapshot(
        state=state,
        feature_usage=_q_usage_map(data.get("featureUsage")),
        credit_usage=_q_usage_map(data.get("creditUsage")),
    )


def load_json(payload: bytes | str) -> object:
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateDecodeError("$", f"not valid JSON ({exc})") from exc
    except RecursionError as exc:
        raise StateDecodeError("$", "nested too deeply") from exc


def decode_state(payload: bytes | str) -> EntitlementState:
    return decode_state_dict(load_json(payload))


def decode_usage(payload: bytes | str) -> UsageRecord:
    return decode_usage_dict(load_json(payload))


def decode_snapshot(payload: bytes | str) -> CustomerSnapshot:
    return decode_snapshot_dict(load_json(payload))
