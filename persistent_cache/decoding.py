"""Stream entry -> the write it stands for, or the reason it is poison.

Entries in the envelope layout (:mod:`entitlements.redis.stream_entry`) are passed through: their
record values are already what the cache stores. Entries in the legacy layout (one ``event``
field with the whole event) go through the state model. Either way, an entry that cannot be
decoded now never will be: retrying it would block the group forever, so the consumer parks it
in the dead-letter stream with this reason and moves on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from entitlements.model.events import decode_event
from entitlements.redis.hash_writes import HashWrite, event_write
from entitlements.redis.stream_entry import (
    ENVELOPE_FIELD,
    LEGACY_EVENT_FIELD,
    EntryError,
    decode_entry,
)


@dataclass(frozen=True, slots=True)
class Poison:
    reason: str


def decode_delivery(fields: Mapping[str, bytes]) -> HashWrite | Poison:
    if ENVELOPE_FIELD in fields:
        try:
            return decode_entry(fields)
        except EntryError as exc:
            return Poison(str(exc))
    payload = fields.get(LEGACY_EVENT_FIELD)
    if payload is None:
        return Poison(f"missing field {ENVELOPE_FIELD!r} (or the legacy {LEGACY_EVENT_FIELD!r})")
    try:
        return event_write(decode_event(payload))
    except Exception as exc:
        # Any failure to decode (bad JSON, wrong types, unknown schema version, a decoder bug on
        # an odd shape) makes the entry poison; the reason names the offending path when it can.
        return Poison(f"{type(exc).__name__}: {exc}")
