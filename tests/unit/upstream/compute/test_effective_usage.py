"""Usage periods (calendar vs subscription anchors) and the usage records that go with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from entitlements.model.state import ResetPeriod, UsageRecord
from tests.unit.upstream.compute.effective_support import (
    HOUR,
    NOW,
    START,
    counter,
    facts,
    run,
    snapshot,
    sub,
    with_plan,
)
from upstream.catalog import EntitlementDef, ResetAnchor


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


SUB = ResetAnchor.SUBSCRIPTION_START
CAL = ResetAnchor.CALENDAR

# START = Sat 2026-01-31 09:00, NOW = Wed 2026-03-18 15:45:30 (UTC).
PERIODS = [
    (ResetPeriod.HOUR, SUB, START, utc(2026, 3, 18, 15), utc(2026, 3, 18, 16)),
    (ResetPeriod.DAY, SUB, START, utc(2026, 3, 18, 9), utc(2026, 3, 19, 9)),
    (ResetPeriod.WEEK, SUB, START, utc(2026, 3, 14, 9), utc(2026, 3, 21, 9)),
    # Jan 31 + 1 month clamps to Feb 28; + 2 months is Mar 31 again.
    (ResetPeriod.MONTH, SUB, START, utc(2026, 2, 28, 9), utc(2026, 3, 31, 9)),
    (ResetPeriod.YEAR, SUB, START, utc(2026, 1, 31, 9), utc(2027, 1, 31, 9)),
    (ResetPeriod.HOUR, CAL, utc(2026, 3, 18, 15), utc(2026, 3, 18, 15), utc(2026, 3, 18, 16)),
    (ResetPeriod.DAY, CAL, utc(2026, 3, 18), utc(2026, 3, 18), utc(2026, 3, 19)),
    # ISO weeks start on Monday.
    (ResetPeriod.WEEK, CAL, utc(2026, 3, 16), utc(2026, 3, 16), utc(2026, 3, 23)),
    (ResetPeriod.MONTH, CAL, utc(2026, 3, 1), utc(2026, 3, 1), utc(2026, 4, 1)),
    (ResetPeriod.YEAR, CAL, utc(2026, 1, 1), utc(2026, 1, 1), utc(2027, 1, 1)),
]


@pytest.mark.parametrize(
    ("period", "anchor_kind", "anchor", "start", "end"),
    PERIODS,
    ids=[f"{p[1].name.lower()}-{p[0].name.lower()}" for p in PERIODS],
)
def test_reset_anchors(
    period: ResetPeriod,
    anchor_kind: ResetAnchor,
    anchor: datetime,
    start: datetime,
    end: datetime,
) -> None:
    catalog = with_plan("p", EntitlementDef("calls", 100, reset_period=period,
                                            reset_anchor=anchor_kind))  # fmt: skip
    result, next_change = run(facts(sub("p")), catalog=catalog)
    calls = result.state.features["calls"]
    assert (calls.reset_period, calls.usage_period_anchor) == (period, anchor)
    assert result.feature_usage["calls"] == UsageRecord(0.0, start, end, None, 0)
    assert next_change == end
    assert calls.valid_until == end


def test_calendar_anchor_at_an_exact_boundary() -> None:
    catalog = with_plan(
        "p", EntitlementDef("calls", 1, reset_period=ResetPeriod.WEEK, reset_anchor=CAL)
    )
    monday = utc(2026, 3, 16)
    result = snapshot(facts(sub("p")), catalog=catalog, now=monday)
    assert result.feature_usage["calls"].period_start == monday


def test_subscription_anchor_in_another_timezone_is_normalised() -> None:
    start = START.astimezone(timezone(timedelta(hours=5)))
    result = snapshot(facts(sub("basic", start=start)))
    assert result.feature_usage["calls"].period_end == utc(2026, 3, 31, 9)


def test_usage_of_the_current_period_is_carried() -> None:
    usage = {"calls": counter("calls", 420, utc(2026, 2, 28, 9), version=12)}
    record = snapshot(facts(sub("basic"), usage=usage)).feature_usage["calls"]
    assert record == UsageRecord(420, utc(2026, 2, 28, 9), utc(2026, 3, 31, 9), NOW - HOUR, 12)


@pytest.mark.parametrize(
    "period_start",
    [utc(2026, 1, 31, 9), None, utc(2026, 3, 31, 9)],
    ids=["past-period", "no-period", "future-period"],
)
def test_usage_from_another_period_reads_as_zero(period_start: datetime | None) -> None:
    usage = {"calls": counter("calls", 999, period_start, version=5)}
    record = snapshot(facts(sub("basic"), usage=usage)).feature_usage["calls"]
    assert record == UsageRecord(0.0, utc(2026, 2, 28, 9), utc(2026, 3, 31, 9), None, 5)


def test_usage_without_a_reset_period_is_taken_as_is() -> None:
    usage = {"storage": counter("storage", 7.5, utc(2020, 1, 1), version=3)}
    record = snapshot(facts(sub("basic"), usage=usage)).feature_usage["storage"]
    assert record == UsageRecord(7.5, None, None, NOW - HOUR, 3)


def test_metered_features_without_a_counter_start_at_zero() -> None:
    result = snapshot(facts(sub("basic")))
    assert set(result.feature_usage) == {"calls", "storage", "tokens"}
    assert result.feature_usage["storage"] == UsageRecord()
    assert result.feature_usage["tokens"] == UsageRecord()


def test_usage_counters_of_features_not_entitled_are_dropped() -> None:
    usage = {"sso": counter("sso", 1, None), "ghost": counter("ghost", 1, None)}
    result = snapshot(facts(sub("basic"), usage=usage))
    assert "sso" not in result.feature_usage and "ghost" not in result.feature_usage
