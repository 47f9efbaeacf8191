"""Helpers shared by the Redis store tests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from entitlements.model.state import CustomerSnapshot, UsageRecord


def fast_failing_client(port: int, *, decode_responses: bool = False) -> Redis:
    """A client that gives up fast: half-second socket timeouts, one immediate retry.

    The single retry is what replaces a pooled connection a server restart broke; without it
    the first command after a restart fails even though the server is back.
    """
    return Redis(
        host="127.0.0.1",
        port=port,
        decode_responses=decode_responses,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 1),
    )


def versioned(snapshot: CustomerSnapshot, state: int, usage: int | None = None) -> CustomerSnapshot:
    """``snapshot`` with its state at version ``state`` and every usage record at ``usage``."""

    def bump(records: Mapping[str, UsageRecord]) -> dict[str, UsageRecord]:
        if usage is None:
            return dict(records)
        return {k: replace(v, version=usage) for k, v in records.items()}

    return replace(
        snapshot,
        state=replace(snapshot.state, version=state),
        feature_usage=bump(snapshot.feature_usage),
        credit_usage=bump(snapshot.credit_usage),
    )


@asynccontextmanager
async def subscribed(client: Redis, channel: str, timeout: float = 5.0) -> AsyncIterator[PubSub]:
    """A pubsub on ``channel`` whose subscription the server has confirmed.

    Waiting for the confirmation matters: SUBSCRIBE is sent without waiting for its reply, so a
    PUBLISH issued right after could reach the server first and be lost.
    """
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"subscription to {channel} never confirmed")
            message = await pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "subscribe":
                break
        yield pubsub
    finally:
        await pubsub.aclose()


async def next_message(pubsub: PubSub, timeout: float = 5.0) -> str:
    """The next published payload; fails the test if none arrives within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no message within {timeout}s")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
        if message is not None and message["type"] == "message":
            data = message["data"]
            return data.decode() if isinstance(data, bytes) else str(data)
