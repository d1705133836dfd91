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


class _Run:
    """One run of a check on a daemon thread (a hung check never holds the process's
    exit, as a pool's thread would)."""

    def __init__(self, check: Check) -> None:
        self.done = threading.Event()
        self.answer: str | None = None
        self.error: BaseException | None = None
        threading.Thread(target=self._run, args=(check,), name="jisr-probe", daemon=True).start()

    def _run(self, check: Check) -> None:
        try:
            self.answer = check()
        except BaseException as exc:  # reported by type, never raised into a probe
            self.error = exc
        finally:
            self.done.set()


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
        self._running: dict[str, _Run] = {}
        self._last: tuple[float, Verdict] | None = None

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
        started: dict[str, _Run] = {}
        answers: dict[str, str] = {}
        for name, probe in self._probes.items():
            pending = self._running.get(name)
            if pending is not None and not pending.done.is_set():
                answers[name] = "no answer yet to the previous check"
                continue
            started[name] = self._running[name] = _Run(probe.check)
        deadline = time.monotonic() + self._budget_s
        for name, run in started.items():
            run.done.wait(max(0.0, deadline - time.monotonic()))
            answers[name] = _answer(run, self._budget_s)
        required = {name: probe.required for name, probe in self._probes.items()}
        return verdict_of(answers, required)

    def close(self) -> None:
        """Nothing to release: a check still running ends with its daemon thread."""


def _answer(run: _Run, budget_s: float) -> str:
    if not run.done.is_set():
        return f"no answer within {budget_s:g} s"
    if run.error is not None:
        return f"check failed: {type(run.error).__name__}"  # the type only: messages may quote data
    return run.answer or OK
