"""The change feed: catch-up by cursor, live push over SSE, and a full snapshot export."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from typing import Any

from aiohttp import web

from entitlements.model.state import encode_snapshot_dict
from upstream.api.routes import UPSTREAM, _int_query
from upstream.errors import Invalid
from upstream.events.hub import Hub
from upstream.service import Upstream

HUB = web.AppKey("hub", Hub)
PING_SECONDS = web.AppKey("ping_seconds", float)


async def changes(request: web.Request) -> web.Response:
    """``GET /v1/changes?after=SEQ&limit=N``: events after a cursor, oldest first."""
    after = _int_query(request, "after", 0)
    limit = _int_query(request, "limit", 500, maximum=5000)
    with request.app[UPSTREAM].store.snapshot() as tx:
        rows = tx.changes_after(after, limit)
        head = tx.head_seq()
    events: list[Any] = [json.loads(payload) for _, payload in rows]
    next_cursor = rows[-1][0] if rows else after
    return web.json_response({"events": events, "next": next_cursor, "head": head})


#: Largest snapshot page; without ``limit`` the whole export comes in one answer.
MAX_SNAPSHOT_PAGE = 5000


def encode_cursor(key: tuple[str, str | None]) -> str:
    """An opaque export cursor: the last key of a page."""
    raw = json.dumps([key[0], key[1] or ""], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str | None]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        customer_id, resource_key = json.loads(raw)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Invalid("not a cursor this API handed out", field="after") from exc
    if not isinstance(customer_id, str) or not isinstance(resource_key, str):
        raise Invalid("not a cursor this API handed out", field="after")
    return customer_id, resource_key or None


async def snapshot(request: web.Request) -> web.Response:
    """Every known (customer, resource) state, and the feed position it is consistent with.

    A consumer rebuilding a cache loads this, then follows ``/v1/changes`` from ``seq``. With
    ``limit`` the export comes in pages (``next`` is the cursor to pass as ``after``, null on
    the last page); each page reports the ``seq`` current when it was read, and a consumer
    follows the feed from the *first* page's: a later page may hold newer states, which
    versioned writes take in any order, and whatever changed after the first page is in the
    feed from there.
    """
    upstream = request.app[UPSTREAM]
    raw_after = request.query.get("after")
    after = None if raw_after is None else decode_cursor(raw_after)
    paged = "limit" in request.query
    limit = _int_query(request, "limit", MAX_SNAPSHOT_PAGE, maximum=MAX_SNAPSHOT_PAGE)
    if paged and limit == 0:
        raise Invalid("must be between 1 and 5000", field="limit")
    keys, states, head = await upstream.store.run(_export, upstream, after, paged, limit)
    more = (paged or after is not None) and len(keys) == limit
    next_cursor = encode_cursor(keys[-1]) if more and keys else None
    return web.json_response({"seq": head, "states": states, "next": next_cursor})


def _export(
    upstream: Upstream, after: tuple[str, str | None] | None, paged: bool, limit: int
) -> tuple[list[tuple[str, str | None]], list[dict[str, Any]], int]:
    """(keys, encoded states, head) of one export page, in one transaction."""
    now = upstream.clock()
    with upstream.transaction() as tx:
        if paged or after is not None:
            keys = tx.state_keys_after(after, limit)
        else:
            keys = tx.all_state_keys()
        states = [encode_snapshot_dict(upstream.publisher.current(tx, c, r, now)) for c, r in keys]
        return keys, states, tx.head_seq()


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
    # A subscriber that goes away is the normal end of a stream, not an error of ours.
    with contextlib.suppress(ConnectionResetError):
        async with hub.subscribe() as subscription:
            with request.app[UPSTREAM].store.snapshot() as tx:
                head = tx.head_seq()
            hello = f"event: hello\ndata: {json.dumps({'seq': head})}\n\n"
            await response.write(hello.encode())
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
