"""Each institution's rate of calls (the policy's `[limits.X]`), as token buckets (pure).

A bucket holds at most `burst` tokens and gains `calls_per_second` a second; a call takes
one, or is refused with the time until the next token, which the caller is told as the
status's RetryInfo. Buckets live in the door of one gateway process, on its event loop
(one thread: no lock): with N processes and R machines an institution may make up to
N x R times its rate, which docs/policy.md says and a deployment sizes for. A shared
bucket would cost a database round trip per call, more than the exchange it limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.security.policy import Rate


@dataclass
class TokenBucket:
    """`burst` tokens at most, `rate` more a second; starts full."""

    rate: float
    burst: int
    tokens: float
    at: float

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one will be there."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Rates:
    """The buckets of the institutions the policy limits; others pass freely."""

    def __init__(
        self, rates: Mapping[str, Rate], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rates = dict(rates)
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def admit(self, institution: str) -> float:
        """0.0 if `institution` may make a call now, else the seconds to wait."""
        rate = self._rates.get(institution)
        if rate is None or rate.calls_per_second is None:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(institution)
        if bucket is None:
            bucket = self._buckets[institution] = TokenBucket(
                rate.calls_per_second, rate.burst, float(rate.burst), now
            )
        return bucket.take(now)
