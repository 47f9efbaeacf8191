"""A batch of usage reports or events that updates one counter many times writes it, and
publishes its change, once, with the final value; each report is still acknowledged with its
own running value and a version of its own."""

from __future__ import annotations

from pathlib import Path

from entitlements.model.events import EventKind, decode_event
from upstream.catalog import DEMO_CATALOG
from upstream.catalog.loader import load_catalog
from upstream.metering import EventItem, Metering, UsageItem
from upstream.service import SubscriptionRequest, Upstream
from upstream.store.sqlite import Store


def metering(tmp_path: Path) -> tuple[Metering, Upstream]:
    up = Upstream(Store(str(tmp_path / "up.db")), load_catalog(DEMO_CATALOG))
    for customer in ("a", "b"):
        up.provision_customer(customer, subscription=SubscriptionRequest(customer, "free"))
    return Metering(up), up


def usage_changes(up: Upstream, after: int) -> list[tuple[str, str | None, float, int]]:
    with up.store.transaction() as tx:
        rows = tx.changes_after(after, 10_000)
    changes = [decode_event(payload.encode()) for _, payload in rows]
    return [
        (c.customer_id, c.feature_id, c.usage.current_usage, c.version)
        for c in changes
        if c.kind is EventKind.USAGE and c.usage is not None
    ]


def head(up: Upstream) -> int:
    with up.store.transaction() as tx:
        return tx.head_seq()


def current(up: Upstream, customer: str, feature: str) -> float:
    with up.store.transaction() as tx:
        return tx.usage_for(customer, None)[feature].value


def test_reports_on_one_counter_are_acknowledged_one_by_one_and_written_once(
    tmp_path: Path,
) -> None:
    meter, up = metering(tmp_path)
    start = head(up)
    items = [UsageItem("a", "api-calls", 1, idempotency_key=f"k-{i}") for i in range(10)]
    items.insert(5, UsageItem("b", "api-calls", 4, idempotency_key="b-1"))
    items.append(UsageItem("a", "api-calls", 3, set_value=True, idempotency_key="k-set"))
    items.append(UsageItem("a", "api-calls", 2, idempotency_key="k-after"))
    items.append(UsageItem("a", "api-calls", 1, idempotency_key="k-3"))  # a repeat in the batch
    results = meter.report_usage(items)

    values = [r["usage"]["currentUsage"] for r in results if r["customerId"] == "a"]
    assert values == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 3, 5, 4]  # k-3 answers as before
    versions = [r["usage"]["version"] for r in results]
    assert versions[:-1] == sorted(set(versions[:-1]))  # every applied report has its own
    changes = usage_changes(up, start)
    # One change per counter, with its final value and the batch's last version for it.
    assert sorted(changes) == sorted(
        [("a", "api-calls", 5, versions[-2]), ("b", "api-calls", 4, versions[5])]
    )
    assert current(up, "a", "api-calls") == 5 and current(up, "b", "api-calls") == 4

    # The next batch starts from what the last one wrote.
    [again] = meter.report_usage([UsageItem("a", "api-calls", 1, idempotency_key="next")])
    assert again["usage"]["currentUsage"] == 6


def test_events_on_one_counter_are_aggregated_and_written_once(tmp_path: Path) -> None:
    meter, up = metering(tmp_path)
    start = head(up)
    events = [
        EventItem("api_request", "a" if i % 4 else "b", f"e-{i}", dimensions={"billable": True})
        for i in range(40)
    ]
    assert meter.report_events(events + events[:5]) == (40, 5)
    changes = usage_changes(up, start)
    assert sorted((c, f, v) for c, f, v, _ in changes) == [
        ("a", "api-calls", 30),
        ("b", "api-calls", 10),
    ]
    assert current(up, "a", "api-calls") == 30
    meter.report_events([EventItem("api_request", "a", "e-new", dimensions={"billable": True})])
    assert current(up, "a", "api-calls") == 31
