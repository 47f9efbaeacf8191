"""Change events: round trips, validation errors, and the published JSON Schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from entitlements.model.events import (
    ChangeEvent,
    EventKind,
    decode_event,
    encode_event,
    encode_event_dict,
)
from entitlements.model.state import StateDecodeError, UsageRecord
from tests.builders import demo_snapshot

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[4] / "docs" / "change-event.schema.json").read_text()
)
AT = datetime(2026, 6, 1, 12, 30, 0, 123000, tzinfo=UTC)
RECORD = UsageRecord(12.5, AT, datetime(2026, 7, 1, tzinfo=UTC), AT, 7)

EVENTS = {
    "entitlements": ChangeEvent(
        EventKind.ENTITLEMENTS, 3, "cust-1", None, 4, AT, snapshot=demo_snapshot("cust-1")
    ),
    "entitlements-resource": ChangeEvent(
        EventKind.ENTITLEMENTS,
        4,
        "cust-1",
        "site",
        5,
        AT,
        snapshot=demo_snapshot("cust-1", resource_id="site"),
    ),
    "feature-usage": ChangeEvent(
        EventKind.USAGE, 5, "cust-1", None, 7, AT, feature_id="api-calls", usage=RECORD
    ),
    "credit-usage": ChangeEvent(
        EventKind.USAGE, 6, "cust-1", "site", 7, AT, currency_id="ai-credits", usage=RECORD
    ),
    "deleted": ChangeEvent(EventKind.DELETED, 7, "cust-1", None, 9, AT),
}


@pytest.mark.parametrize("event", EVENTS.values(), ids=EVENTS.keys())
def test_round_trip(event: ChangeEvent) -> None:
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize("event", EVENTS.values(), ids=EVENTS.keys())
def test_encoded_events_match_the_published_schema(event: ChangeEvent) -> None:
    jsonschema.validate(encode_event_dict(event), SCHEMA)


def _body(**changes: Any) -> dict[str, Any]:
    body = encode_event_dict(EVENTS["feature-usage"])
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (_body(schemaVersion=2), "$.schemaVersion"),
        (_body(kind="nope"), "$.kind"),
        (_body(kind=...), "$.kind"),
        (_body(committedAt=...), "$.committedAt"),
        (_body(customerId=""), "$.customerId"),
        (_body(usage=...), "$.usage"),
        (_body(currencyId="x"), "$"),
        (_body(featureId=None), "$"),
        (_body(kind="entitlements.updated"), "$.snapshot"),
    ],
    ids=[
        "schema-version",
        "unknown-kind",
        "missing-kind",
        "missing-committed-at",
        "empty-customer",
        "usage-missing",
        "both-targets",
        "no-target",
        "snapshot-missing",
    ],
)
def test_invalid_events_name_the_path(body: dict[str, Any], path: str) -> None:
    with pytest.raises(StateDecodeError) as err:
        decode_event(json.dumps(body))
    assert err.value.path == path


def test_snapshot_must_match_the_event_key() -> None:
    body = encode_event_dict(EVENTS["entitlements"])
    body["customerId"] = "someone-else"
    with pytest.raises(StateDecodeError, match="does not match"):
        decode_event(json.dumps(body))
