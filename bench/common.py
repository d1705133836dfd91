"""What the bench's processes share: method paths, who calls for which purpose, the request
file format, CPU clocks."""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config

SERVICE = "jisr.v1.RegistryExchange"
UNARY_METHOD = f"/{SERVICE}/VerifyEligibility"
BATCH_METHOD = f"/{SERVICE}/VerifyEligibilityBatch"
HOST = "127.0.0.1"
# Both `jisr serve` and `bench.echo` announce readiness with "... on 127.0.0.1:PORT".
READY = re.compile(r"\bon 127\.0\.0\.1:(\d+)\b")
# The echo baseline gets the gateway's default thread pool size.
GATEWAY_WORKERS = Config().workers
# The calling institution: the shipped policy (gateway/data/policy.toml) grants DEMO every
# method for these purposes, with every field of EligibilityDecision disclosed.
INSTITUTION = "DEMO"
UNARY_PURPOSE = "ASD_ELIGIBILITY"  # a counter checking one household
BATCH_PURPOSE = "RECERTIFICATION"  # the monthly bulk run
# A consent-based grant of the shipped policy: MEN's GetHouseholdStatus for SCHOOL_SUPPORT
# holds only under the family's consent (scopes composition and situation).
CONSENT_INSTITUTION = "MEN"
CONSENT_PURPOSE = "SCHOOL_SUPPORT"
CONSENT_METHOD = f"/{SERVICE}/GetHouseholdStatus"

_LENGTH = struct.Struct(">I")


def write_messages(path: Path, messages: Iterable[bytes]) -> int:
    """Store serialized messages, each behind a 4-byte big-endian length."""
    count = 0
    with path.open("wb") as out:
        for message in messages:
            out.write(_LENGTH.pack(len(message)))
            out.write(message)
            count += 1
    return count


def read_messages(path: Path) -> list[bytes]:
    """The messages written by write_messages, in order."""
    data = path.read_bytes()
    messages: list[bytes] = []
    offset = 0
    while offset < len(data):
        (size,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size
        messages.append(data[offset : offset + size])
        offset += size
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
        return ProcessClock(
            self.user_s - before.user_s,
            self.system_s - before.system_s,
            self.voluntary_switches - before.voluntary_switches,
            self.involuntary_switches - before.involuntary_switches,
        )


def process_clock(pid: int) -> ProcessClock | None:
    """The ProcessClock of process `pid` now (None if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    voluntary = involuntary = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue  # the thread ended meanwhile
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                voluntary += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                involuntary += int(line.split()[1])
    # After the ")" that closes comm: field 3 (state) is fields[0]; utime, stime are 14, 15.
    return ProcessClock(int(fields[11]) / tick, int(fields[12]) / tick, voluntary, involuntary)


def child_pids(pid: int, module: str) -> list[int]:
    """Children of process `pid` running `python -m module` (e.g. a gateway's span relay)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = task.read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if module.encode() in argv:
                found.append(int(child))
    return found


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (0 for none)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(round(q * len(sorted_values), 9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def machine_busy_seconds() -> float:
    """CPU seconds spent not idle by all cores since boot (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    busy = sum(values) - values[3] - values[4]
    return busy / os.sysconf("SC_CLK_TCK")
