"""Change events: what upstream publishes after every committed change.

One schema for every transport (the push channel sidecars subscribe to, the
Redis Stream the persistent cache consumes, the catch-up feed). An event
carries either the full entitlement state of one (customer, resource), one
usage record, or a deletion; plus a monotonic version per record and the
upstream commit time, so consumers apply events in any order and measure
propagation delay. JSON Schema: ``docs/change-event.schema.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from entitlements.model.state import (
    SCHEMA_VERSION,
    CustomerSnapshot,
    JsonReader,
    StateDecodeError,
    UsageRecord,
    decode_snapshot_dict,
    decode_usage_dict,
    encode_snapshot_dict,
    encode_usage_record,
    epoch_ms,
    load_json,
)

EVENT_SCHEMA_VERSION = 1


class EventKind(StrEnum):
    ENTITLEMENTS = "entitlements.updated"
    USAGE = "usage.updated"
    DELETED = "customer.deleted"


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    kind: EventKind
    # Position in upstream's change feed: strictly increasing, the catch-up cursor.
    seq: int
    customer_id: str
    resource_id: str | None
    # Version of the record this event carries (state version, usage version...).
    version: int
    committed_at: datetime
    snapshot: CustomerSnapshot | None = None
    feature_id: str | None = None
    currency_id: str | None = None
    usage: UsageRecord | None = None


def encode_event_dict(event: ChangeEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": EVENT_SCHEMA_VERSION,
        "kind": event.kind.value,
        "seq": event.seq,
        "customerId": event.customer_id,
        "resourceId": event.resource_id,
        "version": event.version,
        "committedAt": epoch_ms(event.committed_at),
    }
    if event.snapshot is not None:
        body["snapshot"] = encode_snapshot_dict(event.snapshot)
    if event.usage is not None:
        body["featureId"] = event.feature_id
        body["currencyId"] = event.currency_id
        body["usage"] = encode_usage_record(event.usage)
    return body


def encode_event(event: ChangeEvent) -> bytes:
    return json.dumps(encode_event_dict(event), separators=(",", ":"), allow_nan=False).encode()


def decode_event_dict(data: object, path: str = "$") -> ChangeEvent:
    reader = JsonReader(data, path)
    version = reader.int_("schemaVersion", default=-1)
    if version != EVENT_SCHEMA_VERSION:
        raise StateDecodeError(f"{path}.schemaVersion", f"unsupported schema version {version}")
    kind = reader.enum("kind", EventKind, required=True)
    assert kind is not None
    committed = reader.time("committedAt")
    if committed is None:
        raise StateDecodeError(f"{path}.committedAt", "is required")
    snapshot = None
    usage = None
    feature_id = currency_id = None
    if kind is EventKind.ENTITLEMENTS:
        raw = reader.raw("snapshot", True)
        snapshot = decode_snapshot_dict(raw, f"{path}.snapshot")
    elif kind is EventKind.USAGE:
        usage = decode_usage_dict(reader.raw("usage", True), f"{path}.usage")
        feature_id = reader.str_("featureId") or None
        currency_id = reader.str_("currencyId") or None
        if (feature_id is None) == (currency_id is None):
            raise StateDecodeError(path, "exactly one of featureId and currencyId is required")
    event = ChangeEvent(
        kind=kind,
        seq=reader.int_("seq"),
        customer_id=reader.req_str("customerId"),
        resource_id=reader.str_("resourceId") or None,
        version=reader.int_("version"),
        committed_at=committed,
        snapshot=snapshot,
        feature_id=feature_id,
        currency_id=currency_id,
        usage=usage,
    )
    if snapshot is not None and (
        snapshot.state.customer_id != event.customer_id
        or snapshot.state.resource_id != event.resource_id
    ):
        raise StateDecodeError(f"{path}.snapshot", "does not match the event's customer/resource")
    return event


def decode_event(payload: bytes | str) -> ChangeEvent:
    return decode_event_dict(load_json(payload))


__all__ = [
    "EVENT_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "ChangeEvent",
    "EventKind",
    "decode_event",
    "decode_event_dict",
    "encode_event",
    "encode_event_dict",
]
