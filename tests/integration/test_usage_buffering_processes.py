"""Usage buffered during an upstream outage is counted exactly once after it, on real
processes: a sidecar with USAGE_BUFFERING=1 reads a customer, upstream is SIGKILLed, usage
reports are acknowledged (and the next read shows them), the sidecar is SIGKILLed and
restarted on its SPOOL_DIR, more reports (callers' retries with their keys mixed in), upstream
restarted on its database; the spool drains and upstream counted each key once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sidecar.pb import sidecar_pb2 as pb
from tests.integration.processes import (
    SidecarProcess,
    Upstream,
    metric,
    started_upstream,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


class BufferingSidecar(SidecarProcess):
    def __init__(self, upstream: Upstream, spool: Path, log: Path) -> None:
        super().__init__(
            upstream, log, SPOOL_DIR=str(spool), USAGE_BUFFERING="1", UPSTREAM_RETRIES="1"
        )

    def report(self, key: str) -> pb.ReportUsageResponse:
        request = pb.ReportUsageRequest(
            customer_id="acme", feature_id="api-calls", value=1, idempotency_key=key
        )
        answer: pb.ReportUsageResponse = self.stub.ReportUsage(request, timeout=10)
        return answer

    def usage(self) -> float:
        answer = self.stub.GetMeteredEntitlement(
            pb.GetMeteredEntitlementRequest(customer_id="acme", feature_id="api-calls"),
            timeout=10,
        )
        return float(answer.entitlement.current_usage)

    def spooled(self) -> float:
        return metric(self.http_port, "sidecar_spool_usage_reports")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = started_upstream(tmp_path)
    try:
        yield up
    finally:
        up.kill()


def upstream_usage(upstream: Upstream) -> float:
    state = upstream.request("/v1/customers/acme/entitlements")
    usage = state["featureUsage"]
    assert isinstance(usage, dict)
    return float(usage["api-calls"]["currentUsage"])


def test_usage_buffered_in_an_outage_across_a_sidecar_sigkill_counts_once(
    upstream: Upstream, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    first = BufferingSidecar(upstream, spool, tmp_path / "sidecar-1.log")
    keys = [f"u-{i}" for i in range(100)]
    try:
        assert first.usage() == 0  # cached while upstream is up
        upstream.kill()  # the outage starts
        for n, key in enumerate(keys, 1):
            ack = first.report(key)
            assert len(ack.measurement_id) == 21  # a local measurement id
            assert ack.current_usage == n
        assert first.usage() == len(keys)  # enforcement sees every acknowledged report
        assert first.spooled() == len(keys)
    finally:
        first.kill()  # SIGKILL: no drain, no goodbye

    second = BufferingSidecar(upstream, spool, tmp_path / "sidecar-2.log")
    try:
        assert second.spooled() == len(keys)  # nothing acknowledged was lost
        fresh = [f"u-{i}" for i in range(100, 140)]
        retried = keys[-10:]  # callers that never saw their answer retry with their keys
        for key in fresh[:20] + retried + fresh[20:]:
            second.report(key)
        assert second.spooled() == len(keys) + 50

        upstream.start()  # the outage ends
        wait_until(lambda: second.spooled() == 0, "the usage spool to drain", second.proc)
        assert upstream_usage(upstream) == len(set(keys + fresh)) == 140
        assert metric(second.http_port, "sidecar_spool_usage_shipped_total") == 150
        wait_until(lambda: second.usage() == 140, "the sidecar to show upstream's count")
    finally:
        second.kill()
