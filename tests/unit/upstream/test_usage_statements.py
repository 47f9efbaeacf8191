"""What a usage report costs in SQL, counted statement by statement (``Store.trace``).

A report needs its feature's terms (period, credit rate), not the customer's whole state: it
reads the customer, subscriptions and promotions once per (customer, resource) in the batch and
the one counter it moves, and writes the counter and its change event once per batch. The bounds
below are today's exact counts; a change that makes a report read more fails here.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from entitlements.model.events import decode_event, encode_event
from upstream.catalog import DEMO_CATALOG
from upstream.catalog.loader import load_catalog
from upstream.domain import CreditGrant, GrantType
from upstream.events.relay import Relay
from upstream.metering import EventItem, Metering, UsageItem
from upstream.service import SubscriptionRequest, Upstream
from upstream.store.sqlite import Store

#: BEGIN, customer, subscriptions, promotions, the counter, version, counter write, event, COMMIT.
ONE_REPORT = 9


class Nowhere:
    async def publish(self, batch: object) -> None:
        pass


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Upstream]:
    upstream = Upstream(Store(str(tmp_path / "up.db")), load_catalog(DEMO_CATALOG))
    upstream.provision_customer("c", subscription=SubscriptionRequest("c", "pro"))
    upstream.provision_customer("d", subscription=SubscriptionRequest("d", "free"))
    yield upstream
    upstream.store.close()


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    seen: list[str] = []
    store.trace(seen.append)
    try:
        yield seen
    finally:
        store.trace(None)


def counted(up: Upstream, action: Callable[[], object]) -> list[str]:
    with statements(up.store) as seen:
        action()
    return [" ".join(s.split()) for s in seen]


def test_a_report_reads_its_feature_not_the_customers_whole_state(up: Upstream) -> None:
    meter = Metering(up)
    seen = counted(up, lambda: meter.report_usage([UsageItem("c", "api-calls", 1)]))
    assert len(seen) <= ONE_REPORT, seen
    # Nothing of the wallet, the other counters or the stored states is read for it.
    for table in ("credit_grants", "credit_deficits", "states"):
        assert not [s for s in seen if table in s], seen
    [usage_read] = [s for s in seen if s.startswith("SELECT * FROM usage")]
    assert "feature_id='api-calls'" in usage_read
    # One statement per change event: the payload is written with its seq.
    assert len([s for s in seen if "outbox" in s]) == 1


def test_an_idempotency_key_costs_its_lookup_and_its_record(up: Upstream) -> None:
    meter = Metering(up)
    item = UsageItem("c", "api-calls", 1, idempotency_key="k")
    assert len(counted(up, lambda: meter.report_usage([item]))) <= ONE_REPORT + 2
    # A replay answers from the stored response: no state, no counter, no event.
    replay = counted(up, lambda: meter.report_usage([item]))
    assert len(replay) == 3, replay  # BEGIN, the lookup, COMMIT


def test_a_batch_costs_what_it_changes_not_what_it_repeats(up: Upstream) -> None:
    meter = Metering(up)
    items = [UsageItem("c", "api-calls", 1) for _ in range(10)]
    seen = counted(up, lambda: meter.report_usage(items))
    # The terms and the counter are read once, the counter and its event written once; each
    # further report only takes its own version.
    assert len(seen) <= ONE_REPORT + 9, seen
    two = [UsageItem("c", "api-calls", 1), UsageItem("d", "api-calls", 1)]
    assert len(counted(up, lambda: meter.report_usage(two))) <= 2 * ONE_REPORT - 2


def test_a_credit_backed_report_reads_the_wallet_once(up: Upstream) -> None:
    meter = Metering(up)
    seen = counted(up, lambda: meter.report_usage([UsageItem("c", "ai-tokens", 4)]))
    assert len(seen) <= 17, seen
    assert len([s for s in seen if "FROM credit_grants" in s]) == 1, seen
    assert len([s for s in seen if "FROM credit_deficits" in s]) == 1, seen
    # The wallet it reports is the one it wrote: as a fresh read of the balance sees it.
    [result] = meter.report_usage([UsageItem("c", "ai-tokens", 6)])
    balance = meter.balance("c", "ai-credits", None)
    assert result["credit"]["usage"]["currentUsage"] == balance.consumed
    assert result["credit"]["granted"] == balance.granted


def test_raw_events_read_their_counter_once(up: Upstream) -> None:
    meter = Metering(up)
    event = EventItem("api_request", "c", "e-1", dimensions={"billable": True})
    seen = counted(up, lambda: meter.report_events([event]))
    assert len([s for s in seen if s.startswith("SELECT * FROM usage")]) == 1, seen
    assert not [s for s in seen if "credit_grants" in s or "states" in s], seen


async def test_the_relay_marks_a_batch_and_reads_the_next_in_one_transaction_without_fsync(
    up: Upstream,
) -> None:
    relay = Relay(up.store, [Nowhere()])
    await relay.drain()
    Metering(up).report_usage([UsageItem("c", "api-calls", 1)])
    with statements(up.store) as seen:
        assert await relay.drain() == 1
    assert len(seen) <= 7, seen
    assert seen[0].startswith("SELECT seq, payload FROM outbox")  # no transaction to read
    mark = seen.index("PRAGMA synchronous=NORMAL")
    assert seen[mark + 1] == "BEGIN IMMEDIATE"
    assert seen[mark + 2].startswith("UPDATE outbox SET published=1")
    assert seen[-1] == "PRAGMA synchronous=FULL"
    assert synchronous(up.store) == 2  # FULL again for everything else


def synchronous(store: Store) -> int:
    with store.read() as tx:
        row = tx._one("PRAGMA synchronous")
    assert row is not None
    return int(row[0])


def test_a_non_durable_transaction_restores_full_sync_when_it_fails(up: Upstream) -> None:
    def twice() -> None:
        with up.store.transaction(durable=False) as tx:
            tx.remember_response("s", "k", "{}", up.clock())
            tx.remember_response("s", "k", "{}", up.clock())

    with pytest.raises(sqlite3.IntegrityError):
        twice()
    assert synchronous(up.store) == 2
    with up.store.read() as tx:
        assert tx.idempotent_response("s", "k") is None  # rolled back whole


def outbox(up: Upstream) -> list[tuple[int, str]]:
    with up.store.read() as tx:
        return tx.changes_after(0, 100_000)


def test_every_event_carries_its_own_seq_byte_for_byte(up: Upstream) -> None:
    meter = Metering(up)
    meter.report_usage([UsageItem("c", "api-calls", 2), UsageItem("c", "ai-tokens", 3)])
    meter.grant_credits(
        CreditGrant("g-1", "d", "ai-credits", 10.0, GrantType.PAID, idempotency_key="g-1")
    )
    up.archive_customer("d")
    rows = outbox(up)
    assert len(rows) >= 6
    for seq, payload in rows:
        event = decode_event(payload.encode())
        assert event.seq == seq
        assert encode_event(event).decode() == payload
        assert json.loads(payload)["seq"] == seq


def test_a_seq_is_never_handed_out_twice_even_after_rows_are_deleted(up: Upstream) -> None:
    meter = Metering(up)
    meter.report_usage([UsageItem("c", "api-calls", 1)])
    last = outbox(up)[-1][0]
    with up.store.transaction() as tx:
        tx._c.execute("DELETE FROM outbox WHERE seq=?", (last,))
    meter.report_usage([UsageItem("c", "api-calls", 1)])
    [(seq, payload)] = outbox(up)[-1:]
    assert seq == last + 1
    assert decode_event(payload.encode()).seq == seq
