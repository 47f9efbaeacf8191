"""The sidecar's Prometheus metrics.

Each ``Metrics`` owns its registry so several sidecars can live in one process
(tests) without clashing. Counters on the read path are pre-bound per label
value: ``labels()`` on every request would cost more than the decision itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from entitlements.metrics import service_registry
from entitlements.model.state import DenialReason

if TYPE_CHECKING:
    from prometheus_client.core import Metric

    from sidecar.cache.hot_cache import HotCache


LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
    2.5,
)

# Propagation crosses processes and networks: milliseconds when healthy, seconds under backlog.
PROPAGATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class _HotCacheCollector(Collector):
    """Reads the cache's plain counters at scrape time instead of on every access."""

    def __init__(self, cache: HotCache[Any]) -> None:
        self._cache = cache

    def collect(self) -> Iterator[Metric]:
        stats = self._cache.stats
        for name, doc, value in (
            ("sidecar_cache_hits", "Hot cache hits.", stats.hits),
            ("sidecar_cache_misses", "Hot cache misses.", stats.misses),
            (
                "sidecar_cache_evictions",
                "Entries evicted to stay within the byte bound.",
                stats.evictions,
            ),
            (
                "sidecar_cache_rejections",
                "Entries larger than the whole cache, not stored.",
                stats.rejections,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)
        yield GaugeMetricFamily(
            "sidecar_cache_bytes", "Bytes charged to the hot cache.", value=self._cache.bytes_used
        )
        yield GaugeMetricFamily(
            "sidecar_cache_max_bytes", "Byte bound of the hot cache.", value=self._cache.max_bytes
        )
        yield GaugeMetricFamily(
            "sidecar_cache_entries", "Entries in the hot cache.", value=len(self._cache)
        )


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or service_registry()
        r = self.registry
        self.request_latency = Histogram(
            "sidecar_grpc_request_duration_seconds",
            "gRPC handling time per method.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        decisions = Counter(
            "sidecar_decisions",
            "Entitlement answers by access-denied reason.",
            ["reason"],
            registry=r,
        )
        self.decisions = {reason: decisions.labels(reason.value) for reason in DenialReason}
        self.granted = decisions.labels("GRANTED")
        self.fallbacks = Counter(
            "sidecar_fallbacks", "Answers served from fallback values.", ["method"], registry=r
        )
        self.network_errors = Counter(
            "sidecar_network_request_errors", "Failed calls to the entitlement source.", registry=r
        )
        self.initialization_errors = Counter(
            "sidecar_initialization_errors",
            "Start-up problems that did not stop the sidecar.",
            registry=r,
        )
        self.source_latency = Histogram(
            "sidecar_source_fetch_duration_seconds",
            "Time to fetch one customer's state from the source.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        stale = Counter(
            "sidecar_stale_served",
            "Expired copies served because the source failed, by the tier that held them.",
            ["tier"],
            registry=r,
        )
        self.stale_served = stale.labels("hot")
        self.oldest_stale_served = Gauge(
            "sidecar_oldest_stale_served_seconds",
            "Age (since last confirmed) of the oldest stale or unconfirmed hot-cache entry "
            "served since the change stream was last live.",
            registry=r,
        )
        self.stale_served_redis = stale.labels("redis")
        self.invalid_requests = Counter(
            "sidecar_invalid_requests",
            "Requests rejected with INVALID_ARGUMENT.",
            ["method"],
            registry=r,
        )
        # The Redis tier's; they stay at zero without it.
        self.redis_client_errors = Counter(
            "sidecar_redis_client_errors",
            "Failed Redis operations (the read or write went on without Redis).",
            registry=r,
        )
        self.redis_hits = Counter("sidecar_redis_hits", "Reads answered from Redis.", registry=r)
        self.redis_misses = Counter(
            "sidecar_redis_misses", "Reads Redis could not answer.", registry=r
        )
        self.redis_breaker_open = Gauge(
            "sidecar_redis_breaker_open",
            "1 while the Redis circuit breaker is open: reads skip Redis until a probe answers.",
            registry=r,
        )
        self.refetch_lock_waits = Counter(
            "sidecar_refetch_lock_waits",
            "Redis misses that waited for another process's refetch instead of fetching.",
            registry=r,
        )
        self.invalid_api_key_errors = Counter(
            "sidecar_invalid_api_key_errors",
            "Calls the source refused because of the API key (SERVER_API_KEY).",
            registry=r,
        )
        self.backend_synced = Gauge(
            "sidecar_backend_synced",
            "1 while the source's change stream is live (or offline mode); 0 while the sidecar "
            "serves without it (a degraded start, or the stream lost).",
            registry=r,
        )
        self.propagation = Histogram(
            "sidecar_propagation_seconds",
            "Time from a change's commit to its visibility in this sidecar.",
            buckets=PROPAGATION_BUCKETS,
            registry=r,
        )

        self.usage_retries = Counter(
            "sidecar_usage_retries",
            "Usage reports sent upstream again after a transient failure (their idempotency "
            "keys make upstream count them once).",
            registry=r,
        )
        # The event spool's (SPOOL_DIR); they stay at zero without it.
        self.spool_events = Gauge(
            "sidecar_spool_events", "Events acknowledged and waiting for upstream.", registry=r
        )
        self.spool_bytes = Gauge(
            "sidecar_spool_bytes",
            "Bytes waiting in the spool, events and buffered usage (bounded by SPOOL_MAX_BYTES).",
            registry=r,
        )
        self.spool_oldest_age = Gauge(
            "sidecar_spool_oldest_age_seconds",
            "How long the oldest waiting event has waited (0 when none).",
            registry=r,
        )
        self.spool_shipped = Counter(
            "sidecar_spool_shipped", "Spooled events upstream acknowledged.", registry=r
        )
        self.spool_ship_retries = Counter(
            "sidecar_spool_ship_retries",
            "Failed attempts to ship a batch of spooled events (kept and sent again).",
            registry=r,
        )
        self.spool_rejected = Counter(
            "sidecar_spool_rejected",
            "Spooled events upstream refused for good (logged with their keys and dropped).",
            registry=r,
        )
        self.spool_full = Counter(
            "sidecar_spool_full",
            "ReportEvents calls refused with RESOURCE_EXHAUSTED because the spool was full.",
            registry=r,
        )
        self.spool_ship_latency = Histogram(
            "sidecar_spool_ship_duration_seconds",
            "Time upstream took to ingest one shipped batch.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # Buffered usage (USAGE_BUFFERING): its own queue in the spool, its own shipper.
        self.usage_buffered = Counter(
            "sidecar_usage_buffered",
            "Usage reports acknowledged locally (spooled) because upstream was unreachable, or "
            "because earlier reports of the customer were still spooled.",
            registry=r,
        )
        self.spool_usage = Gauge(
            "sidecar_spool_usage_reports",
            "Usage reports acknowledged locally and waiting for upstream.",
            registry=r,
        )
        self.spool_usage_oldest_age = Gauge(
            "sidecar_spool_usage_oldest_age_seconds",
            "How long the oldest buffered usage report has waited (0 when none).",
            registry=r,
        )
        self.spool_usage_shipped = Counter(
            "sidecar_spool_usage_shipped",
            "Buffered usage reports upstream acknowledged.",
            registry=r,
        )
        self.spool_usage_ship_retries = Counter(
            "sidecar_spool_usage_ship_retries",
            "Failed attempts to ship a batch of buffered usage reports (kept and sent again).",
            registry=r,
        )
        self.spool_usage_rejected = Counter(
            "sidecar_spool_usage_rejected",
            "Buffered usage reports upstream refused for good (logged with their keys, dropped).",
            registry=r,
        )
        self.spool_usage_ship_latency = Histogram(
            "sidecar_spool_usage_ship_duration_seconds",
            "Time upstream took to ingest one shipped batch of buffered usage.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def watch_spool(self, spool: Any) -> None:
        """Report an EventSpool's depth (and its usage queue's) at every scrape."""
        self.spool_events.set_function(lambda: float(spool.events))
        self.spool_bytes.set_function(lambda: float(spool.bytes + spool.usage.bytes))
        self.spool_oldest_age.set_function(spool.oldest_age)
        self.spool_usage.set_function(lambda: float(spool.usage.count))
        self.spool_usage_oldest_age.set_function(spool.usage.oldest_age)

    def watch_cache(self, cache: HotCache[Any]) -> None:
        self.registry.register(_HotCacheCollector(cache))
