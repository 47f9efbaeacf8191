"""Upstream's change stream entries: how an event is laid out in ``P:changes``, and back.

An entry carries the event split the way the cache stores it, so the persistent cache can write
it without decoding the state model and encoding it again (which cost it ~90% of its CPU):

- ``seq``: the event's position in upstream's feed (decimal);
- ``envelope``: JSON of the event without its payload: ``schemaVersion``, ``kind``, ``seq``,
  ``customerId``, ``resourceId``, ``version``, ``committedAt`` (epoch ms), ``featureId`` or
  ``currencyId`` for usage, and ``records``: ``[[hash field, version], ...]``;
- ``r0`` .. ``rN-1``: the value of each record, byte for byte what the state hash stores
  (:func:`entitlements.model.state.encode_state` / ``encode_usage`` JSON).

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

from entitlements.model.events import EVENT_SCHEMA_VERSION, EventKind
from entitlements.redis.hash_writes import MAX_VERSION, HashWrite, usage_field
from entitlements.redis.keys import (
    CREDIT_USAGE_PREFIX,
    FEATURE_USAGE_PREFIX,
    STATE_FIELD,
    credit_usage_field,
    feature_usage_field,
)

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
    """The stream fields of one event, from its JSON (``entitlements.model.events.encode_event``).

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
# This runs once per event at the persistent cache's full rate, so the checks are written flat
# (exact type tests, no helper call on the good path); the helpers only build error messages.

_VALUE_FIELDS = [value_field(index) for index in range(MAX_RECORDS + 1)]
_USAGE_PREFIXES = (FEATURE_USAGE_PREFIX, CREDIT_USAGE_PREFIX)
_SCHEMA = EVENT_SCHEMA_VERSION
_LOW, _HIGH = -MAX_VERSION, MAX_VERSION
_DECODER = json.JSONDecoder()


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _not_int(path: str, value: object) -> EntryError:
    if type(value) is int:
        return EntryError(f"{path}: version {value} is outside the int64 range")
    return EntryError(f"{path}: expected an integer, got {_kind(value)}")


def _text_or_none(envelope: Mapping[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    if value is None or value == "":
        return None
    if type(value) is not str:
        raise EntryError(f"envelope.{key}: expected a string or null, got {_kind(value)}")
    return value


def _load(raw: bytes | str) -> Any:
    try:
        text = raw.decode() if type(raw) is bytes else raw
        # raw_decode skips json.loads' whitespace handling; upstream writes none. Anything it
        # does not take whole goes through json.loads, which accepts it or says what is wrong.
        envelope, end = _DECODER.raw_decode(text)  # type: ignore[arg-type]
        if end == len(text):
            return envelope
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise EntryError(f"envelope: not valid JSON ({exc})") from exc


def decode_entry(fields: Mapping[str, bytes]) -> HashWrite:
    """The write an envelope entry stands for; :class:`EntryError` names what is wrong."""
    raw = fields.get(ENVELOPE_FIELD)
    if raw is None:
        raise EntryError(f"missing field {ENVELOPE_FIELD!r}")
    envelope = _load(raw)
    if type(envelope) is not dict:
        raise EntryError(f"envelope: expected an object, got {_kind(envelope)}")
    get = envelope.get
    schema = get("schemaVersion")
    if type(schema) is not int or schema != _SCHEMA:
        raise EntryError(f"envelope.schemaVersion: unsupported schema version {schema!r}")
    kind = _KINDS.get(get("kind"))  # type: ignore[arg-type]
    if kind is None:
        raise EntryError(f"envelope.kind: unknown kind {get('kind')!r}")
    customer_id = get("customerId")
    if type(customer_id) is not str or not customer_id:
        raise EntryError("envelope.customerId: expected a non-empty string")
    resource_id = get("resourceId")
    if resource_id is not None and type(resource_id) is not str:
        resource_id = _text_or_none(envelope, "resourceId")
    version = get("version")
    if type(version) is not int or not _LOW < version < _HIGH:
        raise _not_int("envelope.version", version)
    committed_at = get("committedAt")
    if type(committed_at) is not int:
        raise _not_int("envelope.committedAt", committed_at)
    if type(get("seq")) is not int:
        raise _not_int("envelope.seq", get("seq"))
    return HashWrite(
        customer_id,
        resource_id or None,
        version,
        committed_at,
        _records(fields, kind, envelope),
        delete=kind is EventKind.DELETED,
    )


def _records(
    fields: Mapping[str, bytes], kind: EventKind, envelope: Mapping[str, Any]
) -> tuple[str | bytes, ...]:
    listed = envelope.get("records")
    if type(listed) is not list:
        raise EntryError(f"envelope.records: expected an array, got {_kind(listed)}")
    count = len(listed)
    if count > MAX_RECORDS:
        raise EntryError(f"envelope.records: {count} records, at most {MAX_RECORDS}")
    get = fields.get
    names: list[str] = []
    records: list[str | bytes] = []
    for index, item in enumerate(listed):
        if type(item) is not list or len(item) != 2 or type(item[0]) is not str:
            raise EntryError(f"envelope.records[{index}]: expected [field, version]")
        name, record_version = item
        if type(record_version) is not int or not _LOW < record_version < _HIGH:
            raise _not_int(f"envelope.records[{index}][1]", record_version)
        value = get(_VALUE_FIELDS[index])
        if value is None:
            raise EntryError(f"missing field {_VALUE_FIELDS[index]!r} (value of {name!r})")
        # The values are passed through unparsed; this catches truncation and mix-ups cheaply.
        if value[:1] != b"{" or value[-1:] != b"}":
            raise EntryError(f"{_VALUE_FIELDS[index]}: expected a JSON object")
        names.append(name)
        records += (name, str(record_version), value)
    if _VALUE_FIELDS[count] in fields:
        raise EntryError(f"field {_VALUE_FIELDS[count]!r} is not listed in envelope.records")
    _check_names(kind, envelope, names)
    return tuple(records)


def _check_names(kind: EventKind, envelope: Mapping[str, Any], names: list[str]) -> None:
    """Refuse record fields an event of ``kind`` may not write."""
    if len(names) > 1 and len(set(names)) != len(names):
        raise EntryError("envelope.records: a field is listed twice")
    if kind is EventKind.ENTITLEMENTS:
        if not names or names[0] != STATE_FIELD:
            raise EntryError(f"envelope.records[0]: must be {STATE_FIELD!r}")
        for index in range(1, len(names)):
            if not names[index].startswith(_USAGE_PREFIXES):
                raise EntryError(
                    f"envelope.records[{index}]: {names[index]!r} is not a usage field"
                )
    elif kind is EventKind.USAGE:
        feature_id, currency_id = envelope.get("featureId"), envelope.get("currencyId")
        if feature_id is not None and type(feature_id) is not str:
            feature_id = _text_or_none(envelope, "featureId")
        if currency_id is not None and type(currency_id) is not str:
            currency_id = _text_or_none(envelope, "currencyId")
        try:
            expected = usage_field(feature_id, currency_id)
        except ValueError as exc:
            raise EntryError(f"envelope: {exc}") from exc
        if names != [expected]:
            raise EntryError(f"envelope.records: a usage event writes exactly {expected!r}")
    elif names:
        raise EntryError("envelope.records: a deletion carries no records")
