"""The HTTP side port: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def build_app(registry: CollectorRegistry, is_ready: Callable[[], bool]) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        # Liveness is the event loop answering; it never depends on Redis or upstream.
        return web.json_response({"status": "UP"})

    async def readyz(_: web.Request) -> web.Response:
        if is_ready():
            return web.json_response({"status": "UP"})
        return web.json_response({"status": "DOWN"}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


class HttpServer:
    def __init__(
        self, app: web.Application, *, host: str, port: int, reuse_port: bool = False
    ) -> None:
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._port = port
        # Several worker processes share one port (SO_REUSEPORT); the kernel spreads connections.
        self._reuse_port = reuse_port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self._host, self._port, reuse_port=self._reuse_port or None
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self._runner.cleanup()
