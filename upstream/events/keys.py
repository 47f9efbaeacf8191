"""Redis key names shared by upstream and the persistent cache."""

from __future__ import annotations


def change_stream_key(environment_prefix: str) -> str:
    """The Redis Stream upstream appends change events to."""
    return f"{environment_prefix}:changes"
