"""Real processes for the tests and the bench: a gateway, a ministry backend, an echo
server, each its own PID.

A server is ready when it prints its banner with the port it bound (" on 127.0.0.1:PORT";
port 0 asks the OS for a free one, so parallel runs never collide). Output goes to a log
file that is shown when it fails to start. It inherits this process's environment without
the JISR_* variables, so that a gateway runs its defaults unless the caller sets one.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PORT = re.compile(r" on 127\.0\.0\.1:(\d+)")
STARTUP_S = 60.0


class StartError(RuntimeError):
    """A server exited, or did not print its port, within STARTUP_S."""


@dataclass
class Proc:
    """A started server process and where it listens."""

    popen: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the process and wait for it; kill it if it does not go. Idempotent."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        return self.popen.returncode


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment: this one without JISR_* variables, then `env`. A gateway
    runs one process unless `env` asks for more (JISR_PROCESSES): tests that are not about
    the supervisor see one audit chain and one PID, as they did before it existed."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("JISR_")}
    return {**inherited, "JISR_PROCESSES": "1", **(env or {}), "PYTHONUNBUFFERED": "1"}


def jisr(*args: str) -> list[str]:
    """The command line of `jisr ARGS` in this interpreter."""
    return [sys.executable, "-m", "gateway.cli", *args]


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Proc:
    """Run `argv` in a new process and wait for its banner."""
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=environment(env)
        )
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
    raise StartError(f"{' '.join(argv)} did not start:\n{log.read_text(errors='replace')}")


def start(args: list[str], log: Path, env: Mapping[str, str] | None = None) -> Proc:
    """`jisr ARGS` in a new process, ready (see spawn)."""
    return spawn(jisr(*args), log, env)


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released): for a server, probe or
    collector a test starts, or an address where nothing answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(
    registry_dir: Path,
    pki_dir: Path,
    folder: Path,
    *args: str,
    env: Mapping[str, str] | None = None,
) -> Proc:
    """`jisr serve ARGS` on a free loopback port over the registry and PKI, its state in
    `folder`/state and its log in `folder`/gateway.log unless `env` says otherwise."""
    return start(
        ["serve", "--listen", "127.0.0.1:0", "--data-dir", str(registry_dir),
         "--pki-dir", str(pki_dir), *args],
        folder / "gateway.log",
        env={"JISR_STATE_DIR": str(folder / "state"), **(env or {})},
    )  # fmt: skip


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
