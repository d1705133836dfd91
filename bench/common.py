"""What the bench's processes share: method paths, the request file format, CPU clocks."""

from __future__ import annotations

import math
import os
import re
import struct
from collections.abc import Iterable, Sequence
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


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by every thread of process `pid`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" that closes comm: field 3 (state) is fields[0]; utime, stime are 14, 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
