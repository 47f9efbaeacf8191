"""Tests for upstream.meters: event matching, incremental aggregation, JSON state.

Tables pin the type-sensitive filter comparison, each aggregation's value, which
events are skipped, and the COUNT_DISTINCT canonical form. Hypothesis properties:
the JSON round trip is lossless, the aggregate does not depend on event order, and
SUM equals the correctly rounded exact sum (math.fsum as the oracle).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from upstream.meters import (
    Aggregation,
    Meter,
    MeterState,
    apply,
    canonical,
    matches,
    state_from_json,
    state_to_json,
    value,
)

PROPERTY = settings(max_examples=300, derandomize=True, database=None, deadline=None)

EMPTY = MeterState()


def meter(
    aggregation: Aggregation,
    dimension: str | None = "v",
    filters: Mapping[str, str | float | bool] | None = None,
) -> Meter:
    return Meter(
        feature_id="f",
        event_name="call",
        filters=filters or {},
        aggregation=aggregation,
        dimension=None if aggregation is Aggregation.COUNT else dimension,
    )


def fold(m: Meter, events: Sequence[Mapping[str, object]]) -> MeterState:
    state = EMPTY
    for dims in events:
        state = apply(m, state, dims) or state
    return state


def run(m: Meter, values: Sequence[object]) -> float:
    return value(m, fold(m, [{"v": v} for v in values]))


# --------------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "aggregation",
    [Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.COUNT_DISTINCT],
)
def test_dimension_required(aggregation: Aggregation) -> None:
    with pytest.raises(ValueError, match="needs a dimension"):
        Meter("f", "call", {}, aggregation, None)


def test_count_takes_no_dimension() -> None:
    with pytest.raises(ValueError, match="no dimension"):
        Meter("f", "call", {}, Aggregation.COUNT, "v")


def test_aggregation_values() -> None:
    assert [a.value for a in Aggregation] == ["COUNT", "SUM", "MIN", "MAX", "COUNT_DISTINCT"]
    assert Aggregation("SUM") is Aggregation.SUM


# --------------------------------------------------------------------------- matches

# (case, filters, event name, dimensions, matches)
MATCH_CASES: list[tuple[str, dict[str, str | float | bool], str, dict[str, object], bool]] = [
    ("no filters", {}, "call", {}, True),
    ("other event name", {}, "other", {}, False),
    ("event name is case-sensitive", {}, "Call", {}, False),
    ("string equal", {"region": "eu"}, "call", {"region": "eu"}, True),
    ("string differs", {"region": "eu"}, "call", {"region": "us"}, False),
    ("filter dimension missing", {"region": "eu"}, "call", {"other": "eu"}, False),
    ("extra dimensions are fine", {"region": "eu"}, "call", {"region": "eu", "x": 1}, True),
    ("every filter must hold", {"a": "1", "b": 2}, "call", {"a": "1", "b": 3}, False),
    ("every filter holds", {"a": "1", "b": 2}, "call", {"a": "1", "b": 2}, True),
    ('"1" is not 1', {"n": "1"}, "call", {"n": 1}, False),
    ('1 is not "1"', {"n": 1}, "call", {"n": "1"}, False),
    ("1 is 1.0", {"n": 1}, "call", {"n": 1.0}, True),
    ("1.0 is 1", {"n": 1.0}, "call", {"n": 1}, True),
    ("True is not 1", {"n": True}, "call", {"n": 1}, False),
    ("1 is not True", {"n": 1}, "call", {"n": True}, False),
    ("False is not 0", {"n": False}, "call", {"n": 0}, False),
    ("0.0 is not False", {"n": 0.0}, "call", {"n": False}, False),
    ('True is not "true"', {"n": True}, "call", {"n": "true"}, False),
    ("True is True", {"n": True}, "call", {"n": True}, True),
    ("False is False", {"n": False}, "call", {"n": False}, True),
    ("null never matches", {"n": "x"}, "call", {"n": None}, False),
    ("NaN never matches", {"n": math.nan}, "call", {"n": math.nan}, False),
    ("list never matches", {"n": "x"}, "call", {"n": ["x"]}, False),
]


@pytest.mark.parametrize(
    ("filters", "name", "dims", "expected"),
    [pytest.param(f, n, d, e, id=case) for case, f, n, d, e in MATCH_CASES],
)
def test_matches(
    filters: dict[str, str | float | bool], name: str, dims: dict[str, object], expected: bool
) -> None:
    assert matches(meter(Aggregation.COUNT, filters=filters), name, dims) is expected


# --------------------------------------------------------------------------- aggregations

# (aggregation, dimension values, expected value)
VALUE_CASES: list[tuple[Aggregation, list[object], float]] = [
    (Aggregation.COUNT, [], 0.0),
    (Aggregation.COUNT, [1, "x", None], 3.0),
    (Aggregation.SUM, [], 0.0),
    (Aggregation.SUM, [1, 2.5, -0.5], 3.0),
    (Aggregation.SUM, [10**20, 1], 1e20),
    (Aggregation.MIN, [], 0.0),
    (Aggregation.MIN, [3, -2.5, 7], -2.5),
    (Aggregation.MIN, [4, 5], 4.0),
    (Aggregation.MAX, [], 0.0),
    (Aggregation.MAX, [3, -2.5, 7], 7.0),
    (Aggregation.MAX, [-4, -5], -4.0),
    (Aggregation.COUNT_DISTINCT, [], 0.0),
    (Aggregation.COUNT_DISTINCT, ["a", "b", "a", "c", "b"], 3.0),
    (Aggregation.COUNT_DISTINCT, [1, 1.0, "1", True], 3.0),
    (Aggregation.COUNT_DISTINCT, [1, 1.0, "1", True, False, 0, -0.0, "true", 0.5], 7.0),
]


@pytest.mark.parametrize(("aggregation", "values", "expected"), VALUE_CASES)
def test_aggregation_value(aggregation: Aggregation, values: list[object], expected: float) -> None:
    assert run(meter(aggregation), values) == expected


def test_count_counts_events_without_any_dimension() -> None:
    m = meter(Aggregation.COUNT)
    assert apply(m, EMPTY, {}) == MeterState(count=1)


def test_sum_is_exact_not_a_running_float() -> None:
    m = meter(Aggregation.SUM)
    # A running float total gives 0.6000000000000001 one way and 0.6 the other.
    assert run(m, [0.1, 0.2, 0.3]) == run(m, [0.3, 0.2, 0.1]) == math.fsum([0.1, 0.2, 0.3])
    assert run(m, [1e100, 1.0, -1e100]) == 1.0


def test_sum_saturates_instead_of_overflowing() -> None:
    m = meter(Aggregation.SUM)
    state = fold(m, [{"v": 1e308}, {"v": 1e308}])
    assert value(m, state) == math.inf
    # The exact total is kept, so the overflow is not sticky.
    assert value(m, apply(m, state, {"v": -1e308}) or state) == 1e308
    assert value(m, fold(m, [{"v": -1e308}, {"v": -1e308}])) == -math.inf


def test_min_max_normalize_negative_zero() -> None:
    for aggregation in (Aggregation.MIN, Aggregation.MAX):
        m = meter(aggregation)
        for values in ([0.0, -0.0], [-0.0, 0.0], [-0.0]):
            result = run(m, values)
            assert result == 0.0
            assert math.copysign(1.0, result) == 1.0


def test_state_tracks_count_and_only_its_aggregate() -> None:
    m = meter(Aggregation.SUM)
    assert fold(m, [{"v": 2}, {"v": -1}]) == MeterState(2, Fraction(1), -1.0, 2.0, frozenset())
    d = meter(Aggregation.COUNT_DISTINCT)
    assert fold(d, [{"v": "a"}, {"v": "a"}]) == MeterState(count=2, distinct=frozenset({"s:a"}))


# --------------------------------------------------------------------------- skipped events

NOT_NUMBERS: list[object] = ["5", "", True, False, None, math.nan, math.inf, -math.inf, [1], {}]


@pytest.mark.parametrize("aggregation", [Aggregation.SUM, Aggregation.MIN, Aggregation.MAX])
@pytest.mark.parametrize("raw", NOT_NUMBERS, ids=repr)
def test_numeric_aggregations_skip_non_numbers(aggregation: Aggregation, raw: object) -> None:
    assert apply(meter(aggregation), EMPTY, {"v": raw}) is None


@pytest.mark.parametrize(
    "aggregation",
    [Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.COUNT_DISTINCT],
)
def test_missing_dimension_skipped(aggregation: Aggregation) -> None:
    assert apply(meter(aggregation), EMPTY, {}) is None
    assert apply(meter(aggregation), EMPTY, {"other": 1}) is None


def test_int_beyond_float_range_is_not_a_number() -> None:
    for aggregation in (Aggregation.SUM, Aggregation.MAX, Aggregation.COUNT_DISTINCT):
        assert apply(meter(aggregation), EMPTY, {"v": 10**400}) is None


@pytest.mark.parametrize("raw", [None, math.nan, math.inf, [1], {"a": 1}], ids=repr)
def test_count_distinct_skips_values_without_identity(raw: object) -> None:
    assert apply(meter(Aggregation.COUNT_DISTINCT), EMPTY, {"v": raw}) is None


def test_skipped_events_do_not_change_the_value() -> None:
    m = meter(Aggregation.SUM)
    assert run(m, [1, "2", None, True, 3.5]) == 4.5


# --------------------------------------------------------------------------- canonical form

CANONICAL_CASES: list[tuple[object, str | None]] = [
    ("1", "s:1"),
    ("", "s:"),
    ("n:1", "s:n:1"),
    (True, "b:true"),
    (False, "b:false"),
    (1, "n:1"),
    (1.0, "n:1"),
    (-0.0, "n:0"),
    (0, "n:0"),
    (-3, "n:-3"),
    (1.5, "n:1.5"),
    (0.1, "n:0.1"),
    (1e20, "n:100000000000000000000"),
    (10**20, "n:100000000000000000000"),
    (1e-7, "n:1e-07"),
    (None, None),
    (math.nan, None),
    (math.inf, None),
    ([1], None),
]


@pytest.mark.parametrize(("raw", "expected"), CANONICAL_CASES, ids=repr)
def test_canonical(raw: object, expected: str | None) -> None:
    assert canonical(raw) == expected


def test_canonical_agrees_with_python_number_equality_beyond_2_53() -> None:
    # 2**53 + 1 has no float; it is a different number from float(2**53), as in Python.
    assert canonical(2**53) == canonical(float(2**53))
    assert canonical(2**53 + 1) != canonical(float(2**53 + 1))


# --------------------------------------------------------------------------- JSON

# (case, dict, error fragment)
BAD_JSON: list[tuple[str, dict[str, object], str]] = [
    ("negative count", {"count": -1}, "count"),
    ("float count", {"count": 1.0}, "count"),
    ("bool count", {"count": True}, "count"),
    ("string count", {"count": "1"}, "count"),
    ("garbage total", {"total": "abc"}, "total"),
    ("zero denominator", {"total": "1/0"}, "total"),
    ("nan total", {"total": "nan"}, "total"),
    ("null total", {"total": None}, "total"),
    ("bool total", {"total": True}, "total"),
    ("string minimum", {"minimum": "1"}, "minimum"),
    ("bool maximum", {"maximum": False}, "maximum"),
    ("infinite maximum", {"maximum": math.inf}, "maximum"),
    ("distinct not a list", {"distinct": "abc"}, "distinct"),
    ("distinct with a number", {"distinct": ["s:a", 1]}, "distinct"),
]


@pytest.mark.parametrize(
    ("data", "fragment"), [pytest.param(d, f, id=case) for case, d, f in BAD_JSON]
)
def test_state_from_json_rejects(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        state_from_json(data)


def test_state_json_shape() -> None:
    state = MeterState(3, Fraction(7, 2), -1.0, 4.0, frozenset({"s:b", "n:1"}))
    assert state_to_json(state) == {
        "count": 3,
        "total": "7/2",
        "minimum": -1.0,
        "maximum": 4.0,
        "distinct": ["n:1", "s:b"],
    }
    assert state_to_json(EMPTY) == {
        "count": 0,
        "total": "0",
        "minimum": None,
        "maximum": None,
        "distinct": [],
    }


def test_state_from_json_defaults_and_plain_number_total() -> None:
    assert state_from_json({}) == EMPTY
    assert state_from_json({"total": 2.5, "count": 1}) == MeterState(1, Fraction(5, 2))
    assert state_from_json({"total": 3}).total == 3.0


# --------------------------------------------------------------------------- properties

DIMENSION_VALUES = st.one_of(
    st.text(max_size=3),
    st.integers(min_value=-(2**60), max_value=2**60),
    st.floats(),
    st.booleans(),
    st.none(),
    st.just([1]),
)
EVENTS = st.lists(
    st.dictionaries(st.sampled_from(["v", "w"]), DIMENSION_VALUES, max_size=2), max_size=12
)
NON_COUNT = st.sampled_from(
    [Aggregation.SUM, Aggregation.MIN, Aggregation.MAX, Aggregation.COUNT_DISTINCT]
)
ANY_METER = st.one_of(st.just(meter(Aggregation.COUNT)), NON_COUNT.map(meter))


def _roundtrip(state: MeterState) -> MeterState:
    text = json.dumps(state_to_json(state), allow_nan=False)
    return state_from_json(json.loads(text))


@PROPERTY
@given(ANY_METER, EVENTS)
def test_json_roundtrip_of_folded_states(m: Meter, events: list[dict[str, object]]) -> None:
    state = fold(m, events)
    assert _roundtrip(state) == state
    assert value(m, _roundtrip(state)) == value(m, state)


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@PROPERTY
@given(
    st.integers(min_value=0, max_value=2**63),
    st.lists(FINITE, max_size=5),
    st.one_of(st.none(), FINITE),
    st.one_of(st.none(), FINITE),
    st.frozensets(st.text()),
)
def test_json_roundtrip_of_any_state(
    count: int,
    parts: list[float],
    low: float | None,
    high: float | None,
    distinct: frozenset[str],
) -> None:
    # Normalize -0.0 the way apply does; otherwise any finite state round-trips.
    low = None if low is None else low + 0.0
    high = None if high is None else high + 0.0
    state = MeterState(count, sum(map(Fraction, parts), Fraction(0)), low, high, distinct)
    assert _roundtrip(state) == state


@PROPERTY
@given(ANY_METER, EVENTS.flatmap(lambda es: st.tuples(st.just(es), st.permutations(es))))
def test_order_independent(
    m: Meter, orders: tuple[list[dict[str, object]], list[dict[str, object]]]
) -> None:
    events, shuffled = orders
    a, b = fold(m, events), fold(m, shuffled)
    # Whole-state equality, so the JSON written is the same too, not just the value.
    assert a == b
    assert state_to_json(a) == state_to_json(b)
    assert math.isnan(value(m, a)) is False
    assert value(m, a) == value(m, b)


@PROPERTY
@given(st.lists(st.floats(min_value=-1e300, max_value=1e300), max_size=20))
def test_sum_is_the_correctly_rounded_exact_sum(values: list[float]) -> None:
    assert run(meter(Aggregation.SUM), values) == math.fsum(values)


@PROPERTY
@given(st.lists(st.one_of(FINITE, st.integers(-1000, 1000)), min_size=1, max_size=20))
def test_min_max_count_match_builtins(values: list[float]) -> None:
    assert run(meter(Aggregation.MIN), values) == min(values)
    assert run(meter(Aggregation.MAX), values) == max(values)
    assert run(meter(Aggregation.COUNT), values) == len(values)


@PROPERTY
@given(st.lists(DIMENSION_VALUES, max_size=12))
def test_count_distinct_matches_typed_equality(values: list[object]) -> None:
    # Oracle: a value is new unless an earlier one is the same type-class and ==.
    def kind(v: object) -> str:
        return "b" if isinstance(v, bool) else "s" if isinstance(v, str) else "n"

    valid = [v for v in values if canonical(v) is not None]
    unique: list[object] = []
    for v in valid:
        if not any(kind(u) == kind(v) and u == v for u in unique):
            unique.append(v)
    assert run(meter(Aggregation.COUNT_DISTINCT), values) == len(unique)
