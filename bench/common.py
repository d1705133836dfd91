"""What the bench's processes share: method paths, who calls for which purpose, the request
files, CPU clocks."""

from __future__ import annotations

import marshal
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TypeVar

from gateway.base.wire import REGISTRY_EXCHANGE, method_path
from gateway.config import Config
from tests.support import processes

UNARY_METHOD = method_path(REGISTRY_EXCHANGE, "VerifyEligibility")
BATCH_METHOD = method_path(REGISTRY_EXCHANGE, "VerifyEligibilityBatch")
HOST = "127.0.0.1"
GATEWAY_WORKERS = Config().workers  # the echo baseline gets the gateway's thread pool size
# The shipped policy (gateway/data/policy.toml) grants DEMO every method for these
# purposes, with every field of EligibilityDecision disclosed.
INSTITUTION = "DEMO"
UNARY_PURPOSE = "ASD_ELIGIBILITY"  # a counter checking one household
BATCH_PURPOSE = "RECERTIFICATION"  # the monthly bulk run

child_pids = processes.child_pids  # where bench.tracing imports it from
WORKER_MODULE = "gateway.cli"  # what a supervisor's workers run (python -m gateway.cli)
T = TypeVar("T")


def clocked(work: Callable[[], T]) -> tuple[T, float]:
    """What work() returns, and the seconds it took."""
    began = time.perf_counter()
    return work(), time.perf_counter() - began


def write_messages(path: Path, messages: Iterable[bytes]) -> None:
    """Store serialized messages for read_messages (the bench's own processes)."""
    path.write_bytes(marshal.dumps(list(messages)))


def read_messages(path: Path) -> list[bytes]:
    messages: list[bytes] = marshal.loads(path.read_bytes())
    return messages


@dataclass(frozen=True, slots=True)
class ProcessClock:
    """CPU seconds (user, system) used so far by every thread of a process, and the
    context switches of its live threads (voluntary: it waited, e.g. for the GIL)."""

    user_s: float
    system_s: float
    voluntary_switches: int
    involuntary_switches: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.system_s

    def __sub__(self, before: ProcessClock) -> ProcessClock:
        return ProcessClock(*(a - b for a, b in zip(astuple(self), astuple(before), strict=True)))


def _cpu_ticks(pid: int | str) -> tuple[int, int]:
    """utime and stime of a process, in clock ticks (fields 14 and 15 of its stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def process_clock(pid: int) -> ProcessClock | None:
    """The ProcessClock of process `pid` and of its `jisr serve --processes N` workers now
    (children running gateway.cli; not a span relay, which bench.tracing counts apart),
    None if it is gone."""
    try:
        user, system = _cpu_ticks(pid)
    except OSError:
        return None
    switches = {"voluntary_ctxt_switches:": 0, "nonvoluntary_ctxt_switches:": 0}
    for each in (pid, *child_pids(pid, WORKER_MODULE)):
        if each != pid:
            try:
                more = _cpu_ticks(each)
            except OSError:
                continue  # ended meanwhile
            user, system = user + more[0], system + more[1]
        for status in Path(f"/proc/{each}/task").glob("*/status"):
            try:
                lines = status.read_text().splitlines()
            except OSError:
                continue  # the thread ended meanwhile
            for name, _, value in (line.partition("\t") for line in lines):
                if name in switches:
                    switches[name] += int(value)
    tick = os.sysconf("SC_CLK_TCK")
    return ProcessClock(user / tick, system / tick, *switches.values())


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every local process named `postgres` (whoever they
    serve: other sessions' queries count too). 0 if none is local."""
    total = 0
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "postgres":
                total += sum(_cpu_ticks(proc.name))
        except OSError:
            continue  # gone meanwhile
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by all cores since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(round(q * len(sorted_values), 9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
