"""Events acknowledged during an upstream outage are counted exactly once after it, on real
processes: upstream SIGKILLed, events (with duplicates mixed in) acknowledged by a sidecar that
is then SIGKILLed and restarted on the same SPOOL_DIR, more events, upstream restarted on the
same database; the spool drains and upstream counted each distinct event once."""

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
BATCH = 50
DUPLICATES_PER_BATCH = 10


class SpoolSidecar(SidecarProcess):
    def __init__(self, upstream: Upstream, spool: Path, log: Path) -> None:
        super().__init__(upstream, log, SPOOL_DIR=str(spool))

    def report(self, keys: list[str]) -> None:
        events = [
            pb.Event(
                event_name="api_request",
                customer_id="acme",
                idempotency_key=k,
                dimensions={"billable": pb.EventDimensionValue(boolean_value=True)},
            )
            for k in keys
        ]
        self.stub.ReportEvents(pb.ReportEventsRequest(events=events), timeout=10)

    def spooled(self) -> float:
        return metric(self.http_port, "sidecar_spool_events")


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    up = started_upstream(tmp_path)
    try:
        yield up
    finally:
        up.kill()


def batches(start: int, count: int, sent: list[str]) -> Iterator[list[str]]:
    """Batches of new keys, each with some already-sent keys mixed in (the caller's retries)."""
    for first in range(start, start + count, BATCH):
        fresh = [f"ev-{i}" for i in range(first, min(first + BATCH, start + count))]
        repeats = sent[-DUPLICATES_PER_BATCH:]
        sent.extend(fresh)
        yield fresh[: BATCH // 2] + repeats + fresh[BATCH // 2 :]


def test_events_acknowledged_in_an_outage_across_a_sidecar_sigkill_count_once(
    upstream: Upstream, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    sent: list[str] = []
    acknowledged = 0
    upstream.kill()  # the outage starts

    first = SpoolSidecar(upstream, spool, tmp_path / "sidecar-1.log")
    try:
        for batch in batches(0, 300, sent):
            first.report(batch)  # returns only once the batch is on disk
            acknowledged += len(batch)
        assert first.spooled() == acknowledged
    finally:
        first.kill()  # SIGKILL: no drain, no goodbye

    second = SpoolSidecar(upstream, spool, tmp_path / "sidecar-2.log")
    try:
        assert second.spooled() == acknowledged  # nothing acknowledged was lost
        for batch in batches(300, 200, sent):
            second.report(batch)
            acknowledged += len(batch)
        assert second.spooled() == acknowledged
        assert acknowledged > len(sent)  # duplicates were mixed in

        upstream.start()  # the outage ends
        wait_until(lambda: second.spooled() == 0, "the spool to drain", second.proc)
        state = upstream.request("/v1/customers/acme/entitlements")
        usage = state["featureUsage"]
        assert isinstance(usage, dict)
        assert usage["api-calls"]["currentUsage"] == len(set(sent)) == 500
        assert metric(second.http_port, "sidecar_spool_shipped_total") == acknowledged
    finally:
        second.kill()
