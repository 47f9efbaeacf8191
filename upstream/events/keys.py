"""Redis names upstream publishes to; defined with every other key in sidecar.cache.redis_keys."""

from __future__ import annotations

from sidecar.cache.redis_keys import change_stream


def change_stream_key(environment_prefix: str) -> str:
    """The Redis Stream upstream appends change events to."""
    return change_stream(environment_prefix)
