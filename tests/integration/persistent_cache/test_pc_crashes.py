"""Consumer processes killed with SIGKILL mid-batch lose nothing; SIGTERM finishes the batch.

Writes to the cache Redis are held with CLIENT PAUSE WRITE while events flow, so a consumer is
caught for certain between reading a batch and acking it; the stream lives in another Redis
(EVENTS_REDIS_URL), which keeps delivering.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import BinaryIO

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from entitlements.redis.keys import change_stream
from entitlements.redis.store import RedisStore
from persistent_cache.service import PersistentCacheService
from tests.conftest import wait_for
from tests.integration.persistent_cache.pc_support import (
    ROOT,
    converged,
    differences,
    provision,
    redis_client,
    report,
    running_upstream,
    sample,
    service_env,
    service_settings,
)
from tests.redis_server import RedisServer
from upstream.server import UpstreamServer

GROUP = "persistent-cache"


class Consumers:
    """Consumer processes of one test, all killed at the end whatever happens."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self._directory = directory
        self._env = env
        self._procs: list[asyncio.subprocess.Process] = []

    def _log(self, name: str) -> BinaryIO:
        return (self._directory / f"{name}.log").open("wb")

    async def spawn(self, name: str, **extra: str) -> asyncio.subprocess.Process:
        env = {**os.environ, **self._env, "CONSUMER_NAME": name, **extra}
        with self._log(name) as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "persistent_cache.main",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        self._procs.append(proc)
        return proc

    async def close(self) -> None:
        for proc in self._procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def consumers(directory: Path, env: dict[str, str]) -> AsyncIterator[Consumers]:
    group = Consumers(directory, env)
    try:
        yield group
    finally:
        await group.close()


async def pending_of(events: aioredis.Redis, stream: str, name: str) -> int:
    summary = await events.xpending(stream, GROUP)
    return sum(int(c["pending"]) for c in summary["consumers"] or [] if c["name"] == name)


async def registered(events: aioredis.Redis, stream: str, name: str) -> bool:
    try:
        consumers = await events.xinfo_consumers(stream, GROUP)
    except ResponseError:  # no stream or no group yet
        return False
    return name in {c["name"] for c in consumers}


async def catch_mid_batch(
    up: UpstreamServer,
    cache: aioredis.Redis,
    events: aioredis.Redis,
    stream: str,
    name: str,
    customers: Sequence[str],
) -> None:
    """Hold cache writes, make events flow, return once ``name`` holds an unacked batch."""
    await cache.client_pause(30_000, all=False)  # writes only: reads and PING go on
    report(up, customers)

    async def holding() -> bool:
        return await pending_of(events, stream, name) > 0

    await wait_for(holding, timeout=10, what=f"{name} holding a batch")


async def test_killed_consumers_lose_nothing(
    redis_server: RedisServer, own_redis: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    stream = change_stream(redis_prefix)
    async with (
        running_upstream(tmp_path, redis_server, redis_prefix) as up,
        redis_client(redis_server) as events,
        redis_client(own_redis) as cache,
    ):
        env = service_env(
            redis_prefix,
            own_redis,
            up,
            EVENTS_REDIS_URL=redis_server.url,
            CLAIM_IDLE_MS="600000",  # these never claim: the rescuer below does
            BATCH_SIZE="5",
        )
        customers = [f"crash-{i}" for i in range(12)]
        provision(up, customers)
        store = RedisStore(cache, prefix=redis_prefix, ttl_seconds=60)

        async def complete() -> bool:
            return await store.get_epoch() is not None

        async with consumers(tmp_path, env) as group:
            for round_ in range(3):
                name = f"doomed-{round_}"
                proc = await group.spawn(name)
                await wait_for(partial(registered, events, stream, name), timeout=15, what=name)
                await wait_for(complete, timeout=10, what="startup resync")
                # The last round's customers change only here: their state depends on the
                # entries the dead consumer held.
                batch = customers[round_ * 4 : round_ * 4 + 4] if round_ == 2 else customers
                await catch_mid_batch(up, cache, events, stream, name, batch)
                proc.kill()
                assert await proc.wait() == -signal.SIGKILL
                await cache.client_unpause()
                assert await pending_of(events, stream, name) > 0

            # SIGTERM: the batch in hand is written and acked, then a clean exit.
            proc = await group.spawn("graceful")
            await wait_for(partial(registered, events, stream, "graceful"), timeout=15)
            await catch_mid_batch(up, cache, events, stream, "graceful", customers[:4])
            proc.send_signal(signal.SIGTERM)
            await cache.client_unpause()
            await wait_for(lambda: proc.returncode is not None, timeout=15, what="exit")
            assert proc.returncode == 0
            assert await pending_of(events, stream, "graceful") == 0

        settings = service_settings(
            redis_prefix,
            own_redis,
            up,
            events_redis_url=redis_server.url,
            claim_idle_ms=100,
            consumer_name="rescuer",
        )
        async with PersistentCacheService(settings) as rescuer:

            async def nothing_pending() -> bool:
                return int((await events.xpending(stream, GROUP))["pending"]) == 0

            await wait_for(nothing_pending, timeout=15, what="every entry acked")
            await wait_for(lambda: converged(rescuer.store, up), timeout=15, what="convergence")
            assert await differences(rescuer.store, up) == []
            assert sample(rescuer, "persistent_cache_events_reclaimed_total") > 0
