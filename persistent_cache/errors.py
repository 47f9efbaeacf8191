"""The persistent cache's own failures.

Cache failures are ``entitlements.errors.CacheUnavailable``.

PersistentCacheError
├── StreamUnavailable     the event stream's Redis failed (connection, timeout, unexpected reply)
└── UpstreamUnavailable   upstream's HTTP API failed during a resync (network, 5xx, bad payload)

All are transient from the service's point of view: the consumer backs off and retries, a failed
resync is retried on the next check.
"""

from __future__ import annotations


class PersistentCacheError(Exception):
    """Base of every error the persistent cache raises on purpose."""


class StreamUnavailable(PersistentCacheError):
    pass


class UpstreamUnavailable(PersistentCacheError):
    pass
