"""The bench's children: servers (started and stopped by tests.support.processes), load
generators that print one JSON object last, and waiting for a quiet machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import machine_busy_seconds
from tests.support.processes import Proc, StartError, environment, spawn

CLIENT_CPU = 0
SERVER_CPU = max(os.sched_getaffinity(0))
_PIN = "import os, sys; os.sched_setaffinity(0, {%d}); os.execv(sys.argv[1], sys.argv[1:])"


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    """`argv` run on one CPU, every thread of it (the affinity is set before the exec)."""
    return [sys.executable, "-c", _PIN % cpu, *argv]


class BenchError(RuntimeError):
    """A step of the bench failed; the message says which and where its log is."""


@dataclass
class Server(Proc):
    tls: bool = False  # how to connect to it


def start_server(
    label: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    tls: bool = False,
) -> Server:
    """Start `argv` (output to `log`) and return once it prints its 127.0.0.1 port."""
    try:
        proc = spawn(argv, log, env)
    except StartError:
        raise BenchError(f"{label} did not start; see {log}") from None
    return Server(proc.popen, proc.port, proc.log, tls)


def run_json_together(
    jobs: Sequence[tuple[str, Sequence[str]]], timeout: float
) -> list[dict[str, Any]]:
    """Run children that each print one JSON object last on stdout (stderr passes through)
    at the same time; their objects, in order. All are killed if one fails or times out."""
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        for label, argv in jobs:
            child = subprocess.Popen(list(argv), stdout=subprocess.PIPE, env=environment())
            procs.append((label, child))
        deadline = time.monotonic() + timeout
        results: list[dict[str, Any]] = []
        for label, child in procs:
            try:
                out, _ = child.communicate(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise BenchError(f"{label} did not finish within {timeout:g} s") from None
            lines = out.decode(errors="replace").strip().splitlines()
            if child.returncode != 0 or not lines:
                raise BenchError(f"{label} failed with exit code {child.returncode}")
            results.append(json.loads(lines[-1]))
        return results
    finally:
        for _, child in procs:
            if child.poll() is None:
                child.kill()
                child.wait()


def run_quiet(label: str, argv: Sequence[str], timeout: float) -> None:
    """Run a child to completion (its stderr passes through), or raise BenchError."""
    try:
        done = subprocess.run(
            list(argv), check=False, stdout=subprocess.DEVNULL, timeout=timeout, env=environment()
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{label} did not finish within {timeout:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"{label} failed with exit code {done.returncode}")


def wait_for_quiet(max_wait: float, threshold: float = 0.3, sample: float = 1.0) -> float:
    """Wait (at most `max_wait` s) until processes other than the bench use < `threshold`
    cores, each look at the machine lasting `sample` s; the load last seen."""

    def other_load() -> float:
        before = machine_busy_seconds()
        time.sleep(sample)
        return (machine_busy_seconds() - before) / sample

    deadline = time.monotonic() + max_wait
    busy = other_load()
    if busy >= threshold and max_wait > 0:
        say(f"    machine busy: {busy:.2f} cores used elsewhere; waiting up to {max_wait:g} s")
    while busy >= threshold and time.monotonic() < deadline:
        busy = other_load()
    if busy >= threshold:
        say(f"    still {busy:.2f} cores busy elsewhere: figures will be low")
    return busy


def say(text: str) -> None:
    """A progress line, on stderr (stdout is for results)."""
    print(text, file=sys.stderr, flush=True)
