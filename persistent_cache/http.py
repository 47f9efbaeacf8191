"""The HTTP side port: ``/livez``, ``/readyz``, ``/metrics`` and ``POST /resync``.

``POST /resync`` rebuilds the cache from upstream and answers when it is done (joining a resync
already running). It is expensive, so it asks for the service's ``X-API-KEY``.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from entitlements.errors import CacheUnavailable
from persistent_cache.errors import PersistentCacheError
from persistent_cache.resync import ResyncResult


def build_app(
    registry: CollectorRegistry,
    *,
    is_ready: Callable[[], Awaitable[bool]],
    resync: Callable[[], Awaitable[ResyncResult]],
    api_key: str,
) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        # Liveness is the event loop answering; it never depends on Redis or upstream.
        return web.json_response({"status": "UP"})

    async def readyz(_: web.Request) -> web.Response:
        if await is_ready():
            return web.json_response({"status": "UP"})
        return web.json_response({"status": "DOWN"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def post_resync(request: web.Request) -> web.Response:
        given = request.headers.get("X-API-KEY", "")
        if not hmac.compare_digest(given.encode(), api_key.encode()):
            return web.json_response({"error": "missing or wrong X-API-KEY"}, status=401)
        try:
            result = await resync()
        except (PersistentCacheError, CacheUnavailable) as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.json_response(
            {
                "trigger": result.trigger,
                "states": result.states,
                "events": result.events,
                "skipped": result.skipped,
                "epoch": result.epoch,
                "seconds": round(result.seconds, 3),
            }
        )

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/resync", post_resync)
    return app
