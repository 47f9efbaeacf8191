"""The hand-written wire format (sidecar/api/wire.py) is what upb writes for the same fields."""

from __future__ import annotations

from datetime import UTC, datetime

import hypothesis.strategies as st
from hypothesis import given, settings

from sidecar.api import convert, wire
from sidecar.pb import sidecar_pb2 as pb

SETTINGS = settings(max_examples=500, derandomize=True, deadline=None)


@SETTINGS
@given(st.integers(-(2**31), 2**31 - 1))
def test_an_int32_is_a_varint_and_negative_ones_take_ten_bytes(value: int) -> None:
    # NumericEntitlement.value = 5 is an optional int32: always written when set.
    assert b"\x28" + wire.varint(value) == pb.NumericEntitlement(value=value).SerializeToString()


@SETTINGS
@given(st.datetimes(timezones=st.just(UTC)))
def test_a_timestamp_is_what_convert_builds(value: datetime) -> None:
    assert wire.timestamp(value) == convert.timestamp(value).SerializeToString()


@SETTINGS
@given(st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0]))
def test_an_implicit_double_is_left_out_only_at_positive_zero(value: float) -> None:
    # MeteredEntitlement.current_usage = 7 has no presence.
    expected = pb.MeteredEntitlement(current_usage=value).SerializeToString()
    assert wire.implicit_double(b"\x39", value) == expected


@SETTINGS
@given(st.text(max_size=300))
def test_a_string_of_any_length_is_framed_by_its_utf8_size(value: str) -> None:
    # EntitlementFeature.units = 3 is optional: written even when empty.
    expected = pb.EntitlementFeature(units=value).SerializeToString()
    assert wire.string(b"\x1a", value) == expected


def test_enum_numbers_are_convert_s() -> None:
    assert wire.varints(convert.REASONS) == {
        reason: wire.varint(int(number)) for reason, number in convert.REASONS.items()
    }
    assert wire.key(14, wire.VARINT) == b"\x70"
    assert wire.key(5, wire.I64) == b"\x29"
    assert wire.key(13, wire.LEN) == b"\x6a"
