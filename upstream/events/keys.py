"""Redis names upstream publishes to; defined with every other key in entitlements.redis.keys."""

from __future__ import annotations

from entitlements.redis.keys import change_stream


def change_stream_key(environment_prefix: str) -> str:
    """The Redis Stream upstream appends change events to."""
    return change_stream(environment_prefix)
