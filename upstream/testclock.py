"""Upstream's test clock: real time plus an offset that only moves forward.

With ``TEST_CLOCK_ENABLED=1`` upstream reads the time from a :class:`TestClock` instead of the
wall clock, and ``POST /v1/test-clock/advance`` moves it forward, so a customer can be walked
through trial ends, period resets and expiries in seconds (``docs/upstream.md``, "Test clock").
Time keeps flowing at its real rate between advances.

Pure apart from reading the real clock it is given; the offset is guarded by a lock, so readers
on other threads never see a torn update (upstream itself reads it from its one event loop).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from upstream.errors import Invalid

#: Farthest the test clock may run ahead of real time: about ten years, enough to walk through
#: yearly resets, short of the year-9999 edge of ``datetime`` in any period arithmetic.
MAX_OFFSET = timedelta(days=3660)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class TestClock:
    """``now()`` is ``real() + offset``; :meth:`advance` and :meth:`advance_to` grow the offset."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        real: Callable[[], datetime] = _utcnow,
        *,
        max_offset: timedelta = MAX_OFFSET,
    ) -> None:
        self._real = real
        self._max_offset = max_offset
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    @property
    def offset(self) -> timedelta:
        with self._lock:
            return self._offset

    @property
    def max_offset(self) -> timedelta:
        return self._max_offset

    def now(self) -> datetime:
        with self._lock:
            return self._real() + self._offset

    def read(self) -> tuple[datetime, timedelta]:
        """The current time and the offset it was computed with, read together."""
        with self._lock:
            return self._real() + self._offset, self._offset

    def advance(self, seconds: float, *, field: str = "seconds") -> datetime:
        """Move forward by ``seconds`` (0 allowed); returns the new time.

        Refuses, naming ``field``: anything not a finite number, a negative value (the clock
        never goes back), and a value taking the offset past :data:`MAX_OFFSET`.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise Invalid("must be a number of seconds", field=field)
        if not math.isfinite(seconds):
            raise Invalid("must be finite", field=field)
        if seconds < 0:
            raise Invalid("must be >= 0: the test clock only moves forward", field=field)
        with self._lock:
            room = (self._max_offset - self._offset).total_seconds()
            if seconds > room:
                raise Invalid(
                    f"would move the test clock more than {self._limit_text()} ahead of real "
                    f"time; at most {max(room, 0.0):.3f} seconds are left",
                    field=field,
                )
            self._offset += timedelta(seconds=seconds)
            return self._real() + self._offset

    def advance_to(self, instant: datetime, *, field: str = "to") -> datetime:
        """Move forward to ``instant`` (an aware datetime); returns the new time.

        Refuses, naming ``field``: a naive datetime, an instant before the clock's current
        time, and one more than :data:`MAX_OFFSET` ahead of real time.
        """
        if instant.tzinfo is None or instant.utcoffset() is None:
            raise Invalid("must include a time zone", field=field)
        with self._lock:
            real = self._real()
            now = real + self._offset
            if instant < now:
                raise Invalid(
                    f"is before the test clock's current time {rfc3339(now)}: the test clock "
                    "only moves forward",
                    field=field,
                )
            offset = instant - real
            if offset > self._max_offset:
                raise Invalid(f"is more than {self._limit_text()} ahead of real time", field=field)
            self._offset = offset
            return instant.astimezone(UTC)

    def _limit_text(self) -> str:
        return f"{self._max_offset.days} days"


def rfc3339(at: datetime) -> str:
    """``2025-01-31T12:00:00.000Z``: UTC, millisecond precision."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
