"""The read path's own Redis client (``PipelinedReader``) against real redis-server processes:
the same answers as redis-py, concurrent reads on one connection each getting its own reply,
and every failure bounded, raised as redis-py's errors, and followed by a working connection."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from entitlements.errors import CacheRejected, CacheUnavailable
from entitlements.redis.keys import state_key
from entitlements.redis.reader import PipelinedReader, pack
from entitlements.redis.store import RedisStore
from tests.builders import demo_snapshot
from tests.redis_server import RedisServer, free_port

TIMEOUT = 2.0

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a scenario on each loop: the sidecar runs on uvloop, whose transports differ."""
    runner = asyncio.run if request.param == "asyncio" else uvloop.run
    return lambda scenario: runner(scenario)


@asynccontextmanager
async def reader_for(
    server: RedisServer,
    *,
    timeout: float = TIMEOUT,
    db: int = 0,
    username: str | None = None,
    password: str | None = None,
) -> AsyncIterator[PipelinedReader]:
    reader = PipelinedReader(
        "127.0.0.1", server.port, timeout=timeout, db=db, username=username, password=password
    )
    try:
        yield reader
    finally:
        await reader.aclose()


@asynccontextmanager
async def admin(server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(port=server.port, socket_timeout=5)
    try:
        yield client
    finally:
        await client.aclose()


@contextmanager
def paused(server: RedisServer) -> Iterator[None]:
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def test_pack_writes_resp_arrays() -> None:
    assert pack("HGETALL", "k") == b"*2\r\n$7\r\nHGETALL\r\n$1\r\nk\r\n"
    assert pack("AUTH", "ü", b"\r\n") == b"*3\r\n$4\r\nAUTH\r\n$2\r\n\xc3\xbc\r\n$2\r\n\r\n\r\n"


def test_answers_as_redis_py_does(run: Run, redis_server: RedisServer, redis_prefix: str) -> None:
    async def scenario() -> None:
        values = {
            b"text": b"value",
            b"empty": b"",
            b"binary": bytes(range(256)),
            b"crlf": b"a\r\nb",
            "ünïcode".encode(): b"wert",
            b"big": os.urandom(1 << 20),
        }
        async with admin(redis_server) as client, reader_for(redis_server) as reader:
            await client.hset(f"{redis_prefix}:h", mapping=values)  # type: ignore[arg-type]
            await client.set(f"{redis_prefix}:s", "x")
            assert await reader.hgetall(f"{redis_prefix}:h") == await client.hgetall(
                f"{redis_prefix}:h"
            )
            assert await reader.hgetall(f"{redis_prefix}:h") == values
            assert await reader.hgetall(f"{redis_prefix}:missing") == {}
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await reader.hgetall(f"{redis_prefix}:s")
            # An error reply is one reply: the connection stays in step.
            assert await reader.hgetall(f"{redis_prefix}:h") == values
            assert await reader.ping()

    run(scenario())


def test_concurrent_reads_share_one_connection_and_each_gets_its_own_hash(
    run: Run, redis_server: RedisServer, redis_prefix: str
) -> None:
    async def scenario() -> None:
        keys = [f"{redis_prefix}:{i}" for i in range(300)]
        async with admin(redis_server) as client, reader_for(redis_server) as reader:
            async with client.pipeline(transaction=False) as pipe:
                for i, key in enumerate(keys):
                    pipe.hset(key, mapping={"i": str(i), "pad": "x" * (i * 37)})
                await pipe.execute()
            before = {c["id"] for c in await client.client_list()}
            answers = await asyncio.gather(*(reader.hgetall(key) for key in keys))
            assert [int(a[b"i"]) for a in answers] == list(range(300))
            assert [len(a[b"pad"]) for a in answers] == [i * 37 for i in range(300)]
            opened = [c for c in await client.client_list() if c["id"] not in before]
            assert len(opened) == 1, opened

    run(scenario())


def test_a_caller_that_gives_up_leaves_the_connection_in_step(
    run: Run, redis_server: RedisServer, redis_prefix: str
) -> None:
    async def scenario() -> None:
        async with admin(redis_server) as client, reader_for(redis_server) as reader:
            for name in "abc":
                await client.hset(f"{redis_prefix}:{name}", "name", name)
            assert await reader.ping()  # connected: the next read is sent as soon as it runs
            first = asyncio.ensure_future(reader.hgetall(f"{redis_prefix}:a"))
            await asyncio.sleep(0)  # sent, reply not yet read
            first.cancel()
            answers = await asyncio.gather(
                reader.hgetall(f"{redis_prefix}:b"), reader.hgetall(f"{redis_prefix}:c")
            )
            assert list(answers) == [{b"name": b"b"}, {b"name": b"c"}]
            assert first.cancelled()

    run(scenario())


def test_password_user_and_database(run: Run, own_redis: RedisServer, redis_prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis(port=own_redis.port, db=3, socket_timeout=5)
        try:
            await client.hset(f"{redis_prefix}:h", "db", "3")
            await client.acl_setuser(
                "reader", enabled=True, passwords=["+secret"], keys=["*"], commands=["+@all"]
            )
            await client.config_set("requirepass", "root-secret")
        finally:
            await client.aclose()
        async with reader_for(own_redis, username="reader", password="secret", db=3) as reader:
            assert await reader.hgetall(f"{redis_prefix}:h") == {b"db": b"3"}
        async with reader_for(own_redis, password="root-secret", db=3) as reader:
            assert await reader.hgetall(f"{redis_prefix}:h") == {b"db": b"3"}
        async with reader_for(own_redis, username="reader", password="wrong") as reader:
            with pytest.raises(ResponseError, match="WRONGPASS"):
                await reader.hgetall(f"{redis_prefix}:h")
        async with reader_for(own_redis) as reader:
            with pytest.raises(ResponseError, match="NOAUTH"):
                await reader.hgetall(f"{redis_prefix}:h")

    run(scenario())


def test_a_stalled_redis_costs_one_timeout_then_reads_work_again(
    run: Run, own_redis: RedisServer, redis_prefix: str
) -> None:
    async def scenario() -> None:
        async with admin(own_redis) as client:
            for name in "ab":
                await client.hset(f"{redis_prefix}:{name}", "name", name)
        async with reader_for(own_redis, timeout=0.3) as reader:
            assert await reader.hgetall(f"{redis_prefix}:a") == {b"name": b"a"}
            with paused(own_redis):
                started = time.monotonic()
                results = await asyncio.gather(
                    *(reader.hgetall(f"{redis_prefix}:a") for _ in range(5)), return_exceptions=True
                )
                waited = time.monotonic() - started
            assert all(isinstance(r, RedisTimeoutError) for r in results), results
            assert waited < 0.3 * 5  # bounded: not one timeout per queued read
            # The stalled server now sends its late replies to a connection that was given up:
            # none of them reaches a later read.
            assert await reader.hgetall(f"{redis_prefix}:b") == {b"name": b"b"}

    run(scenario())


def test_a_restarted_redis_costs_no_read(
    run: Run, own_redis: RedisServer, redis_prefix: str
) -> None:
    async def scenario() -> None:
        async with reader_for(own_redis) as reader:
            assert await reader.hgetall(f"{redis_prefix}:h") == {}
            own_redis.kill()
            own_redis.start()
            async with admin(own_redis) as client:
                await client.hset(f"{redis_prefix}:h", "after", "restart")
            # The old connection is dead; the read reconnects instead of failing.
            assert await reader.hgetall(f"{redis_prefix}:h") == {b"after": b"restart"}

    run(scenario())


def test_a_read_whose_connection_dies_under_it_is_sent_again(
    run: Run, own_redis: RedisServer, redis_prefix: str
) -> None:
    async def scenario() -> None:
        async with reader_for(own_redis, timeout=30) as reader:
            assert await reader.ping()
            assert own_redis.process is not None
            os.kill(own_redis.process.pid, signal.SIGSTOP)
            read = asyncio.ensure_future(reader.hgetall(f"{redis_prefix}:h"))
            await asyncio.sleep(0)  # sent to a server that will never answer it
            # Killed and replaced without the loop running in between: the read only learns its
            # connection died once it is already waiting for the reply.
            own_redis.kill()
            own_redis.start()
            with own_redis.client() as client:
                client.hset(f"{redis_prefix}:h", "sent", "twice")
            assert not read.done()
            assert await read == {b"sent": b"twice"}

    run(scenario())


def test_a_down_redis_fails_fast_as_a_connection_error(
    run: Run,
) -> None:
    async def scenario() -> None:
        reader = PipelinedReader("127.0.0.1", free_port(), timeout=TIMEOUT)
        try:
            started = time.monotonic()
            with pytest.raises(RedisConnectionError, match="cannot connect"):
                await reader.hgetall("k")
            assert time.monotonic() - started < TIMEOUT
        finally:
            await reader.aclose()

    run(scenario())


def test_closing_fails_what_is_in_flight_and_what_comes_after(
    run: Run,
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        reader = PipelinedReader("127.0.0.1", redis_server.port, timeout=TIMEOUT)
        assert await reader.ping()
        in_flight = asyncio.ensure_future(reader.hgetall("k"))
        await asyncio.sleep(0)
        await reader.aclose()
        with pytest.raises(RedisConnectionError, match="closed"):
            await in_flight
        with pytest.raises(RedisConnectionError, match="closed"):
            await reader.hgetall("k")

    run(scenario())


def test_closing_while_connecting_fails_the_read_not_cancels_it(
    run: Run, own_redis: RedisServer
) -> None:
    async def scenario() -> None:
        # A stopped server still completes TCP connections; its SELECT is never answered.
        reader = PipelinedReader("127.0.0.1", own_redis.port, timeout=TIMEOUT, db=1)
        with paused(own_redis):
            connecting = asyncio.ensure_future(reader.hgetall("k"))
            await asyncio.sleep(0)  # waiting for its connection
            assert not connecting.done()
            await reader.aclose()
            with pytest.raises(RedisConnectionError, match="closed"):
                await connecting

    run(scenario())


def test_the_store_reads_through_it_and_reports_failures_as_redis_py_ones(
    run: Run, own_redis: RedisServer, redis_prefix: str
) -> None:
    async def scenario() -> None:
        snapshot = demo_snapshot("cust-1")
        async with admin(own_redis) as client, reader_for(own_redis) as reader:
            writer = RedisStore(client, prefix=redis_prefix, ttl_seconds=-1)
            await writer.apply_snapshot(snapshot)
            store = RedisStore(client, prefix=redis_prefix, ttl_seconds=-1, reader=reader)
            through_reader = await store.get("cust-1", None)
            assert through_reader == await writer.get("cust-1", None)
            assert through_reader is not None and through_reader.state == snapshot.state
            # Another type under a state's key reads as a miss, as it does through redis-py.
            await client.set(state_key(redis_prefix, "cust-2", None), "x")
            assert await store.get("cust-2", None) is None
            assert store.decode_errors == 1
            own_redis.kill()
            with pytest.raises(CacheUnavailable) as down:
                await store.get("cust-1", None)
            assert not isinstance(down.value, CacheRejected)
            assert "HGETALL" in str(down.value)

    run(scenario())
