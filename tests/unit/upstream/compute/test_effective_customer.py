"""Customer-level outcomes: not found, archived, unknown resource, live vs dead subscriptions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from entitlements.model.state import DenialReason
from tests.unit.upstream.compute.effective_support import (
    CUSTOMER_ID,
    DAY,
    HOUR,
    NOW,
    START,
    facts,
    grant,
    promo,
    run,
    snapshot,
    sub,
)
from upstream.domain import (
    Customer,
    CustomerFacts,
    PromotionalEntitlement,
    Subscription,
    SubscriptionStatus,
)

ACTIVE = SubscriptionStatus.ACTIVE
TRIAL = SubscriptionStatus.TRIAL
CANCELLED = SubscriptionStatus.CANCELLED
REPLACED = SubscriptionStatus.REPLACED


def test_unknown_customer_is_not_found_with_nothing_granted() -> None:
    result, next_change = run(
        CustomerFacts(None, "r1", (sub(resource_id="r1"),), grants=(grant(),))
    )
    assert result.state.customer_id == CUSTOMER_ID
    assert result.state.resource_id == "r1"
    assert result.state.denial_reason is DenialReason.CUSTOMER_NOT_FOUND
    assert not result.state.features and not result.state.credits
    assert not result.feature_usage and not result.credit_usage
    assert next_change is None


def test_snapshot_leaves_version_and_commit_time_to_the_store() -> None:
    result = snapshot(facts(sub()))
    assert result.state.version == 0
    assert result.state.updated_at is None


@pytest.mark.parametrize(
    ("archived_at", "reason"),
    [
        (NOW - DAY, DenialReason.CUSTOMER_IS_ARCHIVED),
        (NOW, DenialReason.CUSTOMER_IS_ARCHIVED),
        (NOW + DAY, None),
    ],
    ids=["archived-before", "archived-exactly-now", "archival-scheduled"],
)
def test_archived_customer(archived_at: datetime, reason: DenialReason | None) -> None:
    customer = Customer(CUSTOMER_ID, archived_at=archived_at)
    result, next_change = run(facts(sub(), grants=(grant(),), customer=customer))
    assert result.state.denial_reason is reason
    if reason is None:
        assert "flag" in result.state.features
        assert next_change == archived_at
    else:
        assert not result.state.features and not result.state.credits
        assert next_change is None


def test_customer_id_must_match_the_facts() -> None:
    with pytest.raises(ValueError, match="cus-1"):
        run(facts(sub(), customer=Customer("someone-else")))


def test_naive_now_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone"):
        run(facts(sub()), now=NOW.replace(tzinfo=None))


@pytest.mark.parametrize(
    ("subscriptions", "resource_id", "reason"),
    [
        ((), "r1", DenialReason.CUSTOMER_RESOURCE_NOT_FOUND),
        ((sub(resource_id="r2"),), "r1", DenialReason.CUSTOMER_RESOURCE_NOT_FOUND),
        ((sub(resource_id=None),), "r1", DenialReason.CUSTOMER_RESOURCE_NOT_FOUND),
        # The resource once existed: it is known, just not subscribed any more.
        ((sub(resource_id="r1", status=CANCELLED),), "r1", DenialReason.NO_ACTIVE_SUBSCRIPTION),
        ((sub(resource_id="r1"),), "r1", None),
        ((), None, DenialReason.NO_ACTIVE_SUBSCRIPTION),
        ((sub(resource_id="r1"),), None, DenialReason.NO_ACTIVE_SUBSCRIPTION),
    ],
    ids=[
        "no-subscriptions",
        "other-resource",
        "customer-level-only",
        "known-but-cancelled",
        "live",
        "customer-level-none",
        "customer-level-ignores-resource-subscriptions",
    ],
)
def test_resource_scoping(
    subscriptions: tuple[Subscription, ...],
    resource_id: str | None,
    reason: DenialReason | None,
) -> None:
    result = snapshot(facts(*subscriptions, resource_id=resource_id))
    assert result.state.denial_reason is reason
    assert result.state.resource_id == resource_id
    if reason is DenialReason.CUSTOMER_RESOURCE_NOT_FOUND:
        assert not result.state.features


@pytest.mark.parametrize(
    ("status", "start", "extra", "live"),
    [
        (ACTIVE, START, {}, True),
        (TRIAL, START, {"trial_end": NOW + DAY}, True),
        (TRIAL, START, {"trial_end": NOW}, False),
        (TRIAL, START, {"trial_end": NOW - DAY}, False),
        (TRIAL, START, {}, True),
        # Only a TRIAL status ends with the trial; a paid subscription keeps going.
        (ACTIVE, START, {"trial_end": NOW - DAY}, True),
        (ACTIVE, START, {"cancel_at": NOW + HOUR}, True),
        (ACTIVE, START, {"cancel_at": NOW}, False),
        (ACTIVE, NOW + HOUR, {}, False),
        (ACTIVE, NOW, {}, True),
        (CANCELLED, START, {}, False),
        (REPLACED, START, {}, False),
    ],
    ids=[
        "active",
        "trial-running",
        "trial-ends-now",
        "trial-over",
        "trial-open-ended",
        "active-after-trial",
        "cancel-scheduled",
        "cancelled-now",
        "starts-later",
        "starts-now",
        "cancelled",
        "replaced",
    ],
)
def test_subscription_liveness(
    status: SubscriptionStatus, start: datetime, extra: dict[str, Any], live: bool
) -> None:
    result = snapshot(facts(sub("static", status=status, start=start, **extra)))
    if live:
        assert result.state.denial_reason is None
        assert set(result.state.features) == {"flag"}
    else:
        assert result.state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION
        assert not result.state.features


def test_trial_sets_valid_until_to_its_end_and_access_stops_there() -> None:
    trial_end = NOW + 2 * DAY
    customer_facts = facts(sub("pro", status=TRIAL, trial_end=trial_end))
    during, next_change = run(customer_facts)
    assert next_change == trial_end
    assert during.state.denial_reason is None
    assert {e.valid_until for e in during.state.features.values()} == {trial_end}
    after, _ = run(customer_facts, now=trial_end)
    assert after.state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION
    assert not after.state.features


def test_scheduled_cancellation_sets_valid_until() -> None:
    cancel_at = NOW + 3 * HOUR
    customer_facts = facts(sub("basic", cancel_at=cancel_at))
    during, next_change = run(customer_facts)
    assert next_change == cancel_at
    assert during.state.features["calls"].valid_until == cancel_at
    after = snapshot(customer_facts, now=cancel_at + timedelta(seconds=1))
    assert after.state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION


def test_future_subscription_is_the_next_change() -> None:
    start = NOW + 5 * DAY
    result, next_change = run(facts(sub("static", start=start)))
    assert result.state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION
    assert next_change == start


@pytest.mark.parametrize(
    ("promotion", "live"),
    [
        (promo("sso"), True),
        (promo("sso", expires_at=NOW + DAY), True),
        (promo("sso", expires_at=NOW), False),
        (promo("sso", revoked_at=NOW - DAY), False),
        (promo("sso", revoked_at=NOW + DAY), True),
        (promo("sso", resource_id="r9"), False),
    ],
    ids=["open-ended", "expires-later", "expired", "revoked", "revocation-scheduled", "other-res"],
)
def test_promotions_alone_keep_the_customer_active(
    promotion: PromotionalEntitlement, live: bool
) -> None:
    result = snapshot(facts(promotions=(promotion,)))
    if live:
        assert result.state.denial_reason is None
        assert set(result.state.features) == {"sso"}
    else:
        assert result.state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION
        assert not result.state.features


def test_no_active_subscription_still_reports_wallets_of_active_grants() -> None:
    result = snapshot(facts(sub(status=CANCELLED), grants=(grant(amount=40),)))
    assert result.state.denial_reason is DenialReason.NO_ACTIVE_SUBSCRIPTION
    assert result.state.credits["credits"].granted == 40


def test_resource_set_includes_customer_level_grants_but_not_other_resources() -> None:
    subscriptions = (
        sub("static", sub_id="global"),
        sub("ws-plan", sub_id="mine", resource_id="r1"),
        sub("pro", sub_id="theirs", resource_id="r2"),
    )
    promotions = (
        promo("seats", "p-mine", resource_id="r1", value=4),
        promo("sso", "p-other", resource_id="r2"),
    )
    mine = snapshot(facts(*subscriptions, promotions=promotions, resource_id="r1"))
    assert set(mine.state.features) == {"flag", "storage", "calls", "tier", "tokens", "seats"}
    customer_level = snapshot(facts(*subscriptions, promotions=promotions))
    assert set(customer_level.state.features) == {"flag"}
