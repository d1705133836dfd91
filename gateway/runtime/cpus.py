"""The CPUs this process may use: what `jisr serve` runs one process per, by default.

`os.cpu_count()` counts the machine's; a container or a systemd unit is usually given
fewer, either by affinity (cpuset) or by a CFS quota (`cpu.max` in cgroup v2, Kubernetes'
CPU limit). Running more processes than that only makes them queue for the quota.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
# Set by the supervisor for a pinned worker: the CPU it binds itself to when it starts.
WORKER_CPU_ENV = "JISR_WORKER_CPU"


def available(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The fewer of the CPUs in our affinity and the cgroup's quota, at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = quota_cpus(cpu_max)
    return max(1, min(count or 1, quota if quota is not None else count or 1))


def quota_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs the cgroup's quota allows (rounded up), or None if none is set or readable."""
    try:
        quota, period = cpu_max.read_text(encoding="ascii").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def allowed() -> list[int]:
    """The CPUs this process may run on, in order."""
    if not hasattr(os, "sched_getaffinity"):
        return list(range(os.cpu_count() or 1))
    return sorted(os.sched_getaffinity(0))


def cpu_for(index: int, cpus: list[int] | None = None) -> int:
    """Worker `index`'s CPU when the processes are pinned: the index-th of those allowed
    (round the list again if there are more workers than CPUs)."""
    cpus = cpus or allowed()
    return cpus[index % len(cpus)]


def pin(cpu: int) -> bool:
    """Bind this process, and every thread it starts from now on, to `cpu`.

    Why: the gateway's threads (the event loop, the stream workers, the audit writer)
    take turns at one interpreter lock; when the kernel spreads them over several CPUs,
    every hand-off of the lock wakes a thread on another CPU, which on a virtual machine
    costs more than the work handed off. One process per CPU, each bound to its own, keeps
    the hand-offs local (docs/deployment.md, "Pinning"). False where the system refuses
    (no such CPU, or no affinity on this platform): the worker then runs unbound."""
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, {cpu})
    except (OSError, ValueError):
        return False
    return True


def yield_on_wake() -> bool:
    """Let the calling thread, when woken, wait for the running thread's turn to end
    instead of taking the CPU from it (Linux's SCHED_BATCH, for this thread only).

    Why: in a process bound to one CPU, the audit writer is woken by each record the event
    loop hands it. Woken with preemption, it takes the CPU from the loop, which holds the
    interpreter lock; the writer cannot run without that lock, so it sleeps again at once:
    two context switches for nothing, a dozen per call under load. Once the loop waits for
    I/O the writer runs, with more records to commit at once. Measured with 2 pinned
    processes: 1,288-1,600 calls a second against 1,072-1,313, p99 lower; one pinned
    process gained 0-42 %, its tail no better (docs/performance.md). Where the process
    has CPUs to spare the writer should run beside the loop, so this is only for one CPU
    (`allowed()` of length 1), in any process that writes the audit trail. False where
    the system has no such policy."""
    batch = getattr(os, "SCHED_BATCH", None)
    if batch is None or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, batch, os.sched_param(0))
    except OSError:
        return False
    return True
