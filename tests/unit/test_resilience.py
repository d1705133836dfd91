"""The circuit breaker and bulkhead of a remote backend (adapters/resilience.py), on a
clock the test turns."""

from __future__ import annotations

import pytest

from adapters.resilience import CLOSED, HALF_OPEN, OPEN, TRIAL_WAIT_S, Bulkhead, CircuitBreaker


@pytest.fixture
def clock() -> list[float]:
    return [0.0]


def _breaker(clock: list[float]) -> CircuitBreaker:
    return CircuitBreaker(threshold=3, open_s=2.0, max_open_s=5.0, clock=lambda: clock[0])


def test_the_circuit_opens_after_the_threshold_of_failures_in_a_row(clock: list[float]) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        assert breaker.allow() == 0.0
        breaker.failed()
    assert breaker.state == OPEN
    assert breaker.allow() == pytest.approx(2.0)


def test_a_success_between_failures_starts_the_count_again(clock: list[float]) -> None:
    breaker = _breaker(clock)
    breaker.failed()
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state == CLOSED


def test_after_the_open_period_one_trial_goes_through(clock: list[float]) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failed()
    clock[0] = 2.0
    assert breaker.allow() == 0.0
    assert breaker.state == HALF_OPEN
    assert breaker.allow() == TRIAL_WAIT_S  # a second caller waits for the trial


def test_a_successful_trial_closes_the_circuit(clock: list[float]) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failed()
    clock[0] = 2.0
    breaker.allow()
    breaker.succeeded()
    assert breaker.state == CLOSED
    assert breaker.allow() == 0.0


def test_a_failed_trial_opens_the_circuit_for_twice_as_long_up_to_the_cap(
    clock: list[float],
) -> None:
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failed()
    clock[0] = 2.0
    breaker.allow()
    breaker.failed()
    assert breaker.allow() == pytest.approx(4.0)
    clock[0] = 6.0
    breaker.allow()
    breaker.failed()
    assert breaker.allow() == pytest.approx(5.0)


def test_the_bulkhead_refuses_one_more_than_its_limit() -> None:
    bulkhead = Bulkhead(2, wait_s=0.01)
    assert bulkhead.enter(None)
    assert bulkhead.enter(None)
    assert not bulkhead.enter(None)
    bulkhead.leave()
    assert bulkhead.enter(None)


def test_the_bulkhead_never_waits_past_the_callers_time() -> None:
    bulkhead = Bulkhead(1, wait_s=30.0)
    assert bulkhead.enter(None)
    assert not bulkhead.enter(0.0)
