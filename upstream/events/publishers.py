"""Where committed change events go: the in-process push hub, a Redis Stream."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
import structlog

from entitlements.redis.stream_entry import encode_entry, legacy_entry
from upstream.events.hub import Hub

log = structlog.get_logger("upstream.events")


def _entry(seq: int, payload: str) -> dict[str, str | bytes]:
    try:
        return encode_entry(seq, payload)
    except (ValueError, TypeError, KeyError, RecursionError) as exc:
        # Never expected (the payload is our own encode_event output), but the event must
        # still go out: as a legacy entry the consumer parks it with the decoder's reason.
        log.error("stream_entry_encode_failed", seq=seq, error=str(exc))
        return legacy_entry(seq, payload)


class HubPublisher:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def publish(self, batch: Sequence[tuple[int, str]]) -> None:
        for seq, payload in batch:
            self._hub.publish(seq, payload)


class RedisStreamPublisher:
    """XADD each event to ``stream``, pipelined per batch.

    The entry id is left to Redis; the event's own ``seq`` is the position in upstream's feed.
    Entries use the envelope layout (:mod:`entitlements.redis.stream_entry`), which the persistent
    cache writes through without decoding the state. The stream is capped approximately at
    ``maxlen`` entries: a consumer further behind than that catches up through
    ``GET /v1/changes``.
    """

    def __init__(self, client: aioredis.Redis, stream: str, maxlen: int = 1_000_000) -> None:
        self._client = client
        self._stream = stream
        self._maxlen = maxlen

    async def publish(self, batch: Sequence[tuple[int, str]]) -> None:
        async with self._client.pipeline(transaction=False) as pipe:
            for seq, payload in batch:
                pipe.xadd(
                    self._stream,
                    _entry(seq, payload),  # type: ignore[arg-type]
                    maxlen=self._maxlen,
                    approximate=True,
                )
            await pipe.execute()
