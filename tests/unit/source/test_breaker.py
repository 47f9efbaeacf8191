"""The circuit breaker's state machine, every transition."""

from __future__ import annotations

import pytest

from sidecar.source.breaker import BreakerState, CircuitBreaker


@pytest.mark.parametrize("threshold", [1, 2, 3, 7])
def test_opens_on_the_nth_consecutive_failure_and_says_so_once(threshold: int) -> None:
    breaker = CircuitBreaker(threshold)
    opened = [breaker.record_failure() for _ in range(threshold + 3)]
    assert opened == [False] * (threshold - 1) + [True] + [False] * 3
    assert breaker.is_open and breaker.state is BreakerState.OPEN


def test_a_success_resets_the_count_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(3)
    for _ in range(5):
        assert breaker.record_failure() is False
        assert breaker.record_failure() is False
        assert breaker.record_success() is False
    assert not breaker.is_open


def test_a_success_closes_an_open_breaker_and_says_so_once() -> None:
    breaker = CircuitBreaker(2)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.record_success() is True
    assert breaker.record_success() is False
    assert breaker.state is BreakerState.CLOSED
    # Closed again: it takes the full count of failures to reopen.
    assert breaker.record_failure() is False
    assert breaker.record_failure() is True


@pytest.mark.parametrize("threshold", [0, -1])
def test_refuses_a_threshold_below_one(threshold: int) -> None:
    with pytest.raises(ValueError, match="failures_to_open"):
        CircuitBreaker(threshold)
