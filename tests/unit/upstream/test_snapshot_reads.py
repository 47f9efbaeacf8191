"""Reads on the event loop's read-only connection (``Store.snapshot``) answer what the writer's
would, and give way to it whenever answering must write."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from upstream.catalog import DEMO_CATALOG
from upstream.catalog.loader import load_catalog
from upstream.metering import Metering, UsageItem
from upstream.service import SubscriptionRequest, Upstream
from upstream.store.sqlite import Store

START = datetime(2026, 3, 1, 12, tzinfo=UTC)


@pytest.fixture
def clock() -> list[datetime]:
    return [START]


@pytest.fixture
def up(tmp_path: Path, clock: list[datetime]) -> Iterator[Upstream]:
    upstream = Upstream(
        Store(str(tmp_path / "up.db")), load_catalog(DEMO_CATALOG), clock=lambda: clock[0]
    )
    upstream.provision_customer("c", subscription=SubscriptionRequest("c", "pro"))
    upstream.provision_customer("t", subscription=SubscriptionRequest("t", "enterprise"))
    yield upstream
    upstream.store.close()


def test_a_snapshot_read_answers_what_the_writer_answers(up: Upstream) -> None:
    Metering(up).report_usage([UsageItem("c", "api-calls", 7), UsageItem("c", "ai-tokens", 3)])
    for customer in ("c", "t", "nobody"):
        with up.store.snapshot() as tx:
            peeked = up.peek_entitlements(tx, customer, None)
        assert peeked == up.entitlements(customer, None)
    with up.store.snapshot() as tx:
        assert up.read_customer(tx, "c") == up.get_customer("c")
        meter = Metering(up)
        assert meter.read_balance(tx, "c", "ai-credits", None) == meter.balance(
            "c", "ai-credits", None
        )


def test_a_state_time_changed_is_left_to_the_writer_which_publishes_it(
    up: Upstream, clock: list[datetime]
) -> None:
    clock[0] = START + timedelta(days=15)  # past the enterprise trial
    with up.store.snapshot() as tx:
        assert up.peek_entitlements(tx, "t", None) is None
        head = tx.head_seq()
    published = up.entitlements("t", None)  # publishes the state time changed
    assert published.state.denial_reason is not None
    with up.store.snapshot() as tx:
        assert tx.head_seq() > head
        peeked = up.peek_entitlements(tx, "t", None)
    # Now a read writes nothing, on either connection.
    assert peeked is not None
    assert peeked == up.entitlements("t", None)
    assert peeked.state.version == published.state.version


def test_a_snapshot_sees_every_commit_before_it_and_cannot_write(up: Upstream) -> None:
    Metering(up).report_usage([UsageItem("c", "api-calls", 5)])
    with up.store.snapshot() as tx:
        state = up.peek_entitlements(tx, "c", None)
        assert state is not None
        assert state.feature_usage["api-calls"].current_usage == 5
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            tx.remember_response("s", "k", "{}", START)
