"""The persistent cache service: keeps the shared Redis cache in step with upstream.

Consumes upstream's change stream (``{prefix}:changes``) with a Redis consumer group and writes
every event to the cache with versioned writes; rebuilds the cache from upstream's snapshot when
it was lost or the stream cannot catch it up. Stateless and horizontally scalable. Design,
configuration and operations: ``docs/persistent-cache.md``.
"""
