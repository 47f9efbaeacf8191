"""The invalidation payload is spelled out by hand for speed; it must stay exactly json.dumps."""

from __future__ import annotations

import json

import hypothesis.strategies as st
from hypothesis import given

from entitlements.redis.invalidation import Invalidation

text = st.text(max_size=12)  # any code point: quotes, backslashes, controls, astral planes


@given(
    customer=text.filter(bool),
    resource=st.one_of(st.none(), text),
    version=st.integers(-(2**63), 2**63 - 1),
    committed=st.one_of(st.none(), st.integers(-(2**62), 2**62)),
)
def test_encode_is_json_dumps_and_round_trips(
    customer: str, resource: str | None, version: int, committed: int | None
) -> None:
    invalidation = Invalidation(customer, resource, version, committed)
    expected = json.dumps(
        {"c": customer, "r": resource, "v": version, "t": committed}, separators=(",", ":")
    )
    assert invalidation.encode() == expected
    decoded = Invalidation.decode(invalidation.encode())
    assert decoded == Invalidation(customer, resource or None, version, committed)
