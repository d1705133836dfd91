"""Named checks, each bounded in time, and the verdict a probe reports from them.

A probe is asked every few seconds by an orchestrator (and by anyone who can reach its
port), so a verdict is shared for `cache_s` between askers, each check runs at most once
at a time (a check that hangs — a database that stopped answering — is reported as such,
not started again on every probe), and the verdict is given within `budget_s` whatever the
checks do. A check answers None when fine, or a short reason; reasons name a component
and what failed, never a record or a person.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

Check = Callable[[], str | None]
OK = "ok"


@dataclass(frozen=True, slots=True)
class Probe:
    """One named check, and whether its failure makes the whole verdict fail."""

    check: Check
    required: bool = True


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every check's answer (`ok` or its reason) and whether the required ones all passed."""

    ok: bool
    checks: Mapping[str, str]

    def body(self) -> dict[str, object]:
        return {"status": "ok" if self.ok else "failing", "checks": dict(self.checks)}


def verdict_of(answers: Mapping[str, str], required: Mapping[str, bool]) -> Verdict:
    """The verdict from each check's answer (pure): failing if a required one is not ok."""
    ok = all(answer == OK for name, answer in answers.items() if required.get(name, True))
    return Verdict(ok, dict(sorted(answers.items())))


class Checks:
    """Runs the probes within a time budget and shares the verdict for `cache_s`."""

    def __init__(
        self,
        probes: Mapping[str, Probe],
        *,
        budget_s: float = 2.0,
        cache_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probes = dict(probes)
        self._budget_s = budget_s
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._running: dict[str, Future[str | None]] = {}
        self._last: tuple[float, Verdict] | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, len(self._probes)), thread_name_prefix="jisr-probe"
        )

    def verdict(self) -> Verdict:
        """The shared verdict, or a fresh one if the last is older than `cache_s`."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last[0] < self._cache_s:
                return self._last[1]
            verdict = self._run()
            self._last = (self._clock(), verdict)
            return verdict

    def _run(self) -> Verdict:
        started: dict[str, Future[str | None]] = {}
        answers: dict[str, str] = {}
        for name, probe in self._probes.items():
            pending = self._running.get(name)
            if pending is not None and not pending.done():
                answers[name] = "no answer yet to the previous check"
                continue
            started[name] = self._running[name] = self._pool.submit(probe.check)
        wait(started.values(), timeout=self._budget_s)
        for name, future in started.items():
            answers[name] = _answer(future, self._budget_s)
        required = {name: probe.required for name, probe in self._probes.items()}
        return verdict_of(answers, required)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _answer(future: Future[str | None], budget_s: float) -> str:
    if not future.done():
        return f"no answer within {budget_s:g} s"
    error = future.exception()
    if error is not None:
        return f"check failed: {type(error).__name__}"  # the type only: messages may quote data
    return future.result() or OK
