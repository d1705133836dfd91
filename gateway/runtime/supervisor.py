"""N gateway processes serving one port, supervised: the way past one interpreter's lock.

Each worker is a fresh `jisr serve` (fork and exec), so it inherits nothing of this
process: no gRPC object, thread, database connection or key is ever shared across a fork.
The port is reserved here first (bound, never listening sockets with SO_REUSEPORT, one
per address the host resolves to) and every worker binds it with SO_REUSEPORT, so the
kernel spreads connections among them. Each worker has its own audit chain (node id), as
replicas on several machines do; they share the stores exactly as those replicas share
PostgreSQL (docs/deployment.md).

Two pipes tie a worker to the supervisor:
- the **ready pipe** (JISR_WORKER_READY_FD): the worker writes one JSON line,
  `{"probe": "HOST:PORT"}` (its own probe address), once it serves; an end of file
  without that line, or no line within START_TIMEOUT_S, is a failed start;
- the **lifeline** (JISR_WORKER_LIFELINE_FD): the supervisor holds its write end; when
  the supervisor dies, however, the worker reads an end of file and stops itself
  (SIGTERM to itself: it drains), so no worker outlives it holding the port.

A worker that dies, that fails to start, or whose /livez fails LIVENESS_FAILURES times in
a row (a wedged process still owns its socket, and the kernel keeps sending it
connections) is killed if need be and started again after a backoff (0.5 s doubling to
30 s, reset once a worker has stayed up a minute). One that dies before the first start
is complete stops them all, since its error (a bad key, an unreadable store) would
repeat. SIGTERM or SIGINT stops every worker (each drains its in-flight calls within the
grace period, then is killed); SIGHUP is passed on to the workers that serve (one still
starting ignores it).
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

from gateway.runtime import cpus
from gateway.runtime.readiness import Verdict

LOG = logging.getLogger("jisr.supervisor")
READY_FD_ENV = "JISR_WORKER_READY_FD"
LIFELINE_FD_ENV = "JISR_WORKER_LIFELINE_FD"
START_TIMEOUT_S = 120.0
STEADY_S = 60.0  # a worker up this long resets its slot's backoff
MAX_BACKOFF_S = 30.0
LIVE_BEAT_S = 5.0
WORKER_PROBE_TIMEOUT_S = 3.0  # more than a worker's own check budget (2 s)
LIVENESS_EVERY_S = 5.0
LIVENESS_FAILURES = 3


class SupervisorError(RuntimeError):
    """The workers could not be started; the message says which and why."""


class Stopped(Exception):  # noqa: N818 - not an error: the operator's signal
    """SIGTERM or SIGINT arrived while the workers were starting."""


@dataclass
class Slot:
    """One worker's place: its process, its pipes, and its restart history."""

    index: int
    popen: subprocess.Popen[bytes] | None = None
    ready_fd: int | None = None
    lifeline_fd: int | None = None
    buffer: bytes = b""
    probe: str | None = None  # its probe address, once it serves
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    last_exit: str = ""
    not_live: int = 0  # liveness probes failed in a row


@dataclass
class Workers:
    """What the supervisor runs: the worker's command, and each slot's environment."""

    argv: Sequence[str]
    env: Callable[[int], Mapping[str, str]]
    count: int
    grace_s: float
    slots: list[Slot] = field(default_factory=list)


def reserve_port(listen: str) -> tuple[list[socket.socket], str]:
    """Bound sockets holding `listen`'s port for the workers (SO_REUSEPORT), one per
    address the host resolves to, and the address with the port resolved. A port
    already served by anyone else is refused first, as a single `jisr serve` refuses it."""
    host, _, port = listen.rpartition(":")
    bare = host.strip("[]")
    if not bare or not port.isdigit():
        raise OSError(f"{listen}: give HOST:PORT, e.g. 127.0.0.1:50051")
    found = socket.getaddrinfo(bare, int(port), type=socket.SOCK_STREAM)
    wanted = list(dict.fromkeys((family, where[0]) for family, _, _, _, where in found))
    holders: list[socket.socket] = []
    resolved = int(port)
    try:
        for family, address in wanted:
            if resolved:
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((address, resolved))  # OSError if taken: the caller says so
            holder = socket.socket(family, socket.SOCK_STREAM)
            holders.append(holder)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            holder.bind((address, resolved))
            resolved = holder.getsockname()[1]
    except OSError:
        for holder in holders:
            holder.close()
        raise
    return holders, f"{host}:{resolved}"


class Supervisor:
    """Starts the workers, restarts the ones that die or wedge, stops them all on a signal."""

    def __init__(self, workers: Workers) -> None:
        self._w = workers
        self._w.slots = [Slot(i) for i in range(workers.count)]
        self._stop = threading.Event()
        self._hangup = threading.Event()
        self._beat = time.monotonic()
        self._wedged: set[int] = set()  # slots the liveness watch found wedged
        self._lock = threading.Lock()
        self._watch = threading.Thread(target=self._watch_liveness, daemon=True)

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
        """Start every worker and wait until each serves: SupervisorError if one fails,
        Stopped if a signal asks to stop meanwhile."""
        self._trap_signals()
        for slot in self._w.slots:
            self._spawn(slot)
        while any(s.probe is None for s in self._w.slots):
            self._beat = time.monotonic()
            if self._stop.is_set():
                raise Stopped
            self._read_ready(0.2)
            for slot in self._w.slots:
                failed = self._failed_start(slot)
                if failed:
                    raise SupervisorError(f"worker {slot.index} {failed}; its error is above")
        self._watch.start()

    def run(self) -> None:
        """Supervise until SIGTERM or SIGINT."""
        while not self._stop.is_set():
            self._beat = time.monotonic()
            self._read_ready(0.2)
            if self._hangup.is_set():
                self._hangup.clear()
                for slot in self._w.slots:
                    if slot.probe is not None:  # a worker still starting ignores it
                        self._signal(slot, signal.SIGHUP)
            for slot in self._w.slots:
                self._tend(slot)

    def stop(self) -> None:
        """SIGTERM to every worker, wait out the grace period (plus a margin), then kill."""
        self._stop.set()
        for slot in self._w.slots:
            self._signal(slot, signal.SIGTERM)
        deadline = time.monotonic() + self._w.grace_s + 5.0
        for slot in self._w.slots:
            while slot.popen is not None and slot.popen.poll() is None:
                self._beat = time.monotonic()
                if time.monotonic() > deadline:
                    LOG.warning("worker %d did not stop in its grace period: killed", slot.index)
                    slot.popen.kill()
                    slot.popen.wait()
                    break
                time.sleep(0.1)
            self._close_pipes(slot)

    # -- the slots -----------------------------------------------------------------------

    def _spawn(self, slot: Slot) -> int:
        """Start the slot's worker; its pid."""
        ready_r, ready_w = os.pipe()
        life_r, life_w = os.pipe()
        env = {
            **os.environ,
            **self._w.env(slot.index),
            READY_FD_ENV: str(ready_w),
            LIFELINE_FD_ENV: str(life_r),
        }
        try:
            popen = subprocess.Popen(list(self._w.argv), env=env, pass_fds=(ready_w, life_r))
        except OSError:
            for fd in (ready_r, life_w):
                os.close(fd)
            raise
        finally:
            os.close(ready_w)
            os.close(life_r)
        os.set_blocking(ready_r, False)
        slot.popen, slot.ready_fd, slot.lifeline_fd = popen, ready_r, life_w
        slot.buffer, slot.probe, slot.not_live = b"", None, 0
        slot.started_at, slot.restart_at = time.monotonic(), None
        return popen.pid

    def _failed_start(self, slot: Slot) -> str | None:
        """Why the slot's worker failed to start, if it did (it is then killed)."""
        if slot.popen is None or slot.probe is not None:
            return None
        if slot.ready_fd is None:  # its ready pipe ended without the line: exiting?
            try:
                slot.popen.wait(2.0)
            except subprocess.TimeoutExpired:
                slot.popen.kill()
                return "closed its ready pipe without serving"
        if slot.popen.poll() is not None:
            return f"exited while starting ({_status(slot.popen.returncode)})"
        if time.monotonic() - slot.started_at > START_TIMEOUT_S:
            slot.popen.kill()
            return f"did not serve within {START_TIMEOUT_S:g} s"
        return None

    def _tend(self, slot: Slot) -> None:
        """Notice a worker's death, failed start or wedge, and start its successor when
        the backoff has passed."""
        with self._lock:
            wedged = slot.index in self._wedged
            self._wedged.discard(slot.index)
        if wedged and slot.popen is not None and slot.popen.poll() is None:
            LOG.error("worker %d (pid %d) stopped answering /livez: killed", slot.index,
                      slot.popen.pid)  # fmt: skip
            slot.popen.kill()
            slot.popen.wait()
        failed = self._failed_start(slot)
        if failed:
            LOG.error("worker %d %s", slot.index, failed)
            slot.popen.wait()  # type: ignore[union-attr]  # _failed_start saw a process
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
            self._close_pipes(slot)
            slot.popen, slot.probe, slot.restart_at = None, None, now + delay
        if slot.popen is None and slot.restart_at is not None and now >= slot.restart_at:
            try:
                LOG.warning("worker %d restarted (pid %d)", slot.index, self._spawn(slot))
            except OSError as exc:
                slot.restart_at = now + MAX_BACKOFF_S
                LOG.error("worker %d could not be started (%s); trying again", slot.index,
                          exc.strerror or type(exc).__name__)  # fmt: skip

    def _watch_liveness(self) -> None:
        """Ask each serving worker's /livez; flag the slot after LIVENESS_FAILURES misses
        in a row (the supervising loop kills and restarts it)."""
        while not self._stop.wait(LIVENESS_EVERY_S):
            for slot in list(self._w.slots):
                probe = slot.probe
                if probe is None:
                    continue
                if _answers(f"http://{probe}/livez"):
                    slot.not_live = 0
                    continue
                slot.not_live += 1
                if slot.not_live >= LIVENESS_FAILURES:
                    slot.not_live = 0
                    with self._lock:
                        self._wedged.add(slot.index)

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
                os.close(fd)
                slot.ready_fd = None

    def _close_pipes(self, slot: Slot) -> None:
        for name in ("ready_fd", "lifeline_fd"):
            fd = getattr(slot, name)
            if fd is not None:
                os.close(fd)
                setattr(slot, name, None)

    def _signal(self, slot: Slot, signum: int) -> None:
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


# -- the worker's side ---------------------------------------------------------------------


def is_worker(environ: Mapping[str, str] = os.environ) -> bool:
    return READY_FD_ENV in environ


def worker_started(environ: Mapping[str, str] = os.environ) -> int | None:
    """First thing in a worker: ignore SIGHUP until its own handler is in place (the
    supervisor passes reloads on), bind itself to its CPU if the processes are pinned
    (before any thread starts: threads inherit it), and stop when the supervisor's
    lifeline ends. Returns the CPU it could not bind to, if any, for the caller to log
    once logging is set up."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    cpu = environ.get(cpus.WORKER_CPU_ENV, "")
    unbound = int(cpu) if cpu.isdigit() and not cpus.pin(int(cpu)) else None
    fd = environ.get(LIFELINE_FD_ENV)
    if fd is None:
        return unbound

    def watch() -> None:
        while True:
            try:
                if not os.read(int(fd), 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        LOG.warning("the supervisor is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="jisr-lifeline", daemon=True).start()
    return unbound


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
    return value if isinstance(value, str) and value else None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=WORKER_PROBE_TIMEOUT_S) as reply:
            reply.read()
        return True
    except (OSError, ValueError):
        return False


def _slot_check(slot: Slot) -> Callable[[], str | None]:
    def check() -> str | None:
        if slot.probe is None:
            return f"restarting (last exit: {slot.last_exit})" if slot.last_exit else "starting"
        try:
            with urllib.request.urlopen(
                f"http://{slot.probe}/readyz", timeout=WORKER_PROBE_TIMEOUT_S
            ) as reply:
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
