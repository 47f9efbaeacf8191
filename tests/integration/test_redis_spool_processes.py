"""SPOOL_BACKEND=redis on real processes: a sidecar acknowledges events and buffered usage while
upstream is down and is then SIGKILLed with its pod (nothing of it is kept); another sidecar of
the environment, started elsewhere, ships them once upstream is back: counted exactly once."""

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
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)


class RedisSpoolSidecar(SidecarProcess):
    def __init__(self, upstream: Upstream, redis: RedisServer, prefix: str, log: Path) -> None:
        super().__init__(
            upstream,
            log,
            SPOOL_BACKEND="redis",
            SPOOL_DIR="",
            USAGE_BUFFERING="1",
            REDIS_ENVIRONMENT_PREFIX=prefix,
            REDIS_HOST="127.0.0.1",
            REDIS_PORT=str(redis.port),
            REDIS_TIMEOUT_MS="2000",
        )


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = started_upstream(tmp_path)
    try:
        yield up
    finally:
        up.kill()


def test_a_pod_deleted_in_an_outage_loses_nothing_with_the_redis_spool(
    upstream: Upstream, redis_server: RedisServer, redis_prefix: str, tmp_path: Path
) -> None:
    upstream.kill()  # the outage starts
    first = RedisSpoolSidecar(upstream, redis_server, redis_prefix, tmp_path / "sidecar-1.log")
    try:
        events = [
            pb.Event(
                event_name="api_request",
                customer_id="acme",
                idempotency_key=f"ev-{i}",
                dimensions={"billable": pb.EventDimensionValue(boolean_value=True)},
            )
            for i in range(60)
        ]
        first.stub.ReportEvents(pb.ReportEventsRequest(events=events), timeout=10)
        for i in range(40):
            ack = first.stub.ReportUsage(
                pb.ReportUsageRequest(
                    customer_id="acme",
                    feature_id="storage-gb",
                    value=1,
                    idempotency_key=f"u-{i}",
                ),
                timeout=10,
            )
            assert len(ack.measurement_id) == 21
        assert metric(first.http_port, "sidecar_spool_events") == 60
        assert metric(first.http_port, "sidecar_spool_usage_reports") == 40
    finally:
        first.kill()  # SIGKILL, and the pod (with any local disk) is gone

    second = RedisSpoolSidecar(upstream, redis_server, redis_prefix, tmp_path / "sidecar-2.log")
    try:
        upstream.start()  # the outage ends
        # The dead sidecar's lease lapses; the survivor takes it over and ships everything.
        wait_until(
            lambda: (
                metric(second.http_port, "sidecar_spool_events") == 0
                and metric(second.http_port, "sidecar_spool_usage_reports") == 0
            ),
            "the shared spool to drain",
            second.proc,
        )
        state = upstream.request("/v1/customers/acme/entitlements")
        usage = state["featureUsage"]
        assert isinstance(usage, dict)
        assert usage["api-calls"]["currentUsage"] == 60
        assert usage["storage-gb"]["currentUsage"] == 40
    finally:
        second.kill()
