"""Prometheus registries for the services' ``/metrics``.

Each service owns its registry (tests run several services in one process, and a shared global
registry would clash), so it misses what prometheus-client's global one carries for free: the
process and runtime collectors. ``service_registry`` puts them back.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)

RUNTIME_COLLECTORS = (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR)


def service_registry() -> CollectorRegistry:
    """A fresh registry with ``process_*``, ``python_info`` and ``python_gc_*``."""
    registry = CollectorRegistry()
    # The global instances describe this process as well as new ones would; registering the
    # same collector object with several registries is what prometheus-client supports.
    for collector in RUNTIME_COLLECTORS:
        registry.register(collector)
    return registry
