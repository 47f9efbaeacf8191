"""Upstream durability: the outbox survives a crash, idempotency survives a restart,
and time-driven changes are published when their time comes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from entitlements.model.events import EventKind, decode_event
from entitlements.model.state import DenialReason
from upstream.catalog import DEMO_CATALOG
from upstream.catalog.loader import load_catalog
from upstream.errors import Invalid
from upstream.metering import Metering, UsageItem
from upstream.server import UpstreamServer
from upstream.service import SubscriptionRequest, Upstream
from upstream.settings import UpstreamSettings
from upstream.store.sqlite import Store

CATALOG = DEMO_CATALOG


class Capture:
    def __init__(self) -> None:
        self.batches: list[list[tuple[int, str]]] = []

    async def publish(self, batch: Sequence[tuple[int, str]]) -> None:
        self.batches.append(list(batch))

    @property
    def events(self) -> list[str]:
        return [payload for batch in self.batches for _, payload in batch]


async def test_events_committed_before_a_crash_are_published_on_restart(tmp_path: Path) -> None:
    database = tmp_path / "up.db"
    # A separate process commits a change and dies (SIGKILL) before any relay runs.
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from upstream.catalog.loader import load_catalog
        from upstream.service import SubscriptionRequest, Upstream
        from upstream.store.sqlite import Store
        up = Upstream(Store({str(database)!r}), load_catalog(Path({str(CATALOG)!r})))
        up.provision_customer("crashy", subscription=SubscriptionRequest("crashy", "free"))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", script], capture_output=True, timeout=60
    )
    assert proc.returncode == -9, proc.stderr.decode()

    capture = Capture()
    settings = UpstreamSettings(api_key="k", port=0, database=str(database), catalog_path=CATALOG)
    async with UpstreamServer(settings, extra_publishers=[capture]) as server:
        events = [decode_event(p) for p in capture.events]
        assert [(e.kind, e.customer_id) for e in events] == [(EventKind.ENTITLEMENTS, "crashy")]
        with server.store.transaction() as tx:
            assert tx.unpublished(10) == []

    # Published once: a second restart has nothing left to send.
    again = Capture()
    async with UpstreamServer(settings, extra_publishers=[again]):
        assert again.events == []


def test_usage_idempotency_key_counts_once_across_restart(tmp_path: Path) -> None:
    database = str(tmp_path / "up.db")
    catalog = load_catalog(CATALOG)
    first = Upstream(Store(database), catalog)
    first.provision_customer("idem", subscription=SubscriptionRequest("idem", "free"))
    item = UsageItem("idem", "api-calls", 5, idempotency_key="report-1")
    before = Metering(first).report_usage([item])[0]
    first.store.close()

    second = Upstream(Store(database), catalog)
    again = Metering(second).report_usage([item])[0]
    assert again["measurementId"] == before["measurementId"]
    assert again["usage"]["currentUsage"] == 5
    usage = second.entitlements("idem", None).feature_usage["api-calls"]
    assert usage.current_usage == 5


def test_trial_end_is_published_when_its_time_comes(tmp_path: Path) -> None:
    clock = [datetime(2026, 3, 1, tzinfo=UTC)]
    up = Upstream(Store(str(tmp_path / "up.db")), load_catalog(CATALOG), clock=lambda: clock[0])
    up.provision_customer("trial", subscription=SubscriptionRequest("trial", "enterprise"))
    state = up.entitlements("trial", None)
    assert state.state.denial_reason is None
    assert "sso" in state.state.features
    trial_end = clock[0] + timedelta(days=14)
    due = up.next_due()
    assert due is not None
    assert due <= trial_end

    with up.store.transaction() as tx:
        head = tx.head_seq()
    clock[0] = trial_end + timedelta(seconds=1)
    assert up.process_due() >= 1
    with up.store.transaction() as tx:
        rows = tx.changes_after(head, 100)
    events = [decode_event(payload) for _, payload in rows]
    published = [e for e in events if e.kind is EventKind.ENTITLEMENTS and e.customer_id == "trial"]
    assert published, "the trial end produced no change event"
    assert published[-1].snapshot is not None
    assert published[-1].snapshot.state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION


def test_every_change_in_a_rejected_batch_is_rolled_back(tmp_path: Path) -> None:
    up = Upstream(Store(str(tmp_path / "up.db")), load_catalog(CATALOG))
    up.provision_customer("batch", subscription=SubscriptionRequest("batch", "free"))
    with up.store.transaction() as tx:
        head = tx.head_seq()
    items = [UsageItem("batch", "api-calls", 3), UsageItem("batch", "no-such-feature", 1)]
    with pytest.raises(Invalid, match="no-such-feature"):
        Metering(up).report_usage(items)
    assert "api-calls" not in up.entitlements("batch", None).feature_usage or (
        up.entitlements("batch", None).feature_usage["api-calls"].current_usage == 0
    )
    with up.store.transaction() as tx:
        new = tx.changes_after(head, 100)
    assert not [json.loads(p) for _, p in new if json.loads(p)["kind"] == "usage.updated"]
