"""Every Redis key, channel and stream name, in one place.

Layout (``P`` = REDIS_ENVIRONMENT_PREFIX, ``C`` = customer id, ``R`` = resource id or empty):

- ``P:{c:C}:s:R`` — a hash holding one (customer, resource) state and its usage records:
  ``state``/``v:state`` (entitlement state JSON and its version), ``u:f:<feature>``/
  ``v:u:f:<feature>`` (feature usage records) and ``u:c:<currency>``/``v:u:c:<currency>``
  (wallet consumption records), and ``v:deleted`` (the newest deletion's version: nothing
  committed before it is kept or written again). Versions sit under a prefix of their own, so
  no feature or currency id (one ending in ``:v``, say) can make a value and a version share a
  field. One hash per key makes a read one round trip
  and lets one script compare-and-write any record atomically.
- ``P:{c:C}:lock:R`` — the cross-process refetch lock; ``P:refetch:{c:C}:R`` its pub/sub channel.
- ``P:invalidations`` — pub/sub channel announcing every write (customer, resource, version).
- ``P:epoch`` — marker the persistent cache writes after a full sync; missing = Redis lost its data.
- ``P:changes`` — the upstream change stream; ``P:changes:dead`` — dead letters.
- ``P:{spool}:events``, ``P:{spool}:usage`` — the sidecars' shared spool (``SPOOL_BACKEND=redis``)
  of raw events and buffered usage; ``P:{spool}:<kind>:bytes`` their payload bytes;
  ``P:{spool}:lease`` the one sidecar shipping them. One hash tag, so its scripts may touch them
  all.

Every key of one customer carries the hash tag ``{c:C}``, so it lives in one Redis Cluster slot and
a script may touch several of them.
"""

from __future__ import annotations

STATE_FIELD = "state"
FEATURE_USAGE_PREFIX = "u:f:"
CREDIT_USAGE_PREFIX = "u:c:"
VERSION_PREFIX = "v:"


def _tag(customer_id: str) -> str:
    return "{c:" + customer_id + "}"


def state_key(prefix: str, customer_id: str, resource_id: str | None) -> str:
    return f"{prefix}:{_tag(customer_id)}:s:{resource_id or ''}"


def lock_key(prefix: str, customer_id: str, resource_id: str | None) -> str:
    return f"{prefix}:{_tag(customer_id)}:lock:{resource_id or ''}"


def refetch_channel(prefix: str, customer_id: str, resource_id: str | None) -> str:
    return f"{prefix}:refetch:{_tag(customer_id)}:{resource_id or ''}"


def invalidation_channel(prefix: str) -> str:
    return f"{prefix}:invalidations"


def epoch_key(prefix: str) -> str:
    return f"{prefix}:epoch"


def change_stream(prefix: str) -> str:
    return f"{prefix}:changes"


def dead_letter_stream(prefix: str) -> str:
    return f"{prefix}:changes:dead"


def feature_usage_field(feature_id: str) -> str:
    return FEATURE_USAGE_PREFIX + feature_id


def credit_usage_field(currency_id: str) -> str:
    return CREDIT_USAGE_PREFIX + currency_id


def version_field(field: str) -> str:
    return VERSION_PREFIX + field


def ttl_ms(ttl_seconds: int) -> int:
    """Milliseconds for PEXPIRE; negative TTL means the keys never expire (-1 here)."""
    if ttl_seconds == 0:
        raise ValueError("a TTL of 0 would expire every key at once; use a negative TTL for none")
    return ttl_seconds * 1000 if ttl_seconds > 0 else -1


def spool_stream(prefix: str, kind: str) -> str:
    return f"{prefix}:{{spool}}:{kind}"


def spool_bytes(prefix: str, kind: str) -> str:
    return f"{prefix}:{{spool}}:{kind}:bytes"


def spool_lease(prefix: str) -> str:
    return f"{prefix}:{{spool}}:lease"
