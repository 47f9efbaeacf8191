"""Upstream's change stream entries: how an event is laid out in ``P:changes``, and back.

An entry carries the event split the way the cache stores it, so the persistent cache can write
it without decoding the state model and encoding it again (which cost it ~90% of its CPU):

- ``seq``: the event's position in upstream's feed (decimal);
- ``envelope``: JSON of the event without its payload: ``schemaVersion``, ``kind``, ``seq``,
  ``customerId``, ``resourceId``, ``version``, ``committedAt`` (epoch ms), ``featureId`` or
  ``currencyId`` for usage, and ``records``: ``[[hash field, version], ...]``;
- ``r0`` .. ``rN-1``: the value of each record, byte for byte what the state hash stores
  (:func:`sidecar.model.state.encode_state` / ``encode_usage`` JSON).

Values are addressed by position rather than by hash field so that no feature id, however odd,
can make two fields collide. The consumer checks the envelope strictly (types, ranges, which
fields a kind may write) and the values only for shape (a JSON object's braces): they were
encoded by upstream with the same encoder the model path uses, which a property test pins.

Entries with a single ``event`` field (the full event JSON, as published before this layout)
are still consumed, through the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sidecar.cache.hash_writes import HashWrite, usage_field, version_text
from sidecar.cache.redis_keys import (
    CREDIT_USAGE_PREFIX,
    FEATURE_USAGE_PREFIX,
    STATE_FIELD,
    credit_usage_field,
    feature_usage_field,
)
from sidecar.model.events import EVENT_SCHEMA_VERSION, EventKind

SEQ_FIELD = "seq"
ENVELOPE_FIELD = "envelope"
#: The field of entries published before the envelope layout: the whole event as JSON.
LEGACY_EVENT_FIELD = "event"
#: More records than this in one event is not something upstream produces; refuse it early.
MAX_RECORDS = 10_000

_KINDS = {kind.value: kind for kind in EventKind}


class EntryError(ValueError):
    """The entry cannot be written; the message names the offending field."""


def value_field(index: int) -> str:
    return f"r{index}"


def _dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def encode_entry(seq: int, payload: str | bytes) -> dict[str, str | bytes]:
    """The stream fields of one event, from its JSON (``sidecar.model.events.encode_event``).

    Raises ValueError (or TypeError) when ``payload`` is not such an event; the publisher then
    falls back to the legacy single-field entry so the consumer parks it with a precise reason.
    """
    body = json.loads(payload)
    if not isinstance(body, dict):
        raise ValueError("an event must be a JSON object")
    snapshot = body.pop("snapshot", None)
    usage = body.pop("usage", None)
    records: list[list[Any]] = []
    values: list[bytes] = []

    def add(field: str, record: Any) -> None:
        if not isinstance(record, dict):
            raise ValueError(f"record {field!r} must be a JSON object")
        records.append([field, record["version"]])
        values.append(_dumps(record))

    if snapshot is not None:
        if not isinstance(snapshot, dict):
            raise ValueError("snapshot must be a JSON object")
        # What stays once the usage maps are popped is exactly encode_state_dict's output,
        # keys in the same order, so the bytes equal encode_state's.
        feature_usage = snapshot.pop("featureUsage", None) or {}
        credit_usage = snapshot.pop("creditUsage", None) or {}
        add(STATE_FIELD, snapshot)
        for feature_id, record in feature_usage.items():
            add(feature_usage_field(feature_id), record)
        for currency_id, record in credit_usage.items():
            add(credit_usage_field(currency_id), record)
    if usage is not None:
        add(usage_field(body.get("featureId"), body.get("currencyId")), usage)
    body["records"] = records
    fields: dict[str, str | bytes] = {SEQ_FIELD: str(seq), ENVELOPE_FIELD: _dumps(body)}
    for index, value in enumerate(values):
        fields[value_field(index)] = value
    return fields


def legacy_entry(seq: int, payload: str | bytes) -> dict[str, str | bytes]:
    return {SEQ_FIELD: str(seq), LEGACY_EVENT_FIELD: payload}


# ------------------------------------------------------------------------------------ decoding


def _int(envelope: Mapping[str, Any], key: str) -> int:
    value = envelope.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise EntryError(f"envelope.{key}: expected an integer, got {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _optional_text(envelope: Mapping[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EntryError(f"envelope.{key}: expected a string or null, got {_kind(value)}")
    return value


def decode_entry(fields: Mapping[str, bytes]) -> HashWrite:
    """The write an envelope entry stands for; :class:`EntryError` names what is wrong."""
    raw = fields.get(ENVELOPE_FIELD)
    if raw is None:
        raise EntryError(f"missing field {ENVELOPE_FIELD!r}")
    try:
        envelope = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EntryError(f"envelope: not valid JSON ({exc})") from exc
    if not isinstance(envelope, dict):
        raise EntryError(f"envelope: expected an object, got {_kind(envelope)}")
    kind, customer_id, resource_id, version, committed_at = _header(envelope)
    listed = envelope.get("records")
    if not isinstance(listed, list):
        raise EntryError(f"envelope.records: expected an array, got {_kind(listed)}")
    if len(listed) > MAX_RECORDS:
        raise EntryError(f"envelope.records: {len(listed)} records, at most {MAX_RECORDS}")
    names = _check_names(kind, envelope, listed)
    records: list[str | bytes] = []
    for index, (name, record_version) in enumerate(zip(names, listed, strict=True)):
        value = fields.get(value_field(index))
        if value is None:
            raise EntryError(f"missing field {value_field(index)!r} (value of {name!r})")
        # The values are passed through unparsed; this catches truncation and mix-ups cheaply.
        if value[:1] != b"{" or value[-1:] != b"}":
            raise EntryError(f"{value_field(index)}: expected a JSON object")
        records += (name, _record_version(index, record_version[1]), value)
    if value_field(len(listed)) in fields:
        raise EntryError(f"field {value_field(len(listed))!r} is not listed in envelope.records")
    return HashWrite(
        customer_id,
        resource_id,
        version,
        committed_at,
        tuple(records),
        delete=kind is EventKind.DELETED,
    )


def _header(envelope: Mapping[str, Any]) -> tuple[EventKind, str, str | None, int, int]:
    schema = envelope.get("schemaVersion")
    if schema != EVENT_SCHEMA_VERSION or isinstance(schema, bool):
        raise EntryError(f"envelope.schemaVersion: unsupported schema version {schema!r}")
    kind = _KINDS.get(envelope.get("kind"))  # type: ignore[arg-type]
    if kind is None:
        raise EntryError(f"envelope.kind: unknown kind {envelope.get('kind')!r}")
    customer_id = envelope.get("customerId")
    if not isinstance(customer_id, str) or not customer_id:
        raise EntryError("envelope.customerId: expected a non-empty string")
    version = _int(envelope, "version")
    try:
        version_text(version)
    except ValueError as exc:
        raise EntryError(f"envelope.version: {exc}") from exc
    _int(envelope, "seq")
    resource_id = _optional_text(envelope, "resourceId")
    return kind, customer_id, resource_id, version, _int(envelope, "committedAt")


def _record_version(index: int, version: object) -> str:
    try:
        return version_text(version)
    except (TypeError, ValueError) as exc:
        raise EntryError(f"envelope.records[{index}][1]: {exc}") from exc


def _check_names(kind: EventKind, envelope: Mapping[str, Any], listed: list[Any]) -> list[str]:
    """The record fields, checked against what an event of ``kind`` may write."""
    names: list[str] = []
    for index, item in enumerate(listed):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
            raise EntryError(f"envelope.records[{index}]: expected [field, version]")
        names.append(item[0])
    if len(set(names)) != len(names):
        raise EntryError("envelope.records: a field is listed twice")
    if kind is EventKind.DELETED:
        if names:
            raise EntryError("envelope.records: a deletion carries no records")
    elif kind is EventKind.USAGE:
        try:
            expected = usage_field(
                _optional_text(envelope, "featureId"), _optional_text(envelope, "currencyId")
            )
        except ValueError as exc:
            raise EntryError(f"envelope: {exc}") from exc
        if names != [expected]:
            raise EntryError(f"envelope.records: a usage event writes exactly {expected!r}")
    else:
        if not names or names[0] != STATE_FIELD:
            raise EntryError(f"envelope.records[0]: must be {STATE_FIELD!r}")
        for index, name in enumerate(names[1:], start=1):
            if not name.startswith((FEATURE_USAGE_PREFIX, CREDIT_USAGE_PREFIX)):
                raise EntryError(f"envelope.records[{index}]: {name!r} is not a usage field")
    return names
