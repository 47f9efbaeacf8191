"""What the cache announces on ``P:invalidations`` after a write changed a key.

Sidecars drop or refetch their hot copy when they hear of a newer version; ``t`` (the upstream
commit time, when known) feeds their commit -> visible propagation histogram.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii

from entitlements.model.state import StateDecodeError, load_json

_json_string: Callable[[str], str] = encode_basestring_ascii


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What the store publishes on the invalidation channel after a write changed a key."""

    customer_id: str
    resource_id: str | None
    version: int
    committed_at_ms: int | None = None

    def encode(self) -> str:
        # Spelled out rather than json.dumps of a dict: one of these is built per write, at the
        # persistent cache's full rate. The bytes are what json.dumps(separators=(",", ":"))
        # gives (a test compares them).
        resource = "null" if self.resource_id is None else _json_string(self.resource_id)
        committed = "null" if self.committed_at_ms is None else int(self.committed_at_ms)
        return (
            f'{{"c":{_json_string(self.customer_id)},"r":{resource},'
            f'"v":{int(self.version)},"t":{committed}}}'
        )

    @classmethod
    def decode(cls, payload: str | bytes) -> Invalidation:
        """Parse a published payload; raises :class:`StateDecodeError` when it is malformed."""
        data = load_json(payload)
        if not isinstance(data, dict):
            raise StateDecodeError("$", "expected an object")
        customer_id = data.get("c")
        if not isinstance(customer_id, str) or not customer_id:
            raise StateDecodeError("$.c", "expected a non-empty string")
        resource_id = data.get("r")
        if resource_id is not None and not isinstance(resource_id, str):
            raise StateDecodeError("$.r", "expected a string or null")
        version = data.get("v")
        if isinstance(version, bool) or not isinstance(version, int):
            raise StateDecodeError("$.v", "expected an integer")
        committed = data.get("t")
        if committed is not None and (
            isinstance(committed, bool) or not isinstance(committed, int)
        ):
            raise StateDecodeError("$.t", "expected epoch milliseconds or null")
        return cls(customer_id, resource_id or None, version, committed)
