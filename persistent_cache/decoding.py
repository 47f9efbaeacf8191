"""Stream entry -> ChangeEvent, or the reason it is poison.

An entry that cannot be decoded now never will be: retrying it would block the group forever,
so the consumer parks it in the dead-letter stream with this reason and moves on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sidecar.model.events import ChangeEvent, decode_event


@dataclass(frozen=True, slots=True)
class Poison:
    reason: str


def decode_entry(fields: Mapping[str, bytes]) -> ChangeEvent | Poison:
    payload = fields.get("event")
    if payload is None:
        return Poison("missing field 'event'")
    try:
        return decode_event(payload)
    except Exception as exc:
        # Any failure to decode (bad JSON, wrong types, unknown schema version, a decoder bug on
        # an odd shape) makes the entry poison; the reason names the offending path when it can.
        return Poison(f"{type(exc).__name__}: {exc}")
