"""The test clock: real time plus a forward-only offset, every refusal naming the field."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from upstream.errors import Invalid
from upstream.testclock import MAX_OFFSET, TestClock, rfc3339

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)


class FakeReal:
    """The real clock, moved by the test."""

    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def test_starts_at_real_time_and_follows_it() -> None:
    real = FakeReal()
    clock = TestClock(real)
    assert clock.now() == T0
    assert clock.offset == timedelta(0)
    real.at += timedelta(seconds=7)
    assert clock.now() == T0 + timedelta(seconds=7)


def test_advance_by_seconds_adds_to_the_offset_and_real_time_keeps_flowing() -> None:
    real = FakeReal()
    clock = TestClock(real)
    assert clock.advance(3600) == T0 + timedelta(hours=1)
    assert clock.advance(0.5) == T0 + timedelta(hours=1, seconds=0.5)
    assert clock.offset == timedelta(hours=1, seconds=0.5)
    real.at += timedelta(seconds=10)
    assert clock.read() == (T0 + timedelta(hours=1, seconds=10.5), timedelta(hours=1, seconds=0.5))


def test_advance_by_zero_is_allowed() -> None:
    clock = TestClock(FakeReal())
    assert clock.advance(0) == T0
    assert clock.offset == timedelta(0)


def test_advance_to_an_instant_in_any_zone() -> None:
    real = FakeReal()
    clock = TestClock(real)
    target = datetime(2025, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=2)))
    assert clock.advance_to(target) == target
    assert clock.advance_to(target).tzinfo == UTC
    assert clock.now() == target
    assert clock.offset == target - T0
    # The current instant itself is not "backwards".
    assert clock.advance_to(clock.now()) == target


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (-1, "only moves forward"),
        (-1e-9, "only moves forward"),
        (math.inf, "must be finite"),
        (-math.inf, "must be finite"),
        (math.nan, "must be finite"),
        (1e300, "more than 3660 days"),
        (MAX_OFFSET.total_seconds() + 1, "more than 3660 days"),
        ("60", "must be a number"),
        (True, "must be a number"),
        (None, "must be a number"),
    ],
)
def test_bad_seconds_are_refused_naming_the_field(seconds: object, message: str) -> None:
    clock = TestClock(FakeReal())
    with pytest.raises(Invalid) as err:
        clock.advance(seconds)  # type: ignore[arg-type]
    assert err.value.field == "seconds"
    assert message in err.value.message
    assert clock.offset == timedelta(0), "a refused advance moves nothing"


def test_the_offset_is_bounded_in_total_not_per_call() -> None:
    clock = TestClock(FakeReal(), max_offset=timedelta(days=10))
    clock.advance(timedelta(days=6).total_seconds())
    with pytest.raises(Invalid) as err:
        clock.advance(timedelta(days=5).total_seconds())
    assert "at most 345600.000 seconds are left" in err.value.message
    assert clock.advance(timedelta(days=4).total_seconds()) == T0 + timedelta(days=10)
    with pytest.raises(Invalid):
        clock.advance(1)


def test_going_back_to_an_earlier_instant_is_refused() -> None:
    real = FakeReal()
    clock = TestClock(real)
    clock.advance(3600)
    with pytest.raises(Invalid) as err:
        clock.advance_to(T0 + timedelta(minutes=59))
    assert err.value.field == "to"
    assert "before the test clock's current time 2025-01-31T13:00:00.000Z" in err.value.message
    assert clock.offset == timedelta(hours=1)


def test_an_instant_too_far_ahead_or_without_a_zone_is_refused() -> None:
    clock = TestClock(FakeReal())
    with pytest.raises(Invalid) as err:
        clock.advance_to(T0 + MAX_OFFSET + timedelta(seconds=1))
    assert (err.value.field, err.value.message) == (
        "to",
        "is more than 3660 days ahead of real time",
    )
    with pytest.raises(Invalid) as err:
        clock.advance_to(datetime(2026, 1, 1))
    assert (err.value.field, err.value.message) == ("to", "must include a time zone")
    assert clock.advance_to(T0 + MAX_OFFSET) == T0 + MAX_OFFSET


def test_the_field_name_can_be_given() -> None:
    clock = TestClock(FakeReal())
    with pytest.raises(Invalid) as err:
        clock.advance(-1, field="body.seconds")
    assert err.value.field == "body.seconds"


def test_concurrent_advances_all_count() -> None:
    clock = TestClock(FakeReal())
    threads = [
        threading.Thread(target=lambda: [clock.advance(1) for _ in range(500)]) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert clock.offset == timedelta(seconds=4000)


def test_rfc3339() -> None:
    assert rfc3339(T0 + timedelta(microseconds=1500)) == "2025-01-31T12:00:00.001Z"
    assert rfc3339(datetime(2025, 1, 31, 14, 0, tzinfo=timezone(timedelta(hours=2)))) == (
        "2025-01-31T12:00:00.000Z"
    )


def test_the_default_real_clock_is_the_wall_clock() -> None:
    before = datetime.now(UTC)
    now = TestClock().now()
    assert before <= now <= datetime.now(UTC)
    assert now.tzinfo is not None
