"""The change feed: catch-up by cursor, live push over SSE, and a full snapshot export."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from sidecar.model.state import encode_snapshot_dict
from upstream.api.routes import UPSTREAM, _int_query
from upstream.events.hub import Hub

HUB = web.AppKey("hub", Hub)
PING_SECONDS = web.AppKey("ping_seconds", float)


async def changes(request: web.Request) -> web.Response:
    """``GET /v1/changes?after=SEQ&limit=N``: events after a cursor, oldest first."""
    after = _int_query(request, "after", 0)
    limit = _int_query(request, "limit", 500, maximum=5000)
    store = request.app[UPSTREAM].store
    with store.transaction() as tx:
        rows = tx.changes_after(after, limit)
        head = tx.head_seq()
    events: list[Any] = [json.loads(payload) for _, payload in rows]
    next_cursor = rows[-1][0] if rows else after
    return web.json_response({"events": events, "next": next_cursor, "head": head})


async def snapshot(request: web.Request) -> web.Response:
    """Every known (customer, resource) state, and the feed position it is consistent with.

    A consumer rebuilding a cache loads this, then follows ``/v1/changes`` from ``seq``.
    """
    upstream = request.app[UPSTREAM]
    now = upstream.clock()
    with upstream.transaction() as tx:
        keys = tx.all_state_keys()
        states = [encode_snapshot_dict(upstream.publisher.current(tx, c, r, now)) for c, r in keys]
        head = tx.head_seq()
    return web.json_response({"seq": head, "states": states})


async def stream(request: web.Request) -> web.StreamResponse:
    """``GET /v1/changes/stream``: Server-Sent Events, ``hello`` first, then every change."""
    hub = request.app[HUB]
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    # Subscribe before reading the head: nothing committed after ``hello`` can be missed.
    async with hub.subscribe() as subscription:
        with request.app[UPSTREAM].store.transaction() as tx:
            head = tx.head_seq()
        await response.write(f"event: hello\ndata: {json.dumps({'seq': head})}\n\n".encode())
        ping = request.app[PING_SECONDS]
        while True:
            try:
                item = await asyncio.wait_for(subscription.queue.get(), ping)
            except TimeoutError:
                await response.write(b": ping\n\n")
                continue
            if item is None:
                break
            seq, payload = item
            await response.write(f"event: change\nid: {seq}\ndata: {payload}\n\n".encode())
    return response
