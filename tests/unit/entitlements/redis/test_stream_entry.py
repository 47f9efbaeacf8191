"""Stream entries: the envelope layout writes exactly what the model path writes, and every
malformed entry is refused with a reason that names the field."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from entitlements.model.events import ChangeEvent, EventKind, encode_event
from entitlements.model.state import UsageRecord, encode_state, encode_usage
from entitlements.redis.hash_writes import HashWrite, event_write
from entitlements.redis.stream_entry import (
    EntryError,
    decode_entry,
    encode_entry,
    legacy_entry,
)
from tests.builders import demo_snapshot
from tests.unit.entitlements.model.state_strategies import ms_datetimes, snapshots, usage_records

AT = datetime(2026, 6, 1, 12, 30, 0, 123000, tzinfo=UTC)
AT_MS = 1780317000123
RECORD = UsageRecord(12.5, AT, datetime(2026, 7, 1, tzinfo=UTC), AT, 7)


def as_read(fields: dict[str, str | bytes]) -> dict[str, bytes]:
    """The fields as the consumer gets them back from XREADGROUP: every value bytes."""
    return {k: v.encode() if isinstance(v, str) else v for k, v in fields.items()}


def entry_of(event: ChangeEvent) -> dict[str, bytes]:
    return as_read(encode_entry(event.seq, encode_event(event)))


# ------------------------------------------------------------------------------ equivalence


@st.composite
def events(draw: st.DrawFn) -> ChangeEvent:
    seq = draw(st.integers(0, 2**62))
    committed = draw(ms_datetimes)
    kind = draw(st.sampled_from(list(EventKind)))
    if kind is EventKind.ENTITLEMENTS:
        snapshot = draw(snapshots(ms_datetimes))
        state = snapshot.state
        # As upstream publishes it: the event's key and version are the state's.
        return ChangeEvent(
            kind, seq, state.customer_id, state.resource_id, state.version, committed, snapshot
        )
    customer = draw(st.text(min_size=1, max_size=8))
    resource = draw(st.one_of(st.none(), st.text(max_size=6)))
    if kind is EventKind.DELETED:
        return ChangeEvent(kind, seq, customer, resource, draw(st.integers(0, 2**62)), committed)
    record = draw(usage_records(ms_datetimes))
    target = draw(st.text(max_size=6))
    by_feature = draw(st.booleans())
    return ChangeEvent(
        kind,
        seq,
        customer,
        resource,
        record.version,
        committed,
        feature_id=target if by_feature else None,
        currency_id=None if by_feature else target,
        usage=record,
    )


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(event=events())
def test_an_entry_writes_exactly_what_the_model_path_writes(event: ChangeEvent) -> None:
    try:
        expected: HashWrite | None = event_write(event)
    except (ValueError, TypeError):
        expected = None  # out-of-range version, or a usage event naming no feature/currency
    try:
        fields = entry_of(event)
    except ValueError:
        assert expected is None
        return
    if expected is None:
        with pytest.raises(EntryError):
            decode_entry(fields)
        return
    assert decode_entry(fields) == expected


def test_values_are_the_bytes_the_state_hash_stores() -> None:
    snapshot = demo_snapshot("cust-1")
    event = ChangeEvent(EventKind.ENTITLEMENTS, 3, "cust-1", None, 4, AT, snapshot=snapshot)
    fields = entry_of(event)
    envelope = json.loads(fields["envelope"])
    assert envelope["records"][0] == ["state", snapshot.state.version]
    assert fields["r0"] == encode_state(snapshot.state)
    for index, (feature_id, record) in enumerate(snapshot.feature_usage.items(), start=1):
        assert envelope["records"][index] == [f"u:f:{feature_id}", record.version]
        assert fields[f"r{index}"] == encode_usage(record)
    assert fields["seq"] == b"3"
    assert "snapshot" not in envelope


def test_ids_that_look_like_version_fields_cannot_collide() -> None:
    # Entries address values by position, so records of features "x" and "x:v" (whose names
    # differ only by a suffix) both arrive intact.
    snapshot = demo_snapshot("cust-1")
    snapshot = snapshot.with_feature_usage("x", RECORD).with_feature_usage("x:v", RECORD)
    event = ChangeEvent(EventKind.ENTITLEMENTS, 3, "cust-1", None, 4, AT, snapshot=snapshot)
    write = decode_entry(entry_of(event))
    names = write.records[0::3]
    assert "u:f:x" in names and "u:f:x:v" in names


def test_a_legacy_entry_is_the_whole_event_in_one_field() -> None:
    event = ChangeEvent(EventKind.DELETED, 7, "cust-1", None, 9, AT)
    assert legacy_entry(7, encode_event(event)) == {"seq": "7", "event": encode_event(event)}


def test_a_deletion_has_no_records() -> None:
    event = ChangeEvent(EventKind.DELETED, 7, "cust-1", "site", 9, AT)
    assert decode_entry(entry_of(event)) == HashWrite("cust-1", "site", 9, AT_MS, (), delete=True)


# ------------------------------------------------------------------------------ refusals

USAGE = ChangeEvent(EventKind.USAGE, 5, "cust-1", None, 7, AT, feature_id="api", usage=RECORD)
STATE = ChangeEvent(
    EventKind.ENTITLEMENTS, 3, "cust-1", None, 4, AT, snapshot=demo_snapshot("cust-1")
)


def envelope_with(base: ChangeEvent, **changes: Any) -> Callable[[], dict[str, bytes]]:
    def build() -> dict[str, bytes]:
        fields = entry_of(base)
        body = json.loads(fields["envelope"])
        for key, value in changes.items():
            if value is ...:
                body.pop(key)
            else:
                body[key] = value
        fields["envelope"] = json.dumps(body).encode()
        # One value per listed record, so each case tests the envelope and nothing else.
        listed = body.get("records")
        if isinstance(listed, list):
            for index in range(len(listed), len(listed) + 64):
                fields.pop(f"r{index}", None)
            for index in range(len(listed)):
                fields.setdefault(f"r{index}", b"{}")
        return fields

    return build


def fields_with(base: ChangeEvent, **changes: bytes | None) -> Callable[[], dict[str, bytes]]:
    def build() -> dict[str, bytes]:
        fields = entry_of(base)
        for key, value in changes.items():
            if value is None:
                fields.pop(key)
            else:
                fields[key] = value
        return fields

    return build


REFUSED: dict[str, tuple[Callable[[], dict[str, bytes]], str]] = {
    "no envelope": (fields_with(USAGE, envelope=None), "missing field 'envelope'"),
    "not json": (fields_with(USAGE, envelope=b"{nope"), "envelope: not valid JSON"),
    "trailing garbage": (fields_with(USAGE, envelope=b'{"a":1} x'), "envelope: not valid JSON"),
    "not utf-8": (fields_with(USAGE, envelope=b'{"\xff":1}'), "envelope: not valid JSON"),
    "not an object": (fields_with(USAGE, envelope=b"[]"), "envelope: expected an object"),
    "schema": (envelope_with(USAGE, schemaVersion=2), "envelope.schemaVersion"),
    "schema true": (envelope_with(USAGE, schemaVersion=True), "envelope.schemaVersion"),
    "kind": (envelope_with(USAGE, kind="usage.deleted"), "envelope.kind"),
    "no customer": (envelope_with(USAGE, customerId=""), "envelope.customerId"),
    "customer type": (envelope_with(USAGE, customerId=5), "envelope.customerId"),
    "resource type": (envelope_with(USAGE, resourceId=5), "envelope.resourceId"),
    "version type": (envelope_with(USAGE, version="7"), "envelope.version"),
    "version bool": (envelope_with(USAGE, version=True), "envelope.version"),
    "version range": (envelope_with(USAGE, version=2**63), "envelope.version"),
    "no committedAt": (envelope_with(USAGE, committedAt=...), "envelope.committedAt"),
    "seq type": (envelope_with(USAGE, seq=1.5), "envelope.seq"),
    "records type": (envelope_with(USAGE, records={}), "envelope.records"),
    "record shape": (envelope_with(USAGE, records=[["u:f:api"]]), "envelope.records[0]"),
    "record version": (
        envelope_with(USAGE, records=[["u:f:api", "7"]]),
        "envelope.records[0][1]",
    ),
    "record version range": (
        envelope_with(USAGE, records=[["u:f:api", -(2**63)]]),
        "envelope.records[0][1]",
    ),
    "usage writes another field": (
        envelope_with(USAGE, records=[["u:f:other", 7]]),
        "a usage event writes exactly 'u:f:api'",
    ),
    "usage names two targets": (
        envelope_with(USAGE, currencyId="credits"),
        "exactly one of feature_id and currency_id",
    ),
    "usage writes the state": (
        envelope_with(USAGE, records=[["state", 7]]),
        "a usage event writes exactly",
    ),
    "state first": (
        envelope_with(STATE, records=[["u:f:api", 1], ["state", 4]]),
        "envelope.records[0]: must be 'state'",
    ),
    "state twice": (
        envelope_with(STATE, records=[["state", 4], ["state", 4]]),
        "listed twice",
    ),
    "foreign field": (
        envelope_with(STATE, records=[["state", 4], ["epoch", 4]]),
        "'epoch' is not a usage field",
    ),
    "deletion with records": (
        envelope_with(
            ChangeEvent(EventKind.DELETED, 7, "cust-1", None, 9, AT), records=[["state", 9]]
        ),
        "a deletion carries no records",
    ),
    "missing value": (fields_with(USAGE, r0=None), "missing field 'r0'"),
    "truncated value": (fields_with(USAGE, r0=b'{"schemaVersion":1'), "r0: expected a JSON"),
    "empty value": (fields_with(USAGE, r0=b""), "r0: expected a JSON object"),
    "unlisted value": (fields_with(USAGE, r1=b"{}"), "'r1' is not listed"),
    "too many records": (
        envelope_with(STATE, records=[["state", 4]] * 10_001),
        "at most 10000",
    ),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_malformed_entries_are_refused_naming_the_field(
    case: tuple[Callable[[], dict[str, bytes]], str],
) -> None:
    build, reason = case
    with pytest.raises(EntryError) as caught:
        decode_entry(build())
    assert reason in str(caught.value)


def test_encode_refuses_what_is_not_an_event() -> None:
    for payload in (b"[1]", b'{"snapshot": 5}', b'{"usage": {"version": 1}}', b"{nope"):
        with pytest.raises((ValueError, TypeError)):
            encode_entry(1, payload)
