"""Times as the stores keep them (integer microseconds since the epoch, UTC) and as the
wire carries them (google.protobuf.Timestamp): one conversion for every service."""

from __future__ import annotations

import time

from google.protobuf.timestamp_pb2 import Timestamp


def now_us() -> int:
    """Now, in microseconds since the epoch."""
    return time.time_ns() // 1000


def timestamp(at_us: int | None) -> Timestamp | None:
    """The wire form of a stored time; None stays None (an unset field)."""
    if at_us is None:
        return None
    return Timestamp(seconds=at_us // 1_000_000, nanos=(at_us % 1_000_000) * 1000)
