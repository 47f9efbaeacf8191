"""The usage report's wire format, written and read without the general JSON machinery.

``_encode_usages`` formats the usual report directly and ``_plain_acks`` reads the usual answer
without a reader per field; both must be indistinguishable from the reference code they bypass
(``json`` over ``_encode_usage``, and ``_checked_acks``), errors included.
"""

from __future__ import annotations

import copy
import math
from datetime import UTC, datetime
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from entitlements.errors import InvalidArgument
from entitlements.model.state import StateDecodeError, UsageRecord, encode_usage_record
from sidecar.model.usage import UpdateBehavior, UsageReport
from sidecar.source.http_upstream import (
    _checked_acks,
    _decode_acks,
    _dumps,
    _encode_usage,
    _encode_usages,
    _plain_acks,
)

SETTINGS = settings(max_examples=400, derandomize=True, deadline=None)

ids = st.text(min_size=1, max_size=12)
values = (
    st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 5e-324, 1e300, 0.1, 1.0])
    | st.integers(-(2**53), 2**53)
)
dimension_values = st.text(max_size=5) | st.floats(allow_nan=False) | st.booleans()
reports = st.builds(
    UsageReport,
    customer_id=ids,
    feature_id=ids,
    value=values,
    resource_id=st.none() | ids,
    behavior=st.sampled_from(UpdateBehavior),
    dimensions=st.just({}) | st.dictionaries(ids, dimension_values, max_size=3),
    timestamp=st.none() | st.datetimes(timezones=st.just(UTC)),
    idempotency_key=st.none() | ids,
)


def reference_body(batch: list[UsageReport]) -> bytes:
    return _dumps({"usages": [_encode_usage(r) for r in batch]}, "usages")


def body_or_error(encode: Any, batch: list[UsageReport]) -> object:
    try:
        return encode(batch)
    except InvalidArgument as exc:  # a non-finite dimension value
        return (exc.field, exc.problem)


@SETTINGS
@given(st.lists(reports, min_size=1, max_size=4))
def test_the_usage_body_is_what_json_writes(batch: list[UsageReport]) -> None:
    assert body_or_error(_encode_usages, batch) == body_or_error(reference_body, batch)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_refused_as_json_refuses_it(value: float) -> None:
    batch = [UsageReport("c", "f", 1.0), UsageReport("c", "f", value)]
    with pytest.raises(InvalidArgument) as reference:
        reference_body(batch)
    with pytest.raises(InvalidArgument) as written:
        _encode_usages(batch)
    assert (written.value.field, written.value.problem) == (
        reference.value.field,
        reference.value.problem,
    )


# ------------------------------------------------------------------------ answers

T0 = datetime(2026, 6, 1, tzinfo=UTC)
records = st.builds(
    UsageRecord,
    current_usage=st.floats(-1e6, 1e6),
    period_start=st.none() | st.just(T0),
    period_end=st.none() | st.just(datetime(2026, 7, 1, tzinfo=UTC)),
    updated_at=st.none() | st.just(T0),
    version=st.integers(0, 2**40),
)


def ack_body(report: UsageReport, record: UsageRecord | None, credit: bool) -> dict[str, Any]:
    return {
        "measurementId": "m-1",
        "customerId": report.customer_id,
        "resourceId": report.resource_id,
        "featureId": report.feature_id,
        "usage": None if record is None else encode_usage_record(record),
        "credit": (
            {
                "currencyId": "ai",
                "granted": 100,
                "consumed": 2.5,
                "usage": encode_usage_record(record or UsageRecord()),
            }
            if credit
            else None
        ),
    }


# What a field may be replaced with: the right types and every wrong one JSON has.
odd_values = st.sampled_from(
    [None, "", "m", "c", "f", "r", 0, 1, 2.5, True, False, [], {}, ["x"], {"a": 1}, -1]
)
# Where in an answer a value may land: (path of keys, a list index is an int).
places = st.sampled_from(
    [
        (),
        ("results",),
        ("results", 0),
        ("results", 0, "measurementId"),
        ("results", 0, "customerId"),
        ("results", 0, "featureId"),
        ("results", 0, "resourceId"),
        ("results", 0, "usage"),
        ("results", 0, "usage", "version"),
        ("results", 0, "usage", "schemaVersion"),
        ("results", 0, "usage", "currentUsage"),
        ("results", 0, "usage", "updatedAt"),
        ("results", 0, "credit"),
        ("results", 0, "credit", "currencyId"),
        ("results", 0, "credit", "granted"),
        ("results", 0, "credit", "usage"),
        ("results", -1, "customerId"),
    ]
)


def put(data: Any, place: tuple[str | int, ...], value: Any) -> Any:
    """``data`` with ``value`` at ``place``; ``data`` itself (unchanged) where there is none."""
    if not place:
        return value
    changed = copy.deepcopy(data)
    target = changed
    for step in place[:-1]:
        try:
            target = target[step]
        except (KeyError, IndexError, TypeError):
            return data
    try:
        target[place[-1]] = value
    except (IndexError, TypeError):
        return data
    return changed


def outcome(decode: Any, data: object, batch: list[UsageReport]) -> object:
    try:
        return decode(data, batch)
    except StateDecodeError as exc:
        return ("error", str(exc))


acked_reports = st.builds(
    UsageReport,
    customer_id=ids,
    feature_id=ids,
    value=st.just(1.0),
    resource_id=st.none() | st.just("r"),
)


@SETTINGS
@given(
    batch=st.lists(acked_reports, min_size=1, max_size=3),
    record=st.none() | records,
    credit=st.booleans(),
    mutations=st.lists(st.tuples(places, odd_values), max_size=2),
)
def test_an_answer_decodes_as_the_checked_path_decodes_it(
    batch: list[UsageReport],
    record: UsageRecord | None,
    credit: bool,
    mutations: list[tuple[tuple[str | int, ...], Any]],
) -> None:
    data: Any = {"results": [ack_body(report, record, credit) for report in batch]}
    for place, value in mutations:
        data = put(data, place, value)
    expected = outcome(_checked_acks, data, batch)
    assert outcome(_decode_acks, data, batch) == expected
    if not mutations:
        # The usual answer does not need the checked path at all.
        assert _plain_acks(data, batch) == expected


def test_an_empty_id_is_refused_even_when_the_report_has_it() -> None:
    # Only a source fed reports nobody validated could hold an empty id; the answer is still
    # checked as strictly as before.
    report = UsageReport("", "f", 1.0)
    data = {"results": [ack_body(report, None, False)]}
    assert _plain_acks(data, [report]) is None
    with pytest.raises(StateDecodeError, match="customerId: must not be empty"):
        _decode_acks(data, [report])
