"""SQLite work that may write runs on the store's one writer thread: the event loop keeps serving
while a commit waits for the disk, writes stay in submission order, and shutdown stops the thread.
Reads that write nothing use the loop's own read-only connection."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.upstream.support import API_KEY, CATALOG, Api, upstream_settings
from upstream.catalog.loader import load_catalog
from upstream.events.relay import Relay
from upstream.server import UpstreamServer
from upstream.service import Upstream
from upstream.store.sqlite import Store

DEADLINE = 10.0


def usage(value: float) -> dict[str, Any]:
    return {"usages": [{"customerId": "c", "featureId": "api-calls", "value": value}]}


class HeldCommits:
    """A trace hook that holds the COMMIT of every transaction writing usage until released:
    a commit whose fsync takes as long as the test wants."""

    def __init__(self) -> None:
        self.committing = threading.Event()
        self.release = threading.Event()
        self.threads: set[threading.Thread] = set()
        self._writes_usage = False

    def __call__(self, sql: str) -> None:
        self.threads.add(threading.current_thread())
        if sql.startswith("INSERT INTO usage"):
            self._writes_usage = True
        elif sql == "COMMIT" and self._writes_usage:
            self._writes_usage = False
            self.committing.set()
            self.release.wait(30)


async def test_a_slow_commit_holds_up_neither_the_loop_nor_the_order_of_writes(
    tmp_path: Path,
) -> None:
    async with (
        UpstreamServer(upstream_settings(tmp_path)) as server,
        aiohttp.ClientSession(
            f"http://127.0.0.1:{server.port}", headers={"X-API-KEY": API_KEY}
        ) as session,
    ):
        api = Api(session)
        await api.ok("POST", "/v1/customers", {"id": "c", "subscription": {"planId": "pro"}}, 201)
        hook = HeldCommits()
        server.store.trace(hook)
        try:
            first = asyncio.create_task(api.call("POST", "/v1/usage", usage(1)))
            assert await asyncio.to_thread(hook.committing.wait, DEADLINE)
            # The report's commit is stuck on the writer thread: the loop still answers.
            for path in ("/livez", "/metrics", "/openapi.json"):
                reply = await asyncio.wait_for(api.call("GET", path), DEADLINE)
                assert reply.status == 200, path
            assert not first.done()
            # A second report is taken in and queued behind the first.
            second = asyncio.create_task(api.call("POST", "/v1/usage", usage(2)))
            hook.release.set()
            one = await asyncio.wait_for(first, DEADLINE)
            two = await asyncio.wait_for(second, DEADLINE)
        finally:
            hook.release.set()
            server.store.trace(None)
        assert (one.status, two.status) == (200, 200)
        [a], [b] = one.body["results"], two.body["results"]
        assert (a["usage"]["currentUsage"], b["usage"]["currentUsage"]) == (1, 3)
        assert a["usage"]["version"] < b["usage"]["version"]
        [writer] = hook.threads
        assert writer is not threading.current_thread()
        assert writer.name.startswith("upstream-sqlite")


async def test_every_statement_runs_on_the_writer_thread_and_stops_with_the_server(
    tmp_path: Path,
) -> None:
    settings = dataclasses.replace(upstream_settings(tmp_path), test_clock_enabled=True)
    threads: set[threading.Thread] = set()
    readers: set[threading.Thread] = set()

    def record(_: str) -> None:
        threads.add(threading.current_thread())

    def record_read(_: str) -> None:
        readers.add(threading.current_thread())

    server = UpstreamServer(settings)
    async with server:
        server.store.trace(record, reads=record_read)
        url = f"http://127.0.0.1:{server.port}"
        async with aiohttp.ClientSession(url, headers={"X-API-KEY": API_KEY}) as session:
            api = Api(session)
            body = {"id": "c", "subscription": {"planId": "pro"}}
            await api.ok("POST", "/v1/customers", body, 201)
            await api.ok("PATCH", "/v1/customers/c", {"name": "C"})
            await api.ok("GET", "/v1/customers/c")
            await api.ok("GET", "/v1/customers/c/entitlements")
            await api.ok("POST", "/v1/usage", usage(1))
            event = {"eventName": "api_request", "customerId": "c", "idempotencyKey": "e"}
            await api.ok("POST", "/v1/events", {"events": [event]}, 202)
            grant = {"customerId": "c", "currencyId": "ai-credits", "amount": 5}
            granted = await api.ok("POST", "/v1/credits/grants", grant, 201)
            await api.ok("POST", f"/v1/credits/grants/{granted['grant']['id']}/void")
            await api.ok("GET", "/v1/customers/c/credits/ai-credits")
            await api.ok("GET", "/v1/customers/c/credits/ledger")
            promo = {"customerId": "c", "featureId": "sso", "id": "p"}
            await api.ok("POST", "/v1/promotions", promo, 201)
            await api.ok("DELETE", "/v1/promotions/p")
            await api.ok("GET", "/v1/changes")
            await api.ok("GET", "/v1/snapshot")
            await api.ok("POST", "/v1/catalog/reload")
            await api.ok("POST", "/v1/test-clock/advance", {"seconds": 40 * 86400})
            await api.ok("GET", "/readyz")
            async with session.get("/v1/changes/stream") as stream:
                assert (await stream.content.readline()).startswith(b"event: hello")
            customer = await api.ok("GET", "/v1/customers/c")
            sub_id = customer["subscriptions"][0]["id"]
            await api.ok("POST", f"/v1/subscriptions/{sub_id}/cancel")
    # Requests, the relay, the scheduler and the shutdown drain: all on the one writer thread.
    [writer] = threads
    assert writer is not threading.current_thread()
    assert writer.name.startswith("upstream-sqlite")
    # Reads that write nothing took the loop's own read-only connection, on the loop.
    assert readers == {threading.current_thread()}
    # Stopped with the server: joined, and nothing more can be handed to it.
    assert not writer.is_alive()
    with pytest.raises(RuntimeError):
        await server.store.run(lambda: None)


class Arrivals:
    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.arrived = asyncio.Event()

    async def publish(self, batch: Sequence[tuple[int, str]]) -> None:
        self.seqs += [seq for seq, _ in batch]
        self.arrived.set()


async def test_a_commit_on_another_thread_wakes_the_relay(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "up.db"))
    arrivals = Arrivals()
    relay = Relay(store, [arrivals])
    up = Upstream(store, load_catalog(CATALOG), on_commit=relay.notify)
    up.provision_customer("a")
    # Polling once an hour: only the wake-up can get the relay going within the deadline.
    relay.start(poll_interval=3600)
    try:
        await asyncio.wait_for(arrivals.arrived.wait(), DEADLINE)
        arrivals.arrived.clear()
        # The writer thread runs in order: once this no-op ran, the relay has marked the first
        # batch and found nothing more, so it waits for a wake-up.
        await store.run(lambda: None)
        # A commit on a thread the loop knows nothing of (as the writer thread's commits are):
        # only Relay.notify can wake the loop for it.
        threading.Thread(target=up.provision_customer, args=("b",)).start()
        await asyncio.wait_for(arrivals.arrived.wait(), DEADLINE)
        assert len(arrivals.seqs) == 2
    finally:
        await relay.stop()
        await asyncio.to_thread(store.close)
