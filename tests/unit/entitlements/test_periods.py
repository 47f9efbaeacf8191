"""Tests for entitlements.periods.

Table-driven cases pin the calendar edge cases (month-end clamping, leap days,
exact boundaries, instants before the anchor); hypothesis properties check the
invariants over 1970-2200 against independent oracles.
"""

from __future__ import annotations

import calendar
import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from entitlements import periods
from entitlements.model.state import ResetPeriod
from entitlements.periods import add_periods, current_period, rolled_over

H = ResetPeriod.HOUR
D = ResetPeriod.DAY
W = ResetPeriod.WEEK
M = ResetPeriod.MONTH
Y = ResetPeriod.YEAR

FIXED_STEPS = {H: timedelta(hours=1), D: timedelta(days=1), W: timedelta(weeks=1)}
CALENDAR_MONTHS = {M: 1, Y: 12}

# Derandomised so the suite is reproducible run to run; no database so a local
# failure cache cannot change which examples run.
PROPERTY = settings(max_examples=400, derandomize=True, database=None, deadline=None)

MIN_TEST_DT = datetime(1970, 1, 1)
MAX_TEST_DT = datetime(2200, 12, 31, 23, 59, 59, 999999)

utc_datetimes = st.datetimes(min_value=MIN_TEST_DT, max_value=MAX_TEST_DT, timezones=st.just(UTC))
all_periods = st.sampled_from(list(ResetPeriod))
# Whole-minute offsets in (-24h, 24h), the range datetime.timezone accepts.
fixed_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def ts(text: str) -> datetime:
    """Parse a compact 'YYYY-MM-DD[ HH:MM[:SS[.ffffff]]]' literal as UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def month_shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + months
    return index // 12, index % 12 + 1


def boundary_index(anchor: datetime, period: ResetPeriod, boundary: datetime) -> int:
    """Recover k from a boundary without using the module under test."""
    if period in FIXED_STEPS:
        quotient, remainder = divmod(boundary - anchor, FIXED_STEPS[period])
        assert remainder == timedelta(0)
        return quotient
    months = (boundary.year - anchor.year) * 12 + boundary.month - anchor.month
    assert months % CALENDAR_MONTHS[period] == 0
    return months // CALENDAR_MONTHS[period]


# --------------------------------------------------------------------------
# add_periods: table-driven
# --------------------------------------------------------------------------

ADD_CASES: list[tuple[datetime, ResetPeriod, int, datetime]] = [
    # HOUR: plain durations, crossing day/month/year and leap-day boundaries.
    (utc(2024, 1, 1, 10, 15), H, 0, utc(2024, 1, 1, 10, 15)),
    (utc(2024, 1, 1, 23, 30), H, 1, utc(2024, 1, 2, 0, 30)),
    (utc(2024, 1, 1, 0, 15), H, -1, utc(2023, 12, 31, 23, 15)),
    (utc(2024, 2, 28, 23, 0), H, 1, utc(2024, 2, 29, 0, 0)),
    (utc(2023, 2, 28, 23, 0), H, 1, utc(2023, 3, 1, 0, 0)),
    (utc(2024, 3, 10, 1, 30), H, 24, utc(2024, 3, 11, 1, 30)),  # US DST day: irrelevant in UTC
    (utc(2024, 1, 1, 0, 0, 0, 1), H, 24 * 366, utc(2025, 1, 1, 0, 0, 0, 1)),
    # DAY
    (utc(2024, 2, 28, 12), D, 1, utc(2024, 2, 29, 12)),
    (utc(2023, 2, 28, 12), D, 1, utc(2023, 3, 1, 12)),
    (utc(2024, 12, 31, 23, 59, 59, 999999), D, 1, utc(2025, 1, 1, 23, 59, 59, 999999)),
    (utc(2024, 3, 1), D, -1, utc(2024, 2, 29)),
    (utc(2024, 1, 1), D, 366, utc(2025, 1, 1)),
    (utc(2024, 1, 1), D, -365, utc(2023, 1, 1)),
    # WEEK
    (utc(2024, 12, 28, 6), W, 1, utc(2025, 1, 4, 6)),
    (utc(2024, 3, 4), W, -1, utc(2024, 2, 26)),
    (utc(2024, 2, 22), W, 1, utc(2024, 2, 29)),
    (utc(2024, 1, 1), W, 52, utc(2024, 12, 30)),
    # MONTH: computed from the anchor, clamped to the target month's last day.
    (utc(2023, 1, 31), M, 1, utc(2023, 2, 28)),
    (utc(2024, 1, 31), M, 1, utc(2024, 2, 29)),
    (utc(2023, 1, 31), M, 2, utc(2023, 3, 31)),  # not Mar 28: no drift
    (utc(2023, 1, 31), M, 3, utc(2023, 4, 30)),
    (utc(2023, 1, 31), M, 4, utc(2023, 5, 31)),
    (utc(2023, 1, 30), M, 1, utc(2023, 2, 28)),
    (utc(2024, 1, 30), M, 1, utc(2024, 2, 29)),
    (utc(2023, 1, 29), M, 1, utc(2023, 2, 28)),
    (utc(2024, 1, 29), M, 1, utc(2024, 2, 29)),
    (utc(2023, 1, 28), M, 1, utc(2023, 2, 28)),
    (utc(2023, 8, 31), M, 1, utc(2023, 9, 30)),
    (utc(2023, 3, 31), M, -1, utc(2023, 2, 28)),
    (utc(2024, 3, 31), M, -1, utc(2024, 2, 29)),
    (utc(2024, 3, 30), M, -1, utc(2024, 2, 29)),
    (utc(2024, 5, 31), M, -1, utc(2024, 4, 30)),
    (utc(2024, 12, 31, 18, 45), M, 2, utc(2025, 2, 28, 18, 45)),
    (utc(2023, 11, 30), M, 3, utc(2024, 2, 29)),
    (utc(2024, 12, 15), M, 1, utc(2025, 1, 15)),
    (utc(2024, 1, 15), M, -1, utc(2023, 12, 15)),
    (utc(2024, 1, 15), M, -13, utc(2022, 12, 15)),
    (utc(2024, 1, 15), M, 12, utc(2025, 1, 15)),
    (utc(2024, 2, 29), M, 12, utc(2025, 2, 28)),
    (utc(2024, 2, 29), M, 48, utc(2028, 2, 29)),
    (utc(2024, 2, 29), M, 1, utc(2024, 3, 29)),
    (utc(2024, 7, 10, 9, 8, 7, 6), M, 0, utc(2024, 7, 10, 9, 8, 7, 6)),
    # YEAR
    (utc(2024, 2, 29), Y, 1, utc(2025, 2, 28)),
    (utc(2024, 2, 29), Y, 4, utc(2028, 2, 29)),
    (utc(2024, 2, 29), Y, -1, utc(2023, 2, 28)),
    (utc(2024, 2, 29), Y, -4, utc(2020, 2, 29)),
    (utc(2000, 2, 29), Y, 100, utc(2100, 2, 28)),  # 2100 is not a leap year
    (utc(2000, 2, 29), Y, 400, utc(2400, 2, 29)),
    (utc(2023, 12, 31, 23, 59), Y, 1, utc(2024, 12, 31, 23, 59)),
    (utc(2023, 6, 1), Y, -3, utc(2020, 6, 1)),
]


@pytest.mark.parametrize(("anchor", "period", "n", "expected"), ADD_CASES)
def test_add_periods_table(
    anchor: datetime, period: ResetPeriod, n: int, expected: datetime
) -> None:
    result = add_periods(anchor, period, n)
    assert result == expected
    assert result.tzinfo is UTC


def test_add_periods_month_is_anchored_not_iterative() -> None:
    anchor = utc(2023, 1, 31)
    stepped = add_periods(add_periods(anchor, M, 1), M, 1)
    assert stepped == utc(2023, 3, 28)
    assert add_periods(anchor, M, 2) == utc(2023, 3, 31)


def test_add_periods_normalises_other_offsets_to_utc() -> None:
    # 23:00 at UTC-5 on Jan 31 is 04:00 UTC on Feb 1; the calendar maths must
    # use the UTC date, not the local one.
    anchor = datetime(2024, 1, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5)))
    result = add_periods(anchor, M, 1)
    assert result == utc(2024, 3, 1, 4, 0)
    assert result.tzinfo is UTC


@pytest.mark.parametrize("period", list(ResetPeriod))
def test_add_periods_rejects_naive(period: ResetPeriod) -> None:
    with pytest.raises(ValueError, match="anchor"):
        add_periods(datetime(2024, 1, 1), period, 1)


@pytest.mark.parametrize(
    ("anchor", "period", "n"),
    [
        (datetime.max.replace(tzinfo=UTC), H, 1),
        (datetime.max.replace(tzinfo=UTC), D, 1),
        (datetime.max.replace(tzinfo=UTC), W, 1),
        (utc(9999, 12, 1), M, 1),
        (utc(9999, 1, 1), Y, 1),
        (datetime.min.replace(tzinfo=UTC), H, -1),
        (datetime.min.replace(tzinfo=UTC), D, -1),
        (datetime.min.replace(tzinfo=UTC), W, -1),
        (utc(1, 1, 31), M, -1),
        (utc(1, 6, 1), Y, -1),
        (utc(2024, 1, 1), D, 10**12),
        (utc(2024, 1, 1), M, 10**12),
        (utc(2024, 1, 1), Y, -(10**12)),
    ],
)
def test_add_periods_out_of_range_raises_overflow(
    anchor: datetime, period: ResetPeriod, n: int
) -> None:
    with pytest.raises(OverflowError):
        add_periods(anchor, period, n)


@pytest.mark.parametrize(
    ("anchor", "period", "n", "expected"),
    [
        (utc(9999, 11, 30), M, 1, utc(9999, 12, 30)),
        (utc(9998, 2, 28), Y, 1, utc(9999, 2, 28)),
        (utc(1, 2, 28), M, -1, utc(1, 1, 28)),
        (
            datetime.max.replace(tzinfo=UTC) - timedelta(hours=1),
            H,
            1,
            datetime.max.replace(tzinfo=UTC),
        ),
    ],
)
def test_add_periods_reaches_range_edges(
    anchor: datetime, period: ResetPeriod, n: int, expected: datetime
) -> None:
    assert add_periods(anchor, period, n) == expected


# --------------------------------------------------------------------------
# current_period: table-driven
# --------------------------------------------------------------------------

# (id, anchor, period, now, expected start, expected end). Literals are UTC.
PERIOD_CASES: list[tuple[str, str, ResetPeriod, str, str, str]] = [
    # MONTH: month-end anchors under clamping.
    ("m-jan31-mar15-leap", "2024-01-31", M, "2024-03-15", "2024-02-29", "2024-03-31"),
    ("m-jan31-mar15", "2023-01-31", M, "2023-03-15", "2023-02-28", "2023-03-31"),
    ("m-jan31-feb28-leap", "2024-01-31", M, "2024-02-28 23:00", "2024-01-31", "2024-02-29"),
    ("m-jan31-feb29-on-boundary", "2024-01-31", M, "2024-02-29", "2024-02-29", "2024-03-31"),
    ("m-jan31-mar31-on-boundary", "2024-01-31", M, "2024-03-31", "2024-03-31", "2024-04-30"),
    ("m-jan31-apr30-before-noon", "2024-01-31 12:00", M, "2024-04-30 11:00",
     "2024-03-31 12:00", "2024-04-30 12:00"),
    ("m-jan31-apr30-after-noon", "2024-01-31 12:00", M, "2024-04-30 13:00",
     "2024-04-30 12:00", "2024-05-31 12:00"),
    ("m-jan30-feb", "2023-01-30", M, "2023-03-01", "2023-02-28", "2023-03-30"),
    ("m-jan29-feb-leap", "2024-01-29", M, "2024-02-29 05:00", "2024-02-29", "2024-03-29"),
    ("m-jan29-feb", "2023-01-29", M, "2023-03-28", "2023-02-28", "2023-03-29"),
    ("m-aug31-sep", "2023-08-31", M, "2023-10-01", "2023-09-30", "2023-10-31"),
    ("m-same-day-earlier-time", "2024-01-15 10:00", M, "2024-05-15 09:59:59.999999",
     "2024-04-15 10:00", "2024-05-15 10:00"),
    ("m-same-day-exact-time", "2024-01-15 10:00", M, "2024-05-15 10:00",
     "2024-05-15 10:00", "2024-06-15 10:00"),
    ("m-now-equals-anchor", "2024-01-31", M, "2024-01-31", "2024-01-31", "2024-02-29"),
    ("m-year-boundary", "2023-12-31", M, "2024-01-01", "2023-12-31", "2024-01-31"),
    ("m-year-boundary-2", "2023-11-30", M, "2024-01-05", "2023-12-30", "2024-01-30"),
    ("m-far-apart", "1970-01-31", M, "2200-02-28 12:00", "2200-02-28", "2200-03-31"),
    # MONTH: now before the anchor (negative k).
    ("m-before-anchor", "2024-03-15", M, "2024-01-20", "2024-01-15", "2024-02-15"),
    ("m-before-anchor-clamped", "2024-03-31", M, "2024-02-29 23:00", "2024-02-29", "2024-03-31"),
    ("m-before-anchor-clamped-2", "2024-03-31", M, "2024-02-28", "2024-01-31", "2024-02-29"),
    ("m-just-before-anchor", "2024-03-15", M, "2024-03-14 23:59:59.999999",
     "2024-02-15", "2024-03-15"),
    ("m-before-anchor-prev-year", "2024-01-31", M, "2023-12-30", "2023-11-30", "2023-12-31"),
    # YEAR: Feb 29 anchors, century non-leap years, year boundaries.
    ("y-feb29-day-before", "2024-02-29", Y, "2025-02-27", "2024-02-29", "2025-02-28"),
    ("y-feb29-on-boundary", "2024-02-29", Y, "2025-02-28", "2025-02-28", "2026-02-28"),
    ("y-feb29-next-leap", "2024-02-29", Y, "2028-03-01", "2028-02-29", "2029-02-28"),
    ("y-feb29-leap-day-before", "2024-02-29", Y, "2028-02-28 23:00", "2027-02-28", "2028-02-29"),
    ("y-feb29-2100-not-leap", "2096-02-29", Y, "2100-03-01", "2100-02-28", "2101-02-28"),
    ("y-same-date-earlier-time", "2023-06-01 12:00", Y, "2024-06-01 11:00",
     "2023-06-01 12:00", "2024-06-01 12:00"),
    ("y-new-year", "2023-12-31 23:00", Y, "2024-01-01", "2023-12-31 23:00", "2024-12-31 23:00"),
    ("y-before-anchor", "2023-06-01", Y, "2020-01-01", "2019-06-01", "2020-06-01"),
    ("y-before-anchor-on-boundary", "2023-06-01", Y, "2021-06-01", "2021-06-01", "2022-06-01"),
    # DAY
    ("d-just-before-boundary", "2024-01-01 08:00", D, "2024-01-05 07:59",
     "2024-01-04 08:00", "2024-01-05 08:00"),
    ("d-on-boundary", "2024-01-01 08:00", D, "2024-01-05 08:00",
     "2024-01-05 08:00", "2024-01-06 08:00"),
    ("d-leap-day", "2024-01-01 08:00", D, "2024-02-29 20:00",
     "2024-02-29 08:00", "2024-03-01 08:00"),
    ("d-year-boundary", "2023-12-01 12:00", D, "2024-01-01 03:00",
     "2023-12-31 12:00", "2024-01-01 12:00"),
    ("d-before-anchor", "2024-01-10 08:00", D, "2024-01-07 09:00",
     "2024-01-07 08:00", "2024-01-08 08:00"),
    ("d-before-anchor-on-boundary", "2024-01-10 08:00", D, "2024-01-07 08:00",
     "2024-01-07 08:00", "2024-01-08 08:00"),
    # WEEK
    ("w-on-boundary", "2024-01-01", W, "2024-01-15", "2024-01-15", "2024-01-22"),
    ("w-mid-week", "2024-01-01 09:00", W, "2024-01-17 03:00", "2024-01-15 09:00",
     "2024-01-22 09:00"),
    ("w-year-boundary", "2024-12-20", W, "2025-01-02", "2024-12-27", "2025-01-03"),
    ("w-before-anchor", "2024-01-01", W, "2023-12-20", "2023-12-18", "2023-12-25"),
    # HOUR: boundaries fall mid-hour and cross days, years and leap days.
    ("h-across-days", "2024-01-01 00:30", H, "2024-01-02 00:10",
     "2024-01-01 23:30", "2024-01-02 00:30"),
    ("h-across-year", "2023-06-01 00:45", H, "2024-01-01 00:15",
     "2023-12-31 23:45", "2024-01-01 00:45"),
    ("h-on-boundary", "2024-01-01 00:30", H, "2024-01-03 05:30",
     "2024-01-03 05:30", "2024-01-03 06:30"),
    ("h-microsecond-before", "2024-01-01 00:30", H, "2024-01-03 05:29:59.999999",
     "2024-01-03 04:30", "2024-01-03 05:30"),
    ("h-leap-day", "2024-01-01 00:30", H, "2024-02-29 23:59",
     "2024-02-29 23:30", "2024-03-01 00:30"),
    ("h-before-anchor", "2024-01-01 00:30", H, "2023-12-31 22:00",
     "2023-12-31 21:30", "2023-12-31 22:30"),
    ("h-far-apart", "1970-01-01 00:20", H, "2200-12-31 23:59",
     "2200-12-31 23:20", "2201-01-01 00:20"),
]  # fmt: skip

PERIOD_PARAMS = [
    pytest.param(ts(anchor), period, ts(now), ts(start), ts(end), id=case_id)
    for case_id, anchor, period, now, start, end in PERIOD_CASES
]


@pytest.mark.parametrize(("anchor", "period", "now", "start", "end"), PERIOD_PARAMS)
def test_current_period_table(
    anchor: datetime, period: ResetPeriod, now: datetime, start: datetime, end: datetime
) -> None:
    assert current_period(anchor, period, now) == (start, end)


@pytest.mark.parametrize(("anchor", "period", "now", "start", "end"), PERIOD_PARAMS)
def test_current_period_table_invariants(
    anchor: datetime, period: ResetPeriod, now: datetime, start: datetime, end: datetime
) -> None:
    # Guards the table itself: every expectation must be a genuine period.
    assert start <= now < end
    k = boundary_index(anchor, period, start)
    assert add_periods(anchor, period, k) == start
    assert add_periods(anchor, period, k + 1) == end


@pytest.mark.parametrize("period", list(ResetPeriod))
def test_current_period_now_at_anchor_is_first_period(period: ResetPeriod) -> None:
    anchor = utc(2024, 1, 31, 13, 14, 15, 161718)
    assert current_period(anchor, period, anchor) == (anchor, add_periods(anchor, period, 1))


@pytest.mark.parametrize("period", list(ResetPeriod))
def test_current_period_boundary_belongs_to_new_period(period: ResetPeriod) -> None:
    anchor = utc(2023, 1, 31, 6)
    for k in range(-30, 30):
        boundary = add_periods(anchor, period, k)
        assert current_period(anchor, period, boundary) == (
            boundary,
            add_periods(anchor, period, k + 1),
        )
        before = boundary - timedelta(microseconds=1)
        assert current_period(anchor, period, before) == (
            add_periods(anchor, period, k - 1),
            boundary,
        )


def test_current_period_normalises_other_offsets_to_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    anchor = datetime(2024, 2, 1, 1, 0, tzinfo=plus2)  # Jan 31 23:00 UTC
    now = datetime(2024, 3, 15, tzinfo=timezone(timedelta(hours=-7)))
    start, end = current_period(anchor, M, now)
    assert (start, end) == (utc(2024, 2, 29, 23), utc(2024, 3, 31, 23))
    assert start.tzinfo is UTC
    assert end.tzinfo is UTC


@pytest.mark.parametrize("period", list(ResetPeriod))
def test_current_period_rejects_naive(period: ResetPeriod) -> None:
    with pytest.raises(ValueError, match="anchor"):
        current_period(datetime(2024, 1, 1), period, utc(2024, 1, 1))
    with pytest.raises(ValueError, match="now"):
        current_period(utc(2024, 1, 1), period, datetime(2024, 1, 1))


@pytest.mark.parametrize("period", list(ResetPeriod))
def test_current_period_end_beyond_datetime_range_raises_overflow(period: ResetPeriod) -> None:
    anchor = utc(2024, 1, 1)
    with pytest.raises(OverflowError):
        current_period(anchor, period, datetime.max.replace(tzinfo=UTC))


def max_add_periods_calls(period: ResetPeriod) -> int:
    # One call per bound; calendar periods may need one downward correction
    # because the clamped anchor day/time can fall later in now's month.
    return 2 if period in FIXED_STEPS else 3


def _count_add_periods(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real: Callable[[datetime, ResetPeriod, int], datetime] = periods.add_periods

    def counting(anchor: datetime, period: ResetPeriod, n: int) -> datetime:
        calls[0] += 1
        return real(anchor, period, n)

    monkeypatch.setattr(periods, "add_periods", counting)
    return calls


@pytest.mark.parametrize("period", list(ResetPeriod))
def test_current_period_is_constant_time(
    period: ResetPeriod, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_add_periods(monkeypatch)
    anchor = utc(1970, 1, 31, 23, 59)
    now = utc(2200, 12, 31, 0, 1)
    start, end = periods.current_period(anchor, period, now)
    assert start <= now < end
    assert calls[0] <= max_add_periods_calls(period)


# --------------------------------------------------------------------------
# rolled_over
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period_end", "now", "expected"),
    [
        pytest.param(None, utc(2024, 1, 1), False, id="no-cached-period"),
        pytest.param(utc(2024, 2, 1), utc(2024, 1, 31, 23, 59, 59, 999999), False, id="before-end"),
        pytest.param(utc(2024, 2, 1), utc(2024, 2, 1), True, id="exactly-at-end"),
        pytest.param(utc(2024, 2, 1), utc(2024, 2, 1, 0, 0, 0, 1), True, id="after-end"),
        pytest.param(utc(2024, 2, 1), utc(2030, 1, 1), True, id="long-after-end"),
        pytest.param(
            datetime(2024, 2, 1, 2, tzinfo=timezone(timedelta(hours=2))),
            utc(2024, 2, 1),
            True,
            id="same-instant-other-offset",
        ),
        pytest.param(
            datetime(2024, 2, 1, 2, tzinfo=timezone(timedelta(hours=1))),
            utc(2024, 2, 1),
            False,
            id="later-instant-other-offset",
        ),
    ],
)
def test_rolled_over_table(period_end: datetime | None, now: datetime, expected: bool) -> None:
    assert rolled_over(period_end, now) is expected


def test_rolled_over_rejects_naive() -> None:
    with pytest.raises(ValueError, match="now"):
        rolled_over(None, datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="now"):
        rolled_over(utc(2024, 1, 1), datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="period_end"):
        rolled_over(datetime(2024, 1, 1), utc(2024, 1, 1))


# --------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods, now=utc_datetimes)
def test_prop_current_period_contains_now(
    anchor: datetime, period: ResetPeriod, now: datetime
) -> None:
    start, end = current_period(anchor, period, now)
    assert start <= now < end
    assert start.tzinfo is UTC
    assert end.tzinfo is UTC


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods, now=utc_datetimes)
def test_prop_current_period_bounds_are_consecutive_boundaries(
    anchor: datetime, period: ResetPeriod, now: datetime
) -> None:
    start, end = current_period(anchor, period, now)
    k = boundary_index(anchor, period, start)
    assert add_periods(anchor, period, k) == start
    assert add_periods(anchor, period, k + 1) == end
    assert (k < 0) == (now < anchor)


# How far to wander from the anchor so the brute-force oracle's scan of
# k in [-ORACLE_K, ORACLE_K] is guaranteed to cover the answer.
ORACLE_K = 60
ORACLE_SPAN = {
    H: timedelta(hours=50),
    D: timedelta(days=50),
    W: timedelta(weeks=50),
    M: timedelta(days=50 * 28),
    Y: timedelta(days=50 * 365),
}


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods, fraction=st.floats(min_value=-1.0, max_value=1.0))
def test_prop_current_period_matches_linear_scan(
    anchor: datetime, period: ResetPeriod, fraction: float
) -> None:
    now = anchor + ORACLE_SPAN[period] * fraction
    boundaries = [add_periods(anchor, period, k) for k in range(-ORACLE_K, ORACLE_K + 1)]
    expected = next((lo, hi) for lo, hi in itertools.pairwise(boundaries) if lo <= now < hi)
    assert current_period(anchor, period, now) == expected


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods, k=st.integers(min_value=-400, max_value=400))
def test_prop_boundaries_map_to_themselves(anchor: datetime, period: ResetPeriod, k: int) -> None:
    boundary = add_periods(anchor, period, k)
    assert current_period(anchor, period, boundary) == (
        boundary,
        add_periods(anchor, period, k + 1),
    )
    just_before = boundary - timedelta(microseconds=1)
    assert current_period(anchor, period, just_before) == (
        add_periods(anchor, period, k - 1),
        boundary,
    )


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods, now=utc_datetimes)
def test_prop_current_period_is_constant_time(
    anchor: datetime, period: ResetPeriod, now: datetime
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        calls = _count_add_periods(monkeypatch)
        periods.current_period(anchor, period, now)
    assert calls[0] <= max_add_periods_calls(period)


@PROPERTY
@given(
    anchor=utc_datetimes,
    period=all_periods,
    now=utc_datetimes,
    anchor_tz=fixed_offsets,
    now_tz=fixed_offsets,
)
def test_prop_current_period_ignores_input_offsets(
    anchor: datetime, period: ResetPeriod, now: datetime, anchor_tz: timezone, now_tz: timezone
) -> None:
    expected = current_period(anchor, period, now)
    assert current_period(anchor.astimezone(anchor_tz), period, now.astimezone(now_tz)) == expected


@PROPERTY
@given(anchor=utc_datetimes, k=st.integers(min_value=-3000, max_value=3000))
def test_prop_month_clamps_day_to_target_month(anchor: datetime, k: int) -> None:
    result = add_periods(anchor, M, k)
    year, month = month_shift(anchor.year, anchor.month, k)
    assert (result.year, result.month) == (year, month)
    assert result.day == min(anchor.day, days_in_month(year, month))
    assert result.timetz() == anchor.timetz()


@PROPERTY
@given(anchor=utc_datetimes, k=st.integers(min_value=-250, max_value=250))
def test_prop_year_clamps_day_to_target_month(anchor: datetime, k: int) -> None:
    result = add_periods(anchor, Y, k)
    assert result == add_periods(anchor, M, 12 * k)
    assert (result.year, result.month) == (anchor.year + k, anchor.month)
    assert result.day == min(anchor.day, days_in_month(anchor.year + k, anchor.month))
    assert result.timetz() == anchor.timetz()


@PROPERTY
@given(
    anchor=utc_datetimes,
    period=st.sampled_from([D, W, M, Y]),
    k=st.integers(min_value=-200, max_value=200),
)
def test_prop_time_of_day_preserved(anchor: datetime, period: ResetPeriod, k: int) -> None:
    assert add_periods(anchor, period, k).timetz() == anchor.timetz()


@PROPERTY
@given(
    anchor=utc_datetimes,
    period=st.sampled_from([H, D, W]),
    n=st.integers(min_value=-5000, max_value=5000),
    m=st.integers(min_value=-5000, max_value=5000),
)
def test_prop_fixed_periods_are_exact_and_additive(
    anchor: datetime, period: ResetPeriod, n: int, m: int
) -> None:
    assert add_periods(anchor, period, n) - anchor == FIXED_STEPS[period] * n
    assert add_periods(add_periods(anchor, period, n), period, m) == add_periods(
        anchor, period, n + m
    )


@PROPERTY
@given(anchor=utc_datetimes, k=st.integers(min_value=-5000, max_value=5000))
def test_prop_hour_preserves_minute_and_below(anchor: datetime, k: int) -> None:
    result = add_periods(anchor, H, k)
    assert (result.minute, result.second, result.microsecond) == (
        anchor.minute,
        anchor.second,
        anchor.microsecond,
    )


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods, k=st.integers(min_value=-400, max_value=400))
def test_prop_boundaries_strictly_increase(anchor: datetime, period: ResetPeriod, k: int) -> None:
    assert add_periods(anchor, period, k) < add_periods(anchor, period, k + 1)


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods)
def test_prop_zero_periods_is_identity(anchor: datetime, period: ResetPeriod) -> None:
    assert add_periods(anchor, period, 0) == anchor


@PROPERTY
@given(
    anchor=utc_datetimes,
    period=st.sampled_from([M, Y]),
    k=st.integers(min_value=-200, max_value=200),
)
def test_prop_calendar_round_trip_when_no_clamping(
    anchor: datetime, period: ResetPeriod, k: int
) -> None:
    # Days 1-28 exist in every month, so no clamping occurs and the shift is
    # exactly invertible; clamping is the only source of information loss.
    anchor = anchor.replace(day=min(anchor.day, 28))
    assert add_periods(add_periods(anchor, period, k), period, -k) == anchor


@PROPERTY
@given(period_end=st.none() | utc_datetimes, now=utc_datetimes)
def test_prop_rolled_over_matches_comparison(period_end: datetime | None, now: datetime) -> None:
    assert rolled_over(period_end, now) is (period_end is not None and period_end <= now)


@PROPERTY
@given(anchor=utc_datetimes, period=all_periods, now=utc_datetimes)
def test_prop_current_period_rolls_over_exactly_at_end(
    anchor: datetime, period: ResetPeriod, now: datetime
) -> None:
    _, end = current_period(anchor, period, now)
    assert not rolled_over(end, now)
    assert not rolled_over(end, end - timedelta(microseconds=1))
    assert rolled_over(end, end)
    assert current_period(anchor, period, end)[0] == end
