"""The entitlement source interface.

The read path and the API layer see only this Protocol, so a new backend (the
HTTP upstream, a test double) plugs in without touching either.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from entitlements.model.state import CustomerSnapshot, UsageRecord
from sidecar.model.usage import RawEvent, UsageAck, UsageReport


@dataclass(frozen=True, slots=True)
class SnapshotChanged:
    """A (customer, resource) has a new entitlement state (usage included)."""

    snapshot: CustomerSnapshot


@dataclass(frozen=True, slots=True)
class UsageChanged:
    customer_id: str
    resource_id: str | None
    # Exactly one of feature_id / currency_id is set.
    feature_id: str | None
    currency_id: str | None
    record: UsageRecord


@dataclass(frozen=True, slots=True)
class CustomerRemoved:
    """Drop what is held for the customer (all resources when resource_id is None)."""

    customer_id: str
    resource_id: str | None = None


@dataclass(frozen=True, slots=True)
class Invalidated:
    """A shared tier (Redis) holds a newer state for the key: drop the hot copy, reread it.

    It carries no state because the shared tier is one round trip away and already holds
    the merged, versioned truth; shipping the state would only duplicate it.
    """

    customer_id: str
    resource_id: str | None
    # When the change was committed at its origin (epoch ms), to measure propagation.
    committed_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Resync:
    """The change stream is live (again) but may have missed changes: what is held stays as a
    stale copy, revalidated before it is trusted."""


@dataclass(frozen=True, slots=True)
class Resumed:
    """The change stream is live again and every change missed meanwhile has been delivered
    (replayed from the source's durable log): what is held can be trusted as before."""


Change = SnapshotChanged | UsageChanged | CustomerRemoved | Invalidated | Resync | Resumed


class EntitlementSource(Protocol):
    async def fetch(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        """The current state; raises SourceUnavailable or SourceRejected."""
        ...

    async def reload(self, customer_id: str, resource_id: str | None) -> CustomerSnapshot:
        """The state from the source of truth itself, past any shared cache (ReloadEntitlements);
        raises like fetch."""
        ...

    async def report_usage(
        self, reports: Sequence[UsageReport], *, deadline: float | None = None
    ) -> list[UsageAck]:
        """Forward usage; acknowledgements come back in request order. Reports that carry an
        idempotency key may be retried on transient failures until ``deadline`` (monotonic
        clock; None: the source's own retry budget)."""
        ...

    async def report_events(self, events: Sequence[RawEvent]) -> None: ...

    def changes(self) -> AsyncIterator[Change]:
        """Changes as they happen; starts with Resync after every (re)connect."""
        ...

    async def aclose(self) -> None: ...
