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
