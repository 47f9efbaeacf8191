"""A fake of upstream's HTTP edge: the contract HttpUpstreamSource talks to, plus faults.

It is a real aiohttp server on a loopback port, so the client under test goes
through its whole HTTP stack (pooling, timeouts, encoding). It only stores what
the tests put in it; there is no entitlement logic behind it.

Faults are queued per route and consumed one per request, which lets a test say
"the next two fetches answer 503, then behave".
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from entitlements.model.events import ChangeEvent, encode_event
from entitlements.model.state import (
    CustomerSnapshot,
    DenialReason,
    EntitlementState,
    UsageRecord,
    encode_snapshot_dict,
    encode_usage_record,
)

API_KEY = "test-key"


@dataclass(frozen=True)
class Fault:
    """What one request gets instead of the normal answer."""

    status: int = 503
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    #: Never answer (until the fake shuts down): forces a client timeout.
    hang: bool = False
    #: Close the connection without answering.
    drop: bool = False


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@dataclass(frozen=True)
class Seen:
    method: str
    raw_path: str
    match: dict[str, str]
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class _Drop:
    """Stream item: cut the connection abruptly."""


class _End:
    """Stream item: end the response cleanly (the client sees EOF)."""


DROP = _Drop()
END = _End()
StreamItem = bytes | _Drop | _End


def sse(event: str, data: str) -> bytes:
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n".encode()


def change(event: ChangeEvent) -> bytes:
    return sse("change", encode_event(event).decode())


class FakeUpstream:
    def __init__(self, port: int | None = None) -> None:
        self.snapshots: dict[tuple[str, str | None], CustomerSnapshot] = {}
        #: Overrides the body of successful fetches (garbage, wrong schema...).
        self.fetch_body: bytes | None = None
        #: Overrides the results of successful usage reports.
        self.usage_results: list[dict[str, Any]] | None = None
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.seen: dict[str, list[Seen]] = defaultdict(list)
        #: Set whenever a request arrives (tests clear it before waiting on it).
        self.request_arrived = asyncio.Event()
        self.hello: bytes | None = sse("hello", '{"seq": 41}')
        self.stream_queues: list[asyncio.Queue[StreamItem]] = []
        self.stream_opened = asyncio.Event()
        self._release = asyncio.Event()
        self._port = port
        self._server: TestServer | None = None

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/customers/{customer_id}/entitlements", self._fetch)
        app.router.add_post("/v1/usage", self._usage)
        app.router.add_post("/v1/events", self._events)
        app.router.add_get("/v1/changes/stream", self._stream)
        kwargs: dict[str, Any] = {} if self._port is None else {"port": self._port}
        self._server = TestServer(app, host="127.0.0.1", **kwargs)
        await self._server.start_server()

    async def close(self) -> None:
        # Let every parked handler finish so the server shuts down at once.
        self._release.set()
        for queue in self.stream_queues:
            queue.put_nowait(END)
        if self._server is not None:
            await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("/")).rstrip("/")

    # --------------------------------------------------------------- control

    def fail(self, route: str, *faults: Fault) -> None:
        self.faults[route].extend(faults)

    def push(self, *items: StreamItem) -> None:
        """Send to the most recently opened change stream."""
        for item in items:
            self.stream_queues[-1].put_nowait(item)

    async def wait_for_stream(self, count: int) -> None:
        """Until ``count`` change streams have been opened."""
        while len(self.stream_queues) < count:
            self.stream_opened.clear()
            await self.stream_opened.wait()

    # -------------------------------------------------------------- handlers

    async def _record(self, route: str, request: web.Request) -> web.StreamResponse | None:
        body = await request.json() if request.can_read_body else None
        self.seen[route].append(
            Seen(
                request.method,
                request.raw_path,
                dict(request.match_info),
                dict(request.query),
                dict(request.headers),
                body,
            )
        )
        self.request_arrived.set()
        if request.headers.get("X-API-KEY") != API_KEY:
            return web.Response(status=401, body=error_body("UNAUTHENTICATED", "bad key"))
        if not self.faults[route]:
            return None
        return await self._apply(self.faults[route].pop(0), request)

    async def _apply(self, fault: Fault, request: web.Request) -> web.StreamResponse:
        if fault.hang:
            await self._release.wait()
        if fault.drop:
            assert request.transport is not None
            request.transport.close()
        return web.Response(
            status=fault.status,
            body=fault.body,
            headers=fault.headers,
            content_type=fault.content_type,
        )

    async def _fetch(self, request: web.Request) -> web.StreamResponse:
        faulted = await self._record("fetch", request)
        if faulted is not None:
            return faulted
        if self.fetch_body is not None:
            return web.Response(body=self.fetch_body, content_type="application/json")
        key = (request.match_info["customer_id"], request.query.get("resourceId"))
        snapshot = self.snapshots.get(key) or CustomerSnapshot(
            EntitlementState(key[0], key[1], DenialReason.CUSTOMER_NOT_FOUND)
        )
        return web.json_response(encode_snapshot_dict(snapshot))

    async def _usage(self, request: web.Request) -> web.StreamResponse:
        faulted = await self._record("usage", request)
        if faulted is not None:
            return faulted
        usages = self.seen["usage"][-1].body["usages"]
        results = self.usage_results
        if results is None:
            results = [_default_ack(i, usage) for i, usage in enumerate(usages)]
        return web.json_response({"results": results})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        faulted = await self._record("events", request)
        return faulted or web.Response(status=202)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        faulted = await self._record("stream", request)
        if faulted is not None:
            return faulted
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.hello is not None:
            await response.write(self.hello)
        queue: asyncio.Queue[StreamItem] = asyncio.Queue()
        self.stream_queues.append(queue)
        self.stream_opened.set()
        while True:
            item = await queue.get()
            if isinstance(item, _End):
                return response
            if isinstance(item, _Drop):
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(item)


def _default_ack(index: int, usage: dict[str, Any]) -> dict[str, Any]:
    record = UsageRecord(current_usage=usage["value"], version=index + 1)
    return {
        "measurementId": f"m-{index}",
        "customerId": usage["customerId"],
        "resourceId": usage.get("resourceId"),
        "featureId": usage["featureId"],
        "usage": encode_usage_record(record),
        "credit": None,
    }


def free_port() -> int:
    """A loopback port nobody listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
