"""A sidecar without the Redis tier, its upstream and a cuttable link between them: what it
holds survives a lost change stream and an upstream outage, and a reconnect is lossless."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from sidecar.app import Sidecar
from sidecar.pb import sidecar_pb2 as pb
from sidecar.pb import sidecar_pb2_grpc as pb_grpc
from sidecar.source.http_upstream import HttpUpstreamSource
from tests.conftest import AsyncStub, make_settings, wait_for
from upstream.metering import Metering, UsageItem
from upstream.server import UpstreamServer
from upstream.service import SubscriptionRequest
from upstream.settings import UpstreamSettings


class Link:
    """A TCP proxy to upstream that the test can cut (every connection, and new ones refused)
    and restore, as a network partition would."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.port = 0

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            self._pipes.discard(task)
            return
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                w.close()
            self._pipes.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@dataclass
class System:
    upstream: UpstreamServer
    link: Link
    sidecar: Sidecar
    stub: AsyncStub

    def sample(self, name: str, **labels: str) -> float:
        return self.sidecar.metrics.registry.get_sample_value(name, labels) or 0.0

    @property
    def fetches(self) -> float:
        return self.sample("sidecar_source_fetch_duration_seconds_count")

    async def usage(self) -> pb.GetMeteredEntitlementResponse:
        return await self.stub.GetMeteredEntitlement(
            pb.GetMeteredEntitlementRequest(customer_id="acme", feature_id="api-calls")
        )


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    settings = UpstreamSettings(api_key="k", port=0, database=str(tmp_path / "up.db"))
    async with UpstreamServer(settings) as upstream:
        upstream.upstream.provision_customer(
            "acme", subscription=SubscriptionRequest("acme", "free")
        )
        link = Link(upstream.port)
        await link.up()
        source = HttpUpstreamSource(
            api_url=f"http://127.0.0.1:{link.port}", api_key="k", timeout=2, retries=0
        )
        async with Sidecar(make_settings(), source) as sidecar:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{sidecar.grpc_port}") as channel:
                yield System(upstream, link, sidecar, pb_grpc.SidecarServiceStub(channel))
            await link.cut()


async def test_a_reconnect_replays_what_was_missed_and_trusts_what_is_held(
    system: System,
) -> None:
    assert (await system.usage()).entitlement.current_usage == 0
    fetches = system.fetches
    await system.link.cut()
    await wait_for(
        lambda: system.sample("sidecar_backend_synced") == 0, what="the stream loss to be seen"
    )
    # Committed upstream while the sidecar cannot hear about it.
    Metering(system.upstream.upstream).report_usage([UsageItem("acme", "api-calls", 40)])
    await system.link.up()
    await wait_for(
        lambda: system.sample("sidecar_backend_synced") == 1, what="the stream to resume"
    )
    # The missed change arrived through the replay, not through a refetch.
    answer = await system.usage()
    assert answer.entitlement.current_usage == 40 and not answer.is_fallback
    assert system.fetches == fetches


async def test_upstream_down_the_held_answers_are_served_not_fallbacks(system: System) -> None:
    boolean = pb.GetBooleanEntitlementRequest(customer_id="acme", feature_id="sso")
    before_bool = await system.stub.GetBooleanEntitlement(boolean)
    before = await system.usage()
    await system.link.cut()
    await wait_for(
        lambda: system.sample("sidecar_backend_synced") == 0, what="the stream loss to be seen"
    )

    async def served_stale() -> bool:
        answer = await system.usage()
        assert not answer.is_fallback and answer.entitlement == before.entitlement
        again = await system.stub.GetBooleanEntitlement(boolean)
        assert not again.is_fallback and again.has_access == before_bool.has_access
        return system.sample("sidecar_stale_served_total", tier="hot") > 0

    # The first read past the revalidation interval tries upstream, fails, serves the copy.
    await wait_for(served_stale, timeout=15, what="a stale answer to be served")
    assert system.sample("sidecar_oldest_stale_served_seconds") > 0
