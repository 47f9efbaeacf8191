"""Where committed change events go: the in-process push hub, a Redis Stream."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from upstream.events.hub import Hub


class HubPublisher:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def publish(self, batch: Sequence[tuple[int, str]]) -> None:
        for seq, payload in batch:
            self._hub.publish(seq, payload)


class RedisStreamPublisher:
    """XADD each event to ``stream``, pipelined per batch.

    The entry id is left to Redis; the event's own ``seq`` is the position in
    upstream's feed. The stream is capped approximately at ``maxlen`` entries:
    a consumer further behind than that catches up through ``GET /v1/changes``.
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
                    {"seq": str(seq), "event": payload},
                    maxlen=self._maxlen,
                    approximate=True,
                )
            await pipe.execute()
