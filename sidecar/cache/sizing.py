"""Measure what a cached value really keeps alive, so the byte bound bounds RSS."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum

from entitlements.model.state import (
    CreditEntitlement,
    CreditRate,
    Currency,
    CustomerSnapshot,
    EntitlementState,
    Feature,
    FeatureEntitlement,
    UsageRecord,
)

_ATOMS = (str, bytes, int, float, datetime)


def deep_size(obj: object) -> int:
    """Bytes of ``obj`` and everything it references that is not shared globally.

    Enum members, None and booleans are singletons owned by the interpreter, so
    charging them to every entry would overstate the footprint.
    """
    seen: set[int] = set()
    total = 0
    stack: list[object] = [obj]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | Enum) or id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, _ATOMS):
            continue
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
        else:
            slots = getattr(type(item), "__slots__", ())
            stack.extend(getattr(item, name) for name in slots if hasattr(item, name))
            if hasattr(item, "__dict__"):
                stack.append(vars(item))
    return total


# What an instance of each model class takes itself (its slots, not what they point to).
def _instance_size(kind: type[object]) -> int:
    return sys.getsizeof(object.__new__(kind))


# The empty tuple is one object, shared by every entitlement without enum values.
_SNAPSHOT = _instance_size(CustomerSnapshot) + _instance_size(EntitlementState) + sys.getsizeof(())
_FEATURE = _instance_size(FeatureEntitlement) + _instance_size(Feature)
_RATE = _instance_size(CreditRate)
_CREDIT = _instance_size(CreditEntitlement) + _instance_size(Currency)
_USAGE = _instance_size(UsageRecord)
_FLOAT = sys.getsizeof(0.0)
_TIME = sys.getsizeof(datetime(2000, 1, 1, tzinfo=UTC))


def _text(value: str | None) -> int:
    return 0 if value is None else sys.getsizeof(value)


def _time(value: datetime | None) -> int:
    return 0 if value is None else _TIME


def _number(value: float | None) -> int:
    return 0 if value is None else _FLOAT


def _usage(records: Mapping[str, UsageRecord]) -> int:
    total = sys.getsizeof(records)
    for key, record in records.items():
        total += sys.getsizeof(key) + _USAGE + _FLOAT + sys.getsizeof(record.version)
        total += _time(record.period_start) + _time(record.period_end) + _time(record.updated_at)
    return total


def snapshot_size(snapshot: CustomerSnapshot) -> int:
    """``deep_size(snapshot)`` or a little more, from the fields the model is known to have.

    A snapshot is sized every time one enters the hot cache; walking it generically
    (``deep_size``) took about 10 us per entitlement. This walk reads each field directly and
    counts every reference as its own object, where ``deep_size`` counts an object shared
    within the snapshot once: so it never charges less than ``deep_size`` (the byte bound stays
    a bound), and charges more only by what is shared, little for a decoded snapshot.
    tests/unit/cache/test_sizing.py holds both bounds.
    """
    state = snapshot.state
    total = _SNAPSHOT + _text(state.customer_id) + _text(state.resource_id)
    total += sys.getsizeof(state.version) + _time(state.updated_at)
    total += sys.getsizeof(state.features) + sys.getsizeof(state.credits)
    for key, ent in state.features.items():
        feature = ent.feature
        total += _FEATURE + sys.getsizeof(feature.id)
        if key is not feature.id:
            total += sys.getsizeof(key)
        total += _text(feature.units) + _text(feature.units_plural) + _text(feature.display_name)
        total += _number(ent.usage_limit) + _time(ent.usage_period_anchor) + _time(ent.valid_until)
        values = ent.enum_values
        if values:
            total += sys.getsizeof(values)
            for value in values:
                total += sys.getsizeof(value)
        rate = ent.credit_rate
        if rate is not None:
            total += _RATE + _FLOAT + sys.getsizeof(rate.currency_id)
    for key, credit in state.credits.items():
        currency = credit.currency
        total += _CREDIT + _FLOAT + sys.getsizeof(currency.currency_id)
        if key is not currency.currency_id:
            total += sys.getsizeof(key)
        total += sys.getsizeof(currency.display_name) + _text(currency.description)
        total += _text(currency.unit_singular) + _text(currency.unit_plural)
        total += _time(credit.valid_until)
        if currency.metadata is not None:
            # Free-form JSON: nothing is known of its shape.
            total += deep_size(currency.metadata)
    return total + _usage(snapshot.feature_usage) + _usage(snapshot.credit_usage)
