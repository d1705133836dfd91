"""N gateway processes serving one port, supervised: the way past one interpreter's lock.

Each worker is a fresh `jisr serve` (fork and exec), so it inherits nothing of this
process: no gRPC object, thread, database connection or key is ever shared across a fork.
The port is reserved here first (a bound, never listening socket with SO_REUSEPORT) and
every worker binds it with SO_REUSEPORT, so the kernel spreads connections among them.
Each worker has its own audit chain (node id), as replicas on several machines do; they
share the stores exactly as those replicas share PostgreSQL (docs/deployment.md).

A worker says it serves by writing one JSON line, `{"probe": "HOST:PORT"}` (its own probe
address), on the pipe named by JISR_WORKER_READY_FD. One that dies is started again after
a backoff (0.5 s doubling to 30 s, reset once a worker has stayed up a minute); one that
dies before the first start is complete stops them all, since its error (a bad key, an
unreadable store) would repeat. SIGTERM or SIGINT stops every worker (each drains its
in-flight calls within the grace period, then is killed); SIGHUP is passed on to them.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType

from gateway.runtime.readiness import Verdict

LOG = logging.getLogger("jisr.supervisor")
READY_FD_ENV = "JISR_WORKER_READY_FD"
START_TIMEOUT_S = 120.0
STEADY_S = 60.0  # a worker up this long resets its slot's backoff
MAX_BACKOFF_S = 30.0
LIVE_BEAT_S = 5.0


class SupervisorError(RuntimeError):
    """The workers could not be started; the message says which and why."""


@dataclass
class Slot:
    """One worker's place: its current process, its ready pipe, and its restart history."""

    index: int
    popen: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None
    buffer: bytes = b""
    probe: str | None = None  # its probe address, once it serves
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    last_exit: str = ""


@dataclass
class Workers:
    """What the supervisor runs: the worker's command, and each slot's environment."""

    argv: Sequence[str]
    env: Callable[[int], Mapping[str, str]]
    count: int
    grace_s: float
    slots: list[Slot] = field(default_factory=list)


def reserve_port(listen: str) -> tuple[socket.socket, str]:
    """A bound socket holding `listen`'s port for the workers (SO_REUSEPORT), and the
    address with the port resolved. A port already served by anyone else is refused
    first, as a single `jisr serve` refuses it."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    if port not in ("", "0"):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bare, int(port)))  # OSError if taken: the caller says so
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((bare, int(port or 0)))
    resolved = holder.getsockname()[1]
    return holder, f"[{bare}]:{resolved}" if family == socket.AF_INET6 else f"{bare}:{resolved}"


class Supervisor:
    """Starts the workers, restarts the ones that die, and stops them all on a signal."""

    def __init__(self, workers: Workers) -> None:
        self._w = workers
        self._w.slots = [Slot(i) for i in range(workers.count)]
        self._stop = threading.Event()
        self._hangup = threading.Event()
        self._beat = time.monotonic()

    # -- what the probes ask -------------------------------------------------------------

    def live(self) -> Verdict:
        """Live while the supervising loop turns (a wedged supervisor restarts no one)."""
        quiet = time.monotonic() - self._beat
        answer = "ok" if quiet < LIVE_BEAT_S else f"supervisor loop silent for {quiet:.0f} s"
        return Verdict(answer == "ok", {"supervisor": answer})

    def worker_checks(self) -> dict[str, Callable[[], str | None]]:
        """One readiness check per slot: its worker serves and its own probe says ready."""
        return {f"worker-{s.index}": _slot_check(s) for s in self._w.slots}

    # -- running -------------------------------------------------------------------------

    def start(self) -> None:
        """Start every worker and wait until each serves; SupervisorError if one dies."""
        self._trap_signals()
        for slot in self._w.slots:
            self._spawn(slot)
        deadline = time.monotonic() + START_TIMEOUT_S
        while any(s.probe is None for s in self._w.slots):
            if self._stop.is_set():
                raise SupervisorError("stopped by a signal while the workers were starting")
            if time.monotonic() > deadline:
                raise SupervisorError(f"the workers did not all serve within {START_TIMEOUT_S} s")
            self._read_ready(0.2)
            for slot in self._w.slots:
                if slot.popen is not None and slot.popen.poll() is not None:
                    raise SupervisorError(
                        f"worker {slot.index} exited while starting"
                        f" ({_status(slot.popen.returncode)}); its error is above"
                    )

    def run(self) -> None:
        """Supervise until SIGTERM or SIGINT."""
        while not self._stop.is_set():
            self._beat = time.monotonic()
            self._read_ready(0.2)
            if self._hangup.is_set():
                self._hangup.clear()
                self._signal_all(signal.SIGHUP)
            for slot in self._w.slots:
                self._tend(slot)

    def stop(self) -> None:
        """SIGTERM to every worker, wait out the grace period (plus a margin), then kill."""
        self._stop.set()
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._w.grace_s + 5.0
        for slot in self._w.slots:
            if slot.popen is None:
                continue
            try:
                slot.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                LOG.warning("worker %d did not stop within the grace period: killed", slot.index)
                slot.popen.kill()
                slot.popen.wait()
            self._close_pipe(slot)

    # -- the slots -----------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> int:
        """Start the slot's worker; its pid."""
        read_fd, write_fd = os.pipe()
        env = {**os.environ, **self._w.env(slot.index), READY_FD_ENV: str(write_fd)}
        try:
            popen = subprocess.Popen(list(self._w.argv), env=env, pass_fds=(write_fd,))
        finally:
            os.close(write_fd)
        os.set_blocking(read_fd, False)
        slot.popen, slot.ready_fd, slot.buffer, slot.probe = popen, read_fd, b"", None
        slot.started_at, slot.restart_at = time.monotonic(), None
        return popen.pid

    def _tend(self, slot: Slot) -> None:
        """Notice a worker's death, and start its successor when the backoff has passed."""
        now = time.monotonic()
        if slot.popen is not None and slot.popen.poll() is not None:
            up = now - slot.started_at
            slot.failures = 1 if up >= STEADY_S else slot.failures + 1
            delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (slot.failures - 1))
            slot.last_exit = _status(slot.popen.returncode)
            LOG.error(
                "worker %d (pid %d) exited (%s) after %.0f s; restarting in %.1f s",
                slot.index, slot.popen.pid, slot.last_exit, up, delay,
            )  # fmt: skip
            self._close_pipe(slot)
            slot.popen, slot.probe, slot.restart_at = None, None, now + delay
        if slot.popen is None and slot.restart_at is not None and now >= slot.restart_at:
            LOG.warning("worker %d restarted (pid %d)", slot.index, self._spawn(slot))

    def _read_ready(self, timeout: float) -> None:
        waiting = {s.ready_fd: s for s in self._w.slots if s.ready_fd is not None}
        if not waiting:
            self._stop.wait(timeout)
            return
        readable, _, _ = select.select(list(waiting), [], [], timeout)
        for fd in readable:
            slot = waiting[fd]
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            slot.buffer += chunk
            if b"\n" in slot.buffer or not chunk:
                slot.probe = _probe_address(slot.buffer)
                self._close_pipe(slot)

    def _close_pipe(self, slot: Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _signal_all(self, signum: int) -> None:
        for slot in self._w.slots:
            if slot.popen is not None and slot.popen.poll() is None:
                slot.popen.send_signal(signum)

    def _trap_signals(self) -> None:
        def on_stop(signum: int, frame: FrameType | None) -> None:
            self._stop.set()

        def on_hangup(signum: int, frame: FrameType | None) -> None:
            self._hangup.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hangup)


def announce_ready(probe_address: str, environ: Mapping[str, str] = os.environ) -> None:
    """In a worker: tell the supervisor it serves, and where its probes answer."""
    fd = environ.get(READY_FD_ENV)
    if fd is None:
        return
    os.write(int(fd), json.dumps({"probe": probe_address}).encode("ascii") + b"\n")
    os.close(int(fd))


def _probe_address(line: bytes) -> str | None:
    try:
        value = json.loads(line.split(b"\n", 1)[0]).get("probe")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _slot_check(slot: Slot) -> Callable[[], str | None]:
    def check() -> str | None:
        if slot.probe is None:
            return f"restarting (last exit: {slot.last_exit})" if slot.last_exit else "starting"
        try:
            with urllib.request.urlopen(f"http://{slot.probe}/readyz", timeout=1.5) as reply:
                reply.read()
            return None
        except urllib.error.HTTPError as exc:
            return f"not ready: {_failing(exc.read())}"
        except (OSError, ValueError):
            return "its probe does not answer"

    return check


def _failing(body: bytes) -> str:
    """The names of the failing checks in a worker's readiness answer."""
    try:
        checks = json.loads(body).get("checks", {})
        return ", ".join(f"{k}: {v}" for k, v in sorted(checks.items()) if v != "ok") or "?"
    except (ValueError, AttributeError):
        return "?"


def _status(code: int | None) -> str:
    if code is None:
        return "running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"status {code}"
