"""Each institution's daily quota of calls (the policy's `[limits.X] calls_per_day`),
counted across every gateway process from the audit trail they all write.

A quota is a contract between institutions, so it holds for the deployment, not per
process: the count is the trail's since the start of the UTC day (one record per call the
door admits: a call's own record, part 0, not its batches' or notifications', nor the
gateway's own due-process records; `AuditStore.count_calls_since`), read for the
institutions with a quota every `refresh_s` by a thread of its own (never on the event
loop), plus the calls this process admitted since that reading began. Other processes'
calls are seen at the next reading: the deployment can overshoot by what its processes
admit within `refresh_s`, which docs/policy.md says. Over the quota, a call is refused
before any work (RESOURCE_EXHAUSTED QUOTA_EXCEEDED) with a RetryInfo for the next UTC
midnight; the count is pure arithmetic on the loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.security.policy import Rate

log = logging.getLogger("jisr.quotas")
DAY_S = 86_400
REFRESH_S = 5.0

Count = Callable[[str, int], int]  # (requester, since at_us) -> records


def day_start(now: float) -> float:
    """The start of `now`'s UTC day, in epoch seconds."""
    return now - (now % DAY_S)


@dataclass(frozen=True, slots=True)
class _Reading:
    """The trail's counts of a day's calls, and how many calls this process had admitted
    in all when the reading began (those admitted after it are added on top)."""

    day: float
    seen: Mapping[str, int]
    marks: Mapping[str, int]


class Quotas:
    """Whether an institution may make one more call today, and when it may if not.

    The loop alone writes the admitted counts; the refresh thread alone builds readings,
    each swapped in as one immutable value, so the two never write the same thing."""

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
        self._admitted: dict[str, int] = {}  # by this process, ever (the loop's)
        self._reading = _Reading(day_start(clock()), {}, {})
        # This process's admitted counts when a day began, until a reading of that day.
        self._day_marks: dict[tuple[float, str], int] = {}
        self._stop = threading.Event()
        self._unreadable = False  # the last refresh could not read the trail
        if self._daily:
            self.refresh()
            threading.Thread(target=self._run, name="jisr-quotas", daemon=True).start()

    def admit(self, institution: str) -> float:
        """0.0 if `institution` may make a call now (then counted), else seconds to wait."""
        quota = self._daily.get(institution)
        if quota is None:
            return 0.0
        now = self._clock()
        today = day_start(now)
        admitted = self._admitted.get(institution, 0)
        reading = self._reading
        if reading.day == today:
            used = reading.seen.get(institution, 0) + admitted - reading.marks.get(institution, 0)
        else:  # no reading of today yet: what this process admitted since midnight
            mark = self._day_marks.setdefault((today, institution), admitted)
            used = admitted - mark
        if used >= quota:
            return max(1.0, today + DAY_S - now)
        self._admitted[institution] = admitted + 1
        return 0.0

    def refresh(self) -> None:
        """Read the trail's counts of today's calls (the institutions with a quota)."""
        day = day_start(self._clock())
        marks = dict(self._admitted)  # a copy: the loop may add meanwhile
        seen = {}
        for institution in self._daily:
            try:
                seen[institution] = self._count(institution, int(day * 1_000_000))
            except Exception as exc:  # the store down: the last reading and local counts
                if not self._unreadable:  # once per outage, not every refresh
                    log.warning("quota count unavailable", extra={"error": type(exc).__name__})
                self._unreadable = True
                return
        if self._unreadable:
            log.info("quota count available again")
            self._unreadable = False
        self._reading = _Reading(day, seen, marks)  # one swap: the loop sees all or none

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
