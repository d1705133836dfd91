"""Each institution's daily quota of calls (the policy's `[limits.X] calls_per_day`),
counted across every gateway process from the audit trail they all write.

A quota is a contract between institutions, so it holds for the deployment, not per
process: the count is the trail's (every call the door admits leaves a record) since the
start of the UTC day, read for the institutions with a quota every `refresh_s` by a
thread of its own (never on the event loop), plus the calls this process admitted since
that reading. Other processes' calls are seen at the next reading: the deployment can
overshoot by what its processes admit within `refresh_s`, which docs/policy.md says. Over
the quota, a call is refused before any work (RESOURCE_EXHAUSTED QUOTA_EXCEEDED) with a
RetryInfo for the next UTC midnight; the count is pure arithmetic on the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from gateway.security.policy import Rate

log = logging.getLogger("jisr.quotas")
DAY_S = 86_400
REFRESH_S = 5.0

Count = Callable[[str, int], int]  # (requester, since at_us) -> records


def day_start(now: float) -> float:
    """The start of `now`'s UTC day, in epoch seconds."""
    return now - (now % DAY_S)


class Quotas:
    """Whether an institution may make one more call today, and when it may if not."""

    def __init__(
        self,
        limits: Mapping[str, Rate],
        count: Count,
        *,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._daily = {k: v.calls_per_day for k, v in limits.items() if v.calls_per_day}
        self._count = count
        self._refresh_s = refresh_s
        self._clock = clock
        self._day = day_start(clock())
        self._seen: dict[str, int] = {}  # the trail's count at the last reading
        self._since: dict[str, int] = {}  # admitted here since that reading
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self._daily:
            self.refresh()
            self._thread = threading.Thread(target=self._run, name="jisr-quotas", daemon=True)
            self._thread.start()

    def admit(self, institution: str) -> float:
        """0.0 if `institution` may make a call now (counted), else seconds to wait."""
        quota = self._daily.get(institution)
        if quota is None:
            return 0.0
        now = self._clock()
        if day_start(now) != self._day:  # a new day: nothing counted yet
            self._day = day_start(now)
            self._seen, self._since = {}, {}
        used = self._seen.get(institution, 0) + self._since.get(institution, 0)
        if used >= quota:
            return max(1.0, self._day + DAY_S - now)
        self._since[institution] = self._since.get(institution, 0) + 1
        return 0.0

    def refresh(self) -> None:
        """Read the trail's counts for today (the institutions with a quota)."""
        day = day_start(self._clock())
        seen = {}
        for institution in self._daily:
            try:
                seen[institution] = self._count(institution, int(day * 1_000_000))
            except Exception as exc:  # the store down: keep counting locally
                log.warning("quota count unavailable", extra={"error": type(exc).__name__})
                return
        # Swapped whole: the loop reads either the old pair or the new one.
        self._seen, self._since, self._day = seen, {}, day

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
