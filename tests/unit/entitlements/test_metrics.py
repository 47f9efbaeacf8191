"""Each service's registry carries prometheus-client's process and runtime metrics."""

from __future__ import annotations

from prometheus_client import generate_latest

from entitlements.metrics import service_registry
from persistent_cache.metrics import Metrics as PersistentCacheMetrics
from sidecar.observability import Metrics as SidecarMetrics

RUNTIME = ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info{")


def test_a_service_registry_has_the_runtime_collectors() -> None:
    text = generate_latest(service_registry()).decode()
    for name in (*RUNTIME, "python_gc_objects_collected_total"):
        assert name in text, name


def test_every_service_registry_has_them() -> None:
    """Two services in one process (tests, the demo) must not clash over the shared collectors."""
    for registry in (SidecarMetrics().registry, PersistentCacheMetrics().registry):
        text = generate_latest(registry).decode()
        for name in RUNTIME:
            assert name in text, name
