"""``entitlement-demo``: the whole system on one machine, one process, no Redis.

Starts upstream (SQLite, the packaged demo catalog ``upstream/catalog/demo.yaml``, a few demo
customers) and a sidecar that reads through it and follows its push channel. Environment:
``PORT`` (sidecar gRPC, default 50051), ``HTTP_PORT`` (sidecar side port, 8080),
``UPSTREAM_PORT`` (8787), ``DEMO_DATABASE`` (default: a fresh temporary file).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from entitlements.cli import parse_command_line
from entitlements.logs import configure_logging
from sidecar.app import Sidecar
from sidecar.settings import Settings
from sidecar.source.http_upstream import HttpUpstreamSource
from upstream.catalog import DEMO_CATALOG
from upstream.domain import CreditGrant, GrantType
from upstream.errors import Conflict
from upstream.metering import Metering, UsageItem
from upstream.server import UpstreamServer
from upstream.service import SubscriptionRequest, Upstream
from upstream.settings import UpstreamSettings

log = structlog.get_logger("demo")
API_KEY = "demo-key"


def seed(upstream: Upstream) -> None:
    """Demo customers; already-present ones are left alone so restarts keep their state."""
    customers = {
        "customer-demo": SubscriptionRequest(
            "customer-demo",
            "pro",
            addons={"extra-api-calls": 1},
            billable_quantities={"seats": 5},
        ),
        "customer-free": SubscriptionRequest("customer-free", "free"),
        "customer-trial": SubscriptionRequest("customer-trial", "enterprise"),
    }
    for customer_id, subscription in customers.items():
        with contextlib.suppress(Conflict):
            upstream.provision_customer(customer_id, name=customer_id, subscription=subscription)
    metering = Metering(upstream)
    with contextlib.suppress(Conflict):
        upstream.provision_customer("customer-workspace", name="Workspace team")
        upstream.provision_subscription(
            SubscriptionRequest(
                "customer-workspace", "workspace-plus", resource_id="ws-1", skip_trial=True
            )
        )
        metering.grant_credits(
            CreditGrant(
                id="demo-grant-1",
                customer_id="customer-demo",
                currency_id="ai-credits",
                amount=500,
                grant_type=GrantType.PROMOTIONAL,
                idempotency_key="demo-grant-1",
                expires_at=datetime.now(UTC) + timedelta(days=30),
            )
        )
        metering.report_usage([UsageItem("customer-demo", "api-calls", 1200)])


async def run() -> None:
    database = os.environ.get("DEMO_DATABASE") or str(Path(tempfile.mkdtemp()) / "demo.db")
    upstream_settings = UpstreamSettings(
        api_key=API_KEY,
        port=int(os.environ.get("UPSTREAM_PORT", "8787")),
        database=database,
        catalog_path=DEMO_CATALOG,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with UpstreamServer(upstream_settings) as upstream_server:
        seed(upstream_server.upstream)
        sidecar_settings = Settings.from_env(
            {
                **os.environ,
                "PORT": os.environ.get("PORT", "50051"),
                "SERVER_API_KEY": API_KEY,
                "API_URL": f"http://127.0.0.1:{upstream_server.port}",
            }
        )
        source = HttpUpstreamSource(api_url=sidecar_settings.api_url, api_key=API_KEY)
        async with Sidecar(sidecar_settings, source) as sidecar:
            print(
                f"\nupstream  http://127.0.0.1:{upstream_server.port}  (X-API-KEY: {API_KEY})\n"
                f"sidecar   127.0.0.1:{sidecar.grpc_port} (gRPC), "
                f"http://127.0.0.1:{sidecar.http.port}/metrics\n"
                f"try:      .venv/bin/python examples/query.py 127.0.0.1:{sidecar.grpc_port}\n",
                file=sys.stderr,
            )
            await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parse_command_line(
        "entitlement-demo",
        "The whole system in one process, no Redis: the reference upstream (SQLite, the demo "
        "catalog,\ndemo customers) and a sidecar reading through it and following its change "
        "stream.\nEnvironment: PORT (sidecar gRPC, 50051), HTTP_PORT (sidecar side port, 8080), "
        "UPSTREAM_PORT (8787),\nDEMO_DATABASE (default: a fresh temporary file); other sidecar "
        "variables apply as usual.",
        docs="README.md, section Quickstart",
        argv=argv,
    )
    # One process runs both services, so every line names the demo rather than either of them.
    configure_logging(
        os.environ.get("LOG_LEVEL", "info"),
        os.environ.get("LOG_FORMAT", "auto"),
        service="entitlement-demo",
    )
    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
