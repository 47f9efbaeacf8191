"""Prometheus metrics of the persistent cache (``persistent_cache_*``).

Each ``Metrics`` owns its registry so several service instances can live in one process (tests
run two replicas side by side) without clashing.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from entitlements.metrics import service_registry

# Writes are one pipelined round trip per batch: sub-millisecond to a few hundred ms.
APPLY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Commit-to-Redis spans the outbox relay, the stream and this consumer: ms to minutes when behind.
PROPAGATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RESYNC_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or service_registry()
        r = self.registry
        self.consumed = Counter(
            "persistent_cache_events_consumed",
            "Stream entries taken in by this replica (read or reclaimed).",
            registry=r,
        )
        self.applied = Counter(
            "persistent_cache_events_applied",
            "Events that changed at least one record in Redis.",
            registry=r,
        )
        self.stale = Counter(
            "persistent_cache_events_stale",
            "Events older than what Redis held: written nowhere (versioned writes).",
            registry=r,
        )
        self.dead_lettered = Counter(
            "persistent_cache_events_dead_lettered",
            "Entries moved to the dead-letter stream (undecodable or unwritable), then acked.",
            registry=r,
        )
        self.reclaimed = Counter(
            "persistent_cache_events_reclaimed",
            "Entries claimed from consumers idle longer than CLAIM_IDLE_MS.",
            registry=r,
        )
        self.apply_seconds = Histogram(
            "persistent_cache_apply_duration_seconds",
            "Time to write one batch of events to Redis.",
            buckets=APPLY_BUCKETS,
            registry=r,
        )
        self.commit_to_redis = Histogram(
            "persistent_cache_commit_to_redis_seconds",
            "From upstream's commit (committedAt) to the event being written to Redis.",
            buckets=PROPAGATION_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "persistent_cache_consumer_lag",
            "Entries of the stream the group has not read yet (pending count if unknown).",
            registry=r,
        )
        self.pending = Gauge(
            "persistent_cache_pending_entries",
            "Entries delivered to the group's consumers and not acked yet.",
            registry=r,
        )
        self.errors = Counter(
            "persistent_cache_errors",
            "Transient failures, by the component that failed.",
            ["component"],
            registry=r,
        )
        self.resyncs = Counter(
            "persistent_cache_resyncs",
            "Full resyncs from upstream, by trigger and outcome.",
            ["trigger", "outcome"],
            registry=r,
        )
        self.resync_seconds = Histogram(
            "persistent_cache_resync_duration_seconds",
            "Duration of successful resyncs.",
            buckets=RESYNC_BUCKETS,
            registry=r,
        )
