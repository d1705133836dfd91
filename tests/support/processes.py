"""Real processes for integration tests: a gateway or a ministry backend, each its own PID.

A process is ready when it prints its banner with the port it bound (port 0 asks the OS
for a free one, so parallel runs never collide). Output goes to a log file that is shown
when a test fails to start it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

_PORT = re.compile(r" on 127\.0\.0\.1:(\d+)")
STARTUP_S = 60.0


@dataclass
class Proc:
    """A started server process and where it listens."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and wait for it; kill it if it does not go."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> Proc:
    """Run `jisr ARGS` in a new process and wait for its banner."""
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    handle = log.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=full_env,
    )
    handle.close()
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        match = _PORT.search(log.read_text(errors="replace"))
        if match:
            return Proc(popen, int(match.group(1)), log)
        if popen.poll() is not None:
            break
        time.sleep(0.05)
    popen.kill()
    popen.wait()
    raise RuntimeError(f"jisr {' '.join(args)} did not start:\n{log.read_text(errors='replace')}")
