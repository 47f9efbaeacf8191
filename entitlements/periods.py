"""Usage-period arithmetic for metered entitlements.

A metered feature's usage resets on a calendar cadence counted from an anchor
(typically the subscription start). These helpers answer "which period does
*now* fall into?" and "has a cached period ended?" without I/O or clocks, so
callers pass ``now`` explicitly and the results are reproducible.

Semantics follow Stigg's backend, which uses dayjs: the n-th boundary is
always computed from the anchor itself (never by stepping from the previous
boundary), and month/year arithmetic clamps the day to the end of the target
month. Stepping iteratively would drift: Jan 31 -> Feb 28 -> Mar 28, whereas
the service expects Jan 31 -> Feb 28 -> Mar 31.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import assert_never

from entitlements.model.state import ResetPeriod

__all__ = ["add_periods", "current_period", "rolled_over"]

_MONTHS_PER_YEAR = 12


def _require_utc(value: datetime, name: str) -> datetime:
    # A naive datetime is ambiguous (local time? UTC?) and would silently shift
    # period boundaries by the host's offset, so refuse it outright. Aware
    # values in other zones are normalised: the calendar maths is defined in
    # UTC, and a fixed offset elsewhere would move month/day boundaries.
    if value.tzinfo is UTC:
        # What every decoder and clock of ours produces; astimezone would return it unchanged
        # at the cost of two C calls on every read of a metered feature.
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value!r}")
    return value.astimezone(UTC)


def _add_months(anchor: datetime, months: int) -> datetime:
    # Work on an absolute month index so negative offsets and year carries fall
    # out of divmod instead of needing special cases.
    year, month_index = divmod(
        anchor.year * _MONTHS_PER_YEAR + anchor.month - 1 + months, _MONTHS_PER_YEAR
    )
    if not datetime.min.year <= year <= datetime.max.year:
        raise OverflowError(f"{anchor.isoformat()} + {months} months is outside the datetime range")
    month = month_index + 1
    day = min(anchor.day, calendar.monthrange(year, month)[1])
    return anchor.replace(year=year, month=month, day=day)


def _fixed_step(period: ResetPeriod) -> timedelta | None:
    # In UTC there are no DST transitions, so sub-month periods are exact
    # durations and can be handled with plain timedelta arithmetic.
    match period:
        case ResetPeriod.HOUR:
            return timedelta(hours=1)
        case ResetPeriod.DAY:
            return timedelta(days=1)
        case ResetPeriod.WEEK:
            return timedelta(weeks=1)
        case ResetPeriod.MONTH | ResetPeriod.YEAR:
            return None
        case _:
            assert_never(period)


def _months_per_period(period: ResetPeriod) -> int:
    return _MONTHS_PER_YEAR if period is ResetPeriod.YEAR else 1


def add_periods(anchor: datetime, period: ResetPeriod, n: int) -> datetime:
    """Return ``anchor`` shifted by ``n`` whole periods (``n`` may be negative).

    HOUR, DAY and WEEK are exact durations in UTC. MONTH and YEAR add calendar
    months to the anchor directly and clamp the day to the target month's
    length, e.g. Jan 31 + 1 month = Feb 28/29, Jan 31 + 2 months = Mar 31 and
    Feb 29 + 1 year = Feb 28. Time of day is preserved for every period except
    HOUR.

    Raises:
        ValueError: ``anchor`` is naive.
        OverflowError: the result falls outside the ``datetime`` range.
    """
    anchor = _require_utc(anchor, "anchor")
    step = _fixed_step(period)
    if step is None:
        return _add_months(anchor, n * _months_per_period(period))
    try:
        return anchor + step * n
    except OverflowError as exc:
        raise OverflowError(
            f"{anchor.isoformat()} + {n} x {period} is outside the datetime range"
        ) from exc


def _estimate_index(anchor: datetime, period: ResetPeriod, now: datetime) -> int:
    step = _fixed_step(period)
    if step is not None:
        # timedelta // timedelta floors on exact microsecond counts, so this is
        # already the right index, including when now precedes the anchor.
        return (now - anchor) // step
    # For calendar periods the whole-unit calendar difference lands the
    # candidate boundary in the same month (or year) as ``now``; it can only
    # be one period too far, when ``now`` is earlier in that month/year than
    # the clamped anchor day/time.
    months = (now.year - anchor.year) * _MONTHS_PER_YEAR + (now.month - anchor.month)
    return months // _months_per_period(period)


def current_period(
    anchor: datetime, period: ResetPeriod, now: datetime
) -> tuple[datetime, datetime]:
    """Return the half-open period ``[start, end)`` that contains ``now``.

    ``start = add_periods(anchor, period, k)`` and
    ``end = add_periods(anchor, period, k + 1)`` for the unique integer ``k``
    with ``start <= now < end``; ``k`` is negative when ``now`` precedes the
    anchor. A ``now`` exactly on a boundary belongs to the period starting
    there. Runs in constant time regardless of how far ``now`` is from the
    anchor.

    Raises:
        ValueError: ``anchor`` or ``now`` is naive.
        OverflowError: a boundary falls outside the ``datetime`` range.
    """
    anchor = _require_utc(anchor, "anchor")
    now = _require_utc(now, "now")
    k = _estimate_index(anchor, period, now)
    start = add_periods(anchor, period, k)
    # Boundaries are strictly increasing in k (each lands in a distinct
    # month/year, or is a positive fixed step later), so these corrections
    # terminate and yield the unique k. The estimate is exact for fixed steps
    # and at most one too high for calendar periods, so the first loop runs at
    # most once and the second never should; both are loops so that a wrong
    # estimate costs time rather than correctness.
    while start > now:
        k -= 1
        start = add_periods(anchor, period, k)
    end = add_periods(anchor, period, k + 1)
    while end <= now:
        k += 1
        start, end = end, add_periods(anchor, period, k + 1)
    return start, end


def rolled_over(period_end: datetime | None, now: datetime) -> bool:
    """Return True when a cached period ending at ``period_end`` is over.

    ``None`` means no period is cached (e.g. a non-resetting feature), which
    never rolls over. The end bound is exclusive, so ``now == period_end``
    counts as rolled over, matching :func:`current_period`.

    Raises:
        ValueError: ``period_end`` or ``now`` is naive.
    """
    now = _require_utc(now, "now")
    if period_end is None:
        return False
    return _require_utc(period_end, "period_end") <= now
