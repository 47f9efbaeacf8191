"""Meters: turning raw usage events into a feature's usage.

A meter selects events by name and dimension filters and folds them into an
incremental ``MeterState`` per (customer, resource, feature, period); ``value``
reads the usage the feature reports. Events arrive asynchronously and may be
replayed in any order, so every aggregate here is order-independent, exactly: the
SUM is kept as an exact rational rather than a float running total, whose rounding
would depend on arrival order.

Dimension values are typed (string | number | boolean, as in Stigg's event input)
and compared type-sensitively: ``"1"`` is not ``1`` and ``True`` is not ``1``,
although ``1`` and ``1.0`` are the same number (JSON cannot tell them apart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction

__all__ = [
    "Aggregation",
    "DimensionValue",
    "Meter",
    "MeterState",
    "apply",
    "canonical",
    "matches",
    "state_from_json",
    "state_to_json",
    "value",
]

DimensionValue = str | float | bool


class Aggregation(StrEnum):
    COUNT = "COUNT"
    SUM = "SUM"
    MIN = "MIN"
    MAX = "MAX"
    # Stigg calls this UNIQUE.
    COUNT_DISTINCT = "COUNT_DISTINCT"


_NEEDS_DIMENSION = frozenset(
    {Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.COUNT_DISTINCT}
)
_NUMERIC = frozenset({Aggregation.SUM, Aggregation.MIN, Aggregation.MAX})


@dataclass(frozen=True, slots=True)
class Meter:
    feature_id: str
    event_name: str
    filters: Mapping[str, DimensionValue]
    aggregation: Aggregation
    # The dimension aggregated; required by every aggregation except COUNT.
    dimension: str | None = None

    def __post_init__(self) -> None:
        # Misconfigured meters fail at construction, not silently at the first event.
        if self.aggregation in _NEEDS_DIMENSION and self.dimension is None:
            raise ValueError(f"{self.aggregation} meter needs a dimension")
        if self.aggregation is Aggregation.COUNT and self.dimension is not None:
            raise ValueError("COUNT meter takes no dimension (it would be ignored)")


@dataclass(frozen=True, slots=True)
class MeterState:
    """Aggregate of the relevant events seen so far; the empty state is ``MeterState()``."""

    # Relevant events folded in, whatever the aggregation.
    count: int = 0
    # Exact sum (SUM meters); ``total`` gives it as a float.
    exact_total: Fraction = Fraction(0)
    minimum: float | None = None
    maximum: float | None = None
    # Canonical values (see ``canonical``) seen by COUNT_DISTINCT meters.
    distinct: frozenset[str] = field(default_factory=frozenset)

    @property
    def total(self) -> float:
        return _to_float(self.exact_total)


def _to_float(x: Fraction) -> float:
    try:
        return float(x)
    except OverflowError:
        # Sums of finite values can exceed the float range; saturate, as float maths would.
        return math.inf if x > 0 else -math.inf


def _same(a: object, b: object) -> bool:
    # bool is an int subclass and True == 1 in Python; the wire types say otherwise.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is bool and type(b) is bool and a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return False


def matches(meter: Meter, event_name: str, dimensions: Mapping[str, object]) -> bool:
    """The event feeds this meter: same name, and every filter present with an equal value."""
    if event_name != meter.event_name:
        return False
    for key, expected in meter.filters.items():
        if key not in dimensions or not _same(dimensions[key], expected):
            return False
    return True


def _number(raw: object) -> int | float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    try:
        as_float = float(raw)
    except OverflowError:
        # An int beyond the float range cannot be a MIN/MAX; refuse it everywhere alike.
        return None
    return raw if math.isfinite(as_float) else None


def canonical(raw: object) -> str | None:
    """Type-tagged string identifying a dimension value for COUNT_DISTINCT.

    ``s:<text>`` for strings, ``b:true`` / ``b:false`` for booleans, ``n:<number>`` for
    finite numbers with integral values written as integers (so 1 and 1.0 both give
    ``n:1``, -0.0 gives ``n:0``) and others as their shortest float repr. None for
    anything else (null, lists, non-finite numbers): such an event is irrelevant.
    """
    if isinstance(raw, bool):
        return "b:true" if raw else "b:false"
    if isinstance(raw, str):
        return "s:" + raw
    number = _number(raw)
    if number is None:
        return None
    if isinstance(number, int):
        return f"n:{number}"
    if number.is_integer():
        return f"n:{int(number)}"
    return f"n:{number!r}"


def apply(meter: Meter, state: MeterState, dimensions: Mapping[str, object]) -> MeterState | None:
    """Fold one event into ``state``; None when the event does not count for this meter.

    The caller routes events with ``matches`` first; this only judges the aggregated
    dimension, which must be present (and numeric for SUM/MIN/MAX). Returning None
    rather than the unchanged state lets the caller skip the write.
    """
    if meter.aggregation is Aggregation.COUNT:
        return MeterState(
            state.count + 1, state.exact_total, state.minimum, state.maximum, state.distinct
        )
    dimension = meter.dimension
    if dimension is None or dimension not in dimensions:
        return None
    raw = dimensions[dimension]
    if meter.aggregation in _NUMERIC:
        number = _number(raw)
        if number is None:
            return None
        # + 0.0 turns -0.0 into 0.0, else min(0.0, -0.0) would depend on arrival order.
        as_float = float(number) + 0.0
        low = as_float if state.minimum is None else min(state.minimum, as_float)
        high = as_float if state.maximum is None else max(state.maximum, as_float)
        return MeterState(
            state.count + 1, state.exact_total + Fraction(number), low, high, state.distinct
        )
    key = canonical(raw)
    if key is None:
        return None
    return MeterState(
        state.count + 1, state.exact_total, state.minimum, state.maximum, state.distinct | {key}
    )


def value(meter: Meter, state: MeterState) -> float:
    """The usage the feature reports; 0 before any relevant event."""
    match meter.aggregation:
        case Aggregation.COUNT:
            return float(state.count)
        case Aggregation.SUM:
            return state.total
        case Aggregation.MIN:
            return 0.0 if state.minimum is None else state.minimum
        case Aggregation.MAX:
            return 0.0 if state.maximum is None else state.maximum
        case Aggregation.COUNT_DISTINCT:
            return float(len(state.distinct))


def state_to_json(state: MeterState) -> dict[str, object]:
    """JSON-able dict; ``total`` is the exact sum as a ``"num/den"`` (or ``"num"``) string."""
    return {
        "count": state.count,
        # A string: a float would lose the exactness, and JSON numbers with huge
        # integers are not safe for every reader.
        "total": str(state.exact_total),
        "minimum": state.minimum,
        "maximum": state.maximum,
        # Sorted so equal states serialize identically.
        "distinct": sorted(state.distinct),
    }


def _optional_float(d: Mapping[str, object], key: str) -> float | None:
    raw = d.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise ValueError(f"meter state {key!r} must be a finite number or null, got {raw!r}")
    return float(raw) + 0.0


def _total(raw: object) -> Fraction:
    if isinstance(raw, str):
        try:
            return Fraction(raw)
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"meter state 'total' is not a rational: {raw!r}") from exc
    # Also accept a plain number, as a hand-written or older state may carry one.
    if not isinstance(raw, bool) and isinstance(raw, int | float) and math.isfinite(raw):
        return Fraction(raw)
    raise ValueError(f"meter state 'total' must be a string or finite number, got {raw!r}")


def state_from_json(d: Mapping[str, object]) -> MeterState:
    """Inverse of ``state_to_json``; missing keys take the empty state's values.

    Raises ValueError on malformed input, since a corrupt aggregate must not be
    silently reset to zero usage.
    """
    count = d.get("count", 0)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"meter state 'count' must be an integer >= 0, got {count!r}")
    distinct = d.get("distinct", [])
    if not isinstance(distinct, list) or not all(isinstance(v, str) for v in distinct):
        raise ValueError(f"meter state 'distinct' must be a list of strings, got {distinct!r}")
    return MeterState(
        count=count,
        exact_total=_total(d.get("total", "0")),
        minimum=_optional_float(d, "minimum"),
        maximum=_optional_float(d, "maximum"),
        distinct=frozenset(distinct),
    )
