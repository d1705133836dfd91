"""The probes' checks (gateway/runtime/readiness.py): bounded in time, shared between
askers, a hung check reported rather than started again, reasons without data."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from gateway.runtime import cpus
from gateway.runtime.readiness import Checks, Probe, verdict_of


def test_the_verdict_fails_only_on_a_required_check() -> None:
    verdict = verdict_of({"audit": "ok", "backend:CNSS": "down"}, {"backend:CNSS": False})
    assert verdict.ok
    assert verdict.body() == {"status": "ok", "checks": {"audit": "ok", "backend:CNSS": "down"}}


def test_a_failed_required_check_fails_the_verdict() -> None:
    assert not verdict_of({"audit": "store down"}, {"audit": True}).ok


def test_a_check_that_hangs_is_reported_within_the_budget_and_not_started_again() -> None:
    release = threading.Event()
    calls = []

    def hangs() -> str | None:
        calls.append(1)
        release.wait(10)
        return None

    checks = Checks({"db": Probe(hangs)}, budget_s=0.2, cache_s=0)
    try:
        assert checks.verdict().checks == {"db": "no answer within 0.2 s"}
        assert checks.verdict().checks == {"db": "no answer yet to the previous check"}
        assert len(calls) == 1
    finally:
        release.set()
        checks.close()


def test_a_check_that_raises_reports_the_error_type_only() -> None:
    def raises() -> str | None:
        raise ConnectionError("postgresql://user:secret@db/ household H123")

    checks = Checks({"db": Probe(raises)}, budget_s=2, cache_s=0)
    try:
        assert checks.verdict().checks == {"db": "check failed: ConnectionError"}
    finally:
        checks.close()


def test_a_verdict_is_shared_between_askers_for_the_cache_period() -> None:
    now = [100.0]
    calls = []

    def counts() -> str | None:
        calls.append(1)
        return None

    checks = Checks({"x": Probe(counts)}, cache_s=1.0, clock=lambda: now[0])
    try:
        checks.verdict()
        checks.verdict()
        assert len(calls) == 1
        now[0] += 1.5
        checks.verdict()
        assert len(calls) == 2
    finally:
        checks.close()


def test_a_cgroup_quota_caps_the_processes(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert cpus.quota_cpus(cpu_max) == 2
    assert cpus.available(cpu_max) <= 2


def test_no_quota_leaves_the_cpus_of_the_affinity(tmp_path: Path) -> None:
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("max 100000\n")
    assert cpus.quota_cpus(cpu_max) is None
    assert cpus.quota_cpus(tmp_path / "absent") is None
    assert cpus.available(cpu_max) >= 1


def test_pinned_workers_take_the_allowed_cpus_in_turn() -> None:
    assert [cpus.cpu_for(i, [2, 5]) for i in range(5)] == [2, 5, 2, 5, 2]


def test_pinning_to_a_cpu_that_does_not_exist_is_refused_not_raised() -> None:
    before = os.sched_getaffinity(0)
    assert cpus.pin(10_000) is False
    assert os.sched_getaffinity(0) == before


def test_a_thread_that_yields_on_wake_changes_its_own_policy_only() -> None:
    policies: list[int] = []

    def run() -> None:
        assert cpus.yield_on_wake() is True
        policies.append(os.sched_getscheduler(0))

    before = os.sched_getscheduler(0)
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert policies == [os.SCHED_BATCH]
    assert os.sched_getscheduler(0) == before
