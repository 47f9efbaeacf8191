"""A circuit breaker for an optional tier: after repeated failures, stop paying for it.

A stalled Redis costs every read its timeout before the read goes on to upstream. Once a few
operations in a row have failed, the breaker opens and reads skip Redis altogether; whoever
owns the breaker probes in the background and closes it when the tier answers again. Pure
state, no I/O and no clock: the caller decides when and how to probe.
"""

from __future__ import annotations

from enum import Enum


class BreakerState(Enum):
    CLOSED = "closed"  # the tier is used
    OPEN = "open"  # the tier is skipped until a probe succeeds


class CircuitBreaker:
    """Opens after ``failures_to_open`` consecutive failures; any success closes it."""

    def __init__(self, failures_to_open: int = 3) -> None:
        if failures_to_open < 1:
            raise ValueError(f"failures_to_open must be at least 1, got {failures_to_open}")
        self._failures_to_open = failures_to_open
        self._consecutive_failures = 0
        self.state = BreakerState.CLOSED

    @property
    def is_open(self) -> bool:
        return self.state is BreakerState.OPEN

    def record_failure(self) -> bool:
        """Note a failed operation; True when this failure opened the breaker."""
        self._consecutive_failures += 1
        if self.state is BreakerState.CLOSED and (
            self._consecutive_failures >= self._failures_to_open
        ):
            self.state = BreakerState.OPEN
            return True
        return False

    def record_success(self) -> bool:
        """Note a successful operation; True when this success closed the breaker."""
        self._consecutive_failures = 0
        if self.state is BreakerState.OPEN:
            self.state = BreakerState.CLOSED
            return True
        return False
