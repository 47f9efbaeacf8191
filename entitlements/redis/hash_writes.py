"""What one change does to a (customer, resource) state hash, encoded and ready to send.

A :class:`HashWrite` is the unit :class:`~entitlements.redis.store.RedisStore` writes: the
record triplets (field, version, value) of one snapshot or one usage record, or a deletion,
plus what the invalidation announces. Building one from the state model (this module) and
taking one straight off the change stream without touching the model
(:mod:`entitlements.redis.stream_entry`) produce the same bytes, which is what lets the persistent
cache pass upstream's encoding through instead of decoding and re-encoding every event.
"""

from __future__ import annotations

from dataclasses import dataclass

from entitlements.model.events import ChangeEvent, EventKind
from entitlements.model.state import (
    CustomerSnapshot,
    UsageRecord,
    encode_state,
    encode_usage,
    epoch_ms,
)
from entitlements.redis.keys import STATE_FIELD, credit_usage_field, feature_usage_field

#: Versions travel as decimal text and the write script compares them exactly within int64.
MAX_VERSION = 2**63


@dataclass(frozen=True, slots=True)
class HashWrite:
    customer_id: str
    resource_id: str | None
    #: The version the invalidation announces (the state's or the usage record's).
    version: int
    committed_at_ms: int | None
    #: Flat (field, version, value) triplets with distinct fields; empty for a deletion.
    records: tuple[str | bytes, ...] = ()
    delete: bool = False


def version_text(version: object) -> str:
    """``version`` as the canonical decimal the write script compares; rejects what it cannot."""
    # A bool or float would reach the script in a form it cannot order.
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"a version must be an int, not {type(version).__name__}")
    if not -MAX_VERSION < version < MAX_VERSION:
        raise ValueError(f"version {version} is outside the int64 range")
    return str(version)


def usage_field(feature_id: str | None, currency_id: str | None) -> str:
    """The hash field of a usage record: a feature's, or a credit currency's (exactly one)."""
    if feature_id and not currency_id:
        return feature_usage_field(feature_id)
    if currency_id and not feature_id:
        return credit_usage_field(currency_id)
    raise ValueError("exactly one of feature_id and currency_id is required")


def snapshot_write(snapshot: CustomerSnapshot, committed_at_ms: int | None = None) -> HashWrite:
    state = snapshot.state
    records: list[str | bytes] = [STATE_FIELD, version_text(state.version), encode_state(state)]
    for feature_id, record in snapshot.feature_usage.items():
        records += [feature_usage_field(feature_id), version_text(record.version)]
        records.append(encode_usage(record))
    for currency_id, record in snapshot.credit_usage.items():
        records += [credit_usage_field(currency_id), version_text(record.version)]
        records.append(encode_usage(record))
    return HashWrite(
        state.customer_id, state.resource_id or None, state.version, committed_at_ms, tuple(records)
    )


def usage_write(
    customer_id: str,
    resource_id: str | None,
    record: UsageRecord,
    *,
    feature_id: str | None = None,
    currency_id: str | None = None,
    committed_at_ms: int | None = None,
) -> HashWrite:
    field = usage_field(feature_id, currency_id)
    records = (field, version_text(record.version), encode_usage(record))
    return HashWrite(customer_id, resource_id or None, record.version, committed_at_ms, records)


def event_write(event: ChangeEvent) -> HashWrite:
    """The write an event stands for; ValueError/TypeError when the event is inconsistent."""
    committed = epoch_ms(event.committed_at)
    if event.kind is EventKind.ENTITLEMENTS:
        snapshot = event.snapshot
        if snapshot is None:
            raise ValueError(f"event {event.seq}: an entitlements event needs a snapshot")
        # The key comes from the snapshot; a mismatch would file one customer's state under
        # another's key.
        if (snapshot.state.customer_id, snapshot.state.resource_id or None) != (
            event.customer_id,
            event.resource_id or None,
        ):
            raise ValueError(f"event {event.seq}: snapshot belongs to another key")
        return snapshot_write(snapshot, committed)
    if event.kind is EventKind.USAGE:
        if event.usage is None:
            raise ValueError(f"event {event.seq}: a usage event needs a usage record")
        return usage_write(
            event.customer_id,
            event.resource_id,
            event.usage,
            feature_id=event.feature_id,
            currency_id=event.currency_id,
            committed_at_ms=committed,
        )
    version_text(event.version)
    return HashWrite(
        event.customer_id, event.resource_id or None, event.version, committed, delete=True
    )
