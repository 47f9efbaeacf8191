"""Usage reports are counted exactly once by the real upstream, whatever happens on the way.

A property test: hypothesis draws reports, how often the caller sends each one again (with its
key), the order of all those calls, a fault for each request upstream receives (refused before
it is applied; applied and then answered 500; applied and then the connection cut, which is
what a timeout or a reset looks like to the sidecar) and upstream restarts between calls. The
sidecar's write path (EntitlementService over HttpUpstreamSource, with its retries) forwards
every call; the caller retries a call that failed, with the same key. Afterwards upstream's
counter is the sum of the distinct reports, and every call of one report got the same answer.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlements.errors import SourceUnavailable
from sidecar.cache.hot_cache import HotCache
from sidecar.model.usage import UsageAck, UsageReport
from sidecar.observability import Metrics
from sidecar.service.entitlements import CacheEntry, EntitlementService
from sidecar.source.http_upstream import HttpUpstreamSource
from upstream.server import UpstreamServer
from upstream.service import SubscriptionRequest
from upstream.settings import UpstreamSettings

pytestmark = pytest.mark.timeout(120)

OK, REFUSED, APPLIED_THEN_500, APPLIED_THEN_CUT = "ok", "refused", "applied-500", "applied-cut"
FAULTS = st.sampled_from([OK, REFUSED, APPLIED_THEN_500, APPLIED_THEN_CUT])
CUSTOMER = "acme"
MAX_FAULTS = 12
#: Caller-side attempts per call before the test gives up (each one is 4 sidecar attempts).
CALLER_ATTEMPTS = 30

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Faults:
    """Consumed one per POST /v1/usage that reaches upstream; OK once exhausted."""

    def __init__(self, faults: list[str]) -> None:
        self.queue = list(faults)
        self.applied_without_answer = 0

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path != "/v1/usage" or not self.queue:
            return await handler(request)
        fault = self.queue.pop(0)
        if fault == REFUSED:
            return web.json_response({"error": {"code": "UNAVAILABLE", "message": "x"}}, status=503)
        response = await handler(request)
        if fault == OK:
            return response
        self.applied_without_answer += 1
        if fault == APPLIED_THEN_500:
            return web.json_response({"error": {"code": "INTERNAL", "message": "x"}}, status=500)
        assert request.transport is not None
        request.transport.close()
        return response


@dataclass(frozen=True)
class Call:
    report: int  # index into the example's reports
    restart_first: bool


class Upstream:
    """A real upstream on a fixed port that can be restarted on the same database."""

    def __init__(self, database: Path, faults: Faults) -> None:
        self.database = database
        self.faults = faults
        self.port = 0
        self.server: UpstreamServer | None = None

    async def start(self) -> None:
        settings = UpstreamSettings(api_key="k", port=self.port, database=str(self.database))
        self.server = UpstreamServer(settings)
        self.server.app.middlewares.append(self.faults.middleware)
        await self.server.start()
        self.port = self.server.port

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    def usage(self) -> float:
        assert self.server is not None
        record = self.server.upstream.entitlements(CUSTOMER, None).feature_usage.get("api-calls")
        return 0.0 if record is None else record.current_usage


async def scenario(
    values: list[int], keyed: list[bool], calls: list[Call], faults: list[str]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        up = Upstream(Path(tmp) / "up.db", Faults(faults))
        await up.start()
        assert up.server is not None
        up.server.upstream.provision_customer(
            CUSTOMER, subscription=SubscriptionRequest(CUSTOMER, "free")
        )
        # Reports the caller keyed go through a sidecar that gives up at once, so the caller's
        # own retries (same key) are exercised; the others through one whose retries outlast
        # every fault drawn, since a caller's retry without a key is a new report by design.
        impatient = _service(up.port, retries=0)
        patient = _service(up.port, retries=MAX_FAULTS)
        reports = [
            UsageReport(CUSTOMER, "api-calls", v, idempotency_key=f"r-{i}" if keyed[i] else None)
            for i, v in enumerate(values)
        ]
        answers: dict[int, set[str]] = {}
        try:
            for call in calls:
                if call.restart_first:
                    await up.restart()
                report = reports[call.report]
                service = impatient if report.idempotency_key else patient
                ack = await _call_until_answered(service, report)
                answers.setdefault(call.report, set()).add(ack.measurement_id)
            assert up.usage() == sum(values)
            # A caller's repeat (same key) is answered as the first call was.
            assert all(len(ids) == 1 for ids in answers.values()), answers
        finally:
            await impatient.aclose()
            await patient.aclose()
            await up.stop()


def _service(port: int, *, retries: int) -> EntitlementService:
    source = HttpUpstreamSource(
        api_url=f"http://127.0.0.1:{port}",
        api_key="k",
        timeout=5,
        retries=retries,
        backoff_base=0.001,
        backoff_max=0.002,
        stream=False,
    )
    return EntitlementService(source=source, cache=HotCache[CacheEntry](1 << 20), metrics=Metrics())


async def _call_until_answered(service: EntitlementService, report: UsageReport) -> UsageAck:
    for _ in range(CALLER_ATTEMPTS):
        try:
            [ack] = await service.report_usage([report])
        except SourceUnavailable:
            assert report.idempotency_key, "a sidecar outlasting every fault gave up"
            continue  # the caller's own retry, with the same key
        return ack
    raise AssertionError("upstream never answered")


@st.composite
def examples(draw: st.DrawFn) -> tuple[list[int], list[bool], list[Call], list[str]]:
    values = draw(st.lists(st.integers(1, 9), min_size=1, max_size=5))
    keyed = [draw(st.booleans()) for _ in values]
    # A caller repeats a report only with the key it gave: without one, a repeat is a new report.
    repeats = [draw(st.integers(1, 3)) if k else 1 for k in keyed]
    order = draw(st.permutations([i for i, n in enumerate(repeats) for _ in range(n)]))
    calls = [Call(i, draw(st.integers(0, 5)) == 0) for i in order]
    faults = draw(st.lists(FAULTS, max_size=MAX_FAULTS))
    return values, keyed, calls, faults


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(examples())
def test_every_report_is_counted_once_across_faults_repeats_and_restarts(
    example: tuple[list[int], list[bool], list[Call], list[str]],
) -> None:
    asyncio.run(scenario(*example))
