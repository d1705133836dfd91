"""Child processes of the bench: start, wait for "... on 127.0.0.1:PORT", always stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import HOST, READY, machine_busy_seconds

STOP_WAIT_S = 15.0


class BenchError(RuntimeError):
    """A step of the bench failed; the message says which and where its log is."""


@dataclass
class Server:
    """A server process started by the bench, its port and its log file."""

    label: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    tls: bool = False

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after STOP_WAIT_S. Idempotent."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def child_env() -> dict[str, str]:
    """The environment without JISR_* overrides, so the gateway runs its defaults."""
    return {k: v for k, v in os.environ.items() if not k.startswith("JISR_")}


def start_server(
    label: str,
    argv: Sequence[str],
    log: Path,
    extra_env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    *,
    tls: bool = False,
) -> Server:
    """Start `argv` with output to `log`; return once it prints its 127.0.0.1 port.
    `tls`: whether it serves mTLS (how the load generator must connect)."""
    env = {**child_env(), **(extra_env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = READY.search(log.read_text(errors="replace"))
        if match:
            return Server(label, process, int(match.group(1)), log, tls)
        if process.poll() is not None:
            raise BenchError(f"{label} exited with {process.returncode} before serving; see {log}")
        time.sleep(0.05)
    Server(label, process, 0, log).stop()
    raise BenchError(f"{label} did not announce its port within {timeout:g} s; see {log}")


def run_json(label: str, argv: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run a child that prints one JSON object last on stdout (stderr passes through)."""
    try:
        done = subprocess.run(
            list(argv), stdout=subprocess.PIPE, timeout=timeout, check=False, env=child_env()
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{label} did not finish within {timeout:g} s") from None
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    if done.returncode != 0 or not lines:
        raise BenchError(f"{label} failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_json_together(
    jobs: Sequence[tuple[str, Sequence[str]]], timeout: float
) -> list[dict[str, Any]]:
    """Run several children of the kind run_json runs at the same time; their JSON objects,
    in order. Every child is killed if one fails or the timeout passes."""
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for label, argv in jobs:
            procs.append(
                (label, subprocess.Popen(list(argv), stdout=subprocess.PIPE, env=child_env()))
            )
        deadline = time.monotonic() + timeout
        results: list[dict[str, Any]] = []
        for label, process in procs:
            try:
                out, _ = process.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(f"{label} did not finish within {timeout:g} s") from None
            lines = out.decode(errors="replace").strip().splitlines()
            if process.returncode != 0 or not lines:
                raise BenchError(f"{label} failed with exit code {process.returncode}")
            results.append(json.loads(lines[-1]))
        return results
    finally:
        for _, process in procs:
            if process.poll() is None:
                process.kill()
                process.wait()


def run_quiet(label: str, argv: Sequence[str], timeout: float) -> None:
    """Run a child to completion (its stderr passes through), or raise BenchError."""
    try:
        done = subprocess.run(
            list(argv), stdout=subprocess.DEVNULL, timeout=timeout, check=False, env=child_env()
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{label} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"{label} failed with exit code {done.returncode}")


def other_load(seconds: float = 1.0) -> float:
    """Cores kept busy over `seconds` by processes other than the bench (it sleeps)."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


def wait_for_quiet(max_wait: float, threshold: float = 0.3, sample: float = 1.0) -> float:
    """Wait (at most `max_wait` s) until other processes use < `threshold` cores, each
    look at the machine lasting `sample` s."""
    deadline = time.monotonic() + max_wait
    busy = other_load(sample)
    warned = False
    while busy >= threshold and time.monotonic() < deadline:
        if not warned:
            print(
                f"    machine busy: {busy:.2f} cores used by other processes;"
                f" waiting up to {max_wait:g} s for it to settle",
                file=sys.stderr,
                flush=True,
            )
            warned = True
        busy = other_load(sample)
    if busy >= threshold:
        print(f"    still {busy:.2f} cores busy elsewhere: figures will be low", file=sys.stderr)
    return busy
