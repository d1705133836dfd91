"""What keeps a failing ministry backend from taking the gateway down with it (pure but
for a lock): a circuit breaker that stops calling a backend that keeps failing, and a
bulkhead that bounds the fetches in flight to one backend.

A backend that is down or hangs costs every call that needs it a full timeout, and holds
the worker thread that waits; without these, a few seconds of a dead backend fill every
worker and the calls that never needed it are refused too. With them:

- after `threshold` failures in a row the circuit **opens**: fetches fail at once
  (BACKEND_UNAVAILABLE, with RetryInfo: the time until it half-opens) for `open_s`, which
  doubles each time a trial fails, up to `max_open_s`;
- then it is **half-open**: one fetch is let through as a trial; its success closes the
  circuit, its failure opens it again;
- at most `limit` fetches to the backend are in flight at once; one more waits for a
  slot a short while (`wait_s`, within the caller's time) and is then refused, so a hung
  backend holds at most `limit` workers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
TRIAL_WAIT_S = 0.5  # told to callers while a half-open trial is in flight


class CircuitBreaker:
    """Closed, open or half-open, from the outcomes of the fetches it let through."""

    def __init__(
        self,
        threshold: int = 5,
        open_s: float = 2.0,
        max_open_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if threshold < 1 or open_s <= 0 or max_open_s < open_s:
            raise ValueError("breaker: threshold >= 1, 0 < open_s <= max_open_s")
        self._threshold, self._first_open_s, self._max_open_s = threshold, open_s, max_open_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._state = CLOSED
        self._open_s = open_s
        self._until = 0.0  # when an open circuit half-opens
        self._trial = False  # a half-open trial is in flight

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def allow(self) -> float:
        """0.0 if a fetch may go now (a trial, if half-open), else seconds to wait."""
        with self._lock:
            now = self._clock()
            if self._state == OPEN and now >= self._until:
                self._state, self._trial = HALF_OPEN, False
            if self._state == CLOSED:
                return 0.0
            if self._state == HALF_OPEN and not self._trial:
                self._trial = True
                return 0.0
            return max(self._until - now, 0.0) if self._state == OPEN else TRIAL_WAIT_S

    def released(self) -> None:
        """A fetch that says nothing of the backend (the caller's own deadline ran out, a
        fault on our side): a half-open trial ends, the state and the count stay."""
        with self._lock:
            self._trial = False

    def succeeded(self) -> None:
        with self._lock:
            self._state, self._failures, self._trial = CLOSED, 0, False
            self._open_s = self._first_open_s

    def failed(self) -> None:
        with self._lock:
            now = self._clock()
            if self._state == HALF_OPEN:
                self._open_s = min(self._open_s * 2, self._max_open_s)
                self._state, self._until, self._trial = OPEN, now + self._open_s, False
                return
            self._failures += 1
            if self._state == CLOSED and self._failures >= self._threshold:
                self._state, self._until = OPEN, now + self._open_s


class Bulkhead:
    """At most `limit` fetches in flight; one more waits up to `wait_s` for a slot."""

    def __init__(self, limit: int, wait_s: float = 0.25) -> None:
        if limit < 1:
            raise ValueError("bulkhead: limit must be >= 1")
        self.limit = limit
        self._wait_s = wait_s
        self._slots = threading.BoundedSemaphore(limit)

    def enter(self, time_left: float | None) -> bool:
        """Take a slot, waiting at most `wait_s` (and never past the caller's time)."""
        wait = self._wait_s if time_left is None else max(0.0, min(self._wait_s, time_left))
        return self._slots.acquire(timeout=wait)

    def leave(self) -> None:
        self._slots.release()
