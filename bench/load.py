"""The load generator, run in its own process: `python -m bench.load unary|batch ...`.

Sends pre-serialized requests as raw bytes (no serializer: the same client code for the
echo servers and the gateway), keeps `--inflight` calls in flight, warms up, then measures
at most `--calls` calls for at most `--seconds`. Prints one JSON object on stdout and
short progress lines on stderr. Client kinds: `aio` (grpc.aio, one event loop),
`threads` (one blocking sync call per thread), `futures` (sync channel, each completed
call's callback starts the next).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.common import (
    BATCH_METHOD,
    UNARY_METHOD,
    machine_busy_seconds,
    percentile,
    process_cpu_seconds,
    read_messages,
)
from gateway.pb.jisr.v1 import registry_pb2 as pb

CLIENTS = ("aio", "threads", "futures")
CALL_TIMEOUT_S = 10.0
PROGRESS_EVERY_S = 5.0


@dataclass
class Phase:
    """What one bounded loop of calls saw."""

    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None
    machine_cpu_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, code: str) -> None:
        with self.lock:
            self.errors[code] += 1

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        errors = sum(self.errors.values())
        ok = len(ordered) - errors
        elapsed = max(self.seconds, 1e-9)
        return {
            "calls": len(ordered),
            "ok": ok,
            "errors": errors,
            "error_codes": dict(self.errors),
            "seconds": round(self.seconds, 3),
            "rps": round(ok / elapsed, 1),
            "p50_ms": round(percentile(ordered, 0.50) * 1000, 3),
            "p90_ms": round(percentile(ordered, 0.90) * 1000, 3),
            "p99_ms": round(percentile(ordered, 0.99) * 1000, 3),
            "max_ms": round((ordered[-1] if ordered else 0.0) * 1000, 3),
            "client_cpu_cores": round(self.client_cpu_s / elapsed, 2),
            "server_cpu_cores": (
                None if self.server_cpu_s is None else round(self.server_cpu_s / elapsed, 2)
            ),
            "machine_cpu_cores": round(self.machine_cpu_s / elapsed, 2),
            "other_cpu_cores": round(
                max(0.0, self.machine_cpu_s - self.client_cpu_s - (self.server_cpu_s or 0.0))
                / elapsed,
                2,
            ),
            "server_cpu_us_per_call": (
                None
                if self.server_cpu_s is None or not ok
                else round(self.server_cpu_s / ok * 1e6, 1)
            ),
        }


@dataclass(frozen=True)
class Plan:
    """One bounded loop: at most `calls` calls and `seconds` seconds."""

    requests: Sequence[bytes]
    calls: int
    inflight: int
    seconds: float


class _Progress:
    """Prints `label: N calls, R/s` every few seconds while a phase runs."""

    def __init__(self, label: str, phase: Phase) -> None:
        self._label, self._phase = label, phase
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(PROGRESS_EVERY_S):
            done = len(self._phase.latencies)
            rate = done / (time.monotonic() - started)
            print(f"    {self._label}: {done:,} calls, {rate:,.0f}/s", file=sys.stderr, flush=True)


@contextmanager
def measuring(label: str, server_pid: int | None, phase: Phase) -> Iterator[Phase]:
    """Wall, client CPU and server CPU clocks around a phase, and progress lines."""
    server_before = process_cpu_seconds(server_pid) if server_pid else None
    cpu_before = time.process_time()
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    with _Progress(label, phase):
        yield phase
    phase.seconds = time.perf_counter() - started
    phase.machine_cpu_s = machine_busy_seconds() - machine_before
    phase.client_cpu_s = time.process_time() - cpu_before
    server_after = process_cpu_seconds(server_pid) if server_pid else None
    if server_before is not None and server_after is not None:
        phase.server_cpu_s = server_after - server_before


# -- grpc.aio client --------------------------------------------------------------------


async def _aio_loop(call: Any, plan: Plan, phase: Phase) -> None:
    counter = itertools.count()
    deadline = time.monotonic() + plan.seconds
    requests, n = plan.requests, len(plan.requests)
    latencies = phase.latencies

    async def worker() -> None:
        while True:
            i = next(counter)
            if i >= plan.calls or time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            try:
                await call(requests[i % n], timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                phase.fail(exc.code().name)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(plan.inflight)))


def run_aio(target: str, warmup: Plan, plan: Plan, label: str, server_pid: int | None) -> Phase:
    async def main() -> Phase:
        async with grpc.aio.insecure_channel(target) as channel:
            await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
            call = channel.unary_unary(UNARY_METHOD)
            await _aio_loop(call, warmup, Phase())
            with measuring(label, server_pid, Phase()) as phase:
                await _aio_loop(call, plan, phase)
            return phase

    return asyncio.run(main())


# -- sync clients -----------------------------------------------------------------------


def _threads_loop(call: Any, plan: Plan, phase: Phase) -> None:
    counter = itertools.count()
    deadline = time.monotonic() + plan.seconds
    requests, n = plan.requests, len(plan.requests)
    latencies = phase.latencies

    def worker() -> None:
        while True:
            i = next(counter)
            if i >= plan.calls or time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            try:
                call(requests[i % n], timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as exc:
                phase.fail(exc.code().name)
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(plan.inflight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _futures_loop(call: Any, plan: Plan, phase: Phase) -> None:
    counter = itertools.count()
    deadline = time.monotonic() + plan.seconds
    requests, n = plan.requests, len(plan.requests)
    latencies = phase.latencies
    finished = threading.Event()
    active = [plan.inflight]
    lock = threading.Lock()

    def launch() -> None:
        i = next(counter)
        if i >= plan.calls or time.monotonic() >= deadline:
            with lock:
                active[0] -= 1
                if active[0] == 0:
                    finished.set()
            return
        started = time.perf_counter()
        future = call.future(requests[i % n], timeout=CALL_TIMEOUT_S)
        future.add_done_callback(lambda f: done(f, started))

    def done(future: Any, started: float) -> None:
        latencies.append(time.perf_counter() - started)
        if future.code() != grpc.StatusCode.OK:
            phase.fail(future.code().name)
        launch()

    for _ in range(plan.inflight):
        launch()
    if not finished.wait(plan.seconds + 2 * CALL_TIMEOUT_S):
        phase.fail("BENCH_STUCK")


def run_sync(
    kind: str, target: str, warmup: Plan, plan: Plan, *, label: str, server_pid: int | None
) -> Phase:
    loop = _threads_loop if kind == "threads" else _futures_loop
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        call = channel.unary_unary(UNARY_METHOD)
        loop(call, warmup, Phase())
        with measuring(label, server_pid, Phase()) as phase:
            loop(call, plan, phase)
        return phase
    finally:
        channel.close()


# -- batch stream -----------------------------------------------------------------------


def _stream(call: Any, batches: Sequence[bytes], seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    sent = [0]

    def requests() -> Any:
        for batch in batches:
            if time.monotonic() >= deadline:
                return
            sent[0] += 1
            yield batch

    subjects = errors = responses = 0
    stream_error = ""
    started = time.perf_counter()
    try:
        for raw in call(requests(), timeout=seconds + 30):
            response = pb.VerifyEligibilityBatchResponse.FromString(raw)
            responses += 1
            subjects += len(response.results)
            errors += sum(1 for r in response.results if r.WhichOneof("result") == "error")
    except grpc.RpcError as exc:
        stream_error = exc.code().name
    elapsed = time.perf_counter() - started
    return {
        "batches_sent": sent[0],
        "batches_answered": responses,
        "subjects": subjects,
        "subject_errors": errors,
        "stream_error": stream_error,
        "seconds": round(elapsed, 3),
        "subjects_per_s": round((subjects - errors) / max(elapsed, 1e-9), 1),
    }


def run_batch(
    target: str, batches: Sequence[bytes], seconds: float, server_pid: int | None
) -> dict[str, Any]:
    channel = grpc.insecure_channel(target)
    try:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        call = channel.stream_stream(BATCH_METHOD)
        _stream(call, batches[:2], seconds)  # warm-up: connections, statements, caches
        server_before = process_cpu_seconds(server_pid) if server_pid else None
        cpu_before = time.process_time()
        machine_before = machine_busy_seconds()
        result = _stream(call, batches, seconds)
        client_cpu = time.process_time() - cpu_before
        machine_cpu = machine_busy_seconds() - machine_before
        server_after = process_cpu_seconds(server_pid) if server_pid else None
        elapsed = max(result["seconds"], 1e-9)
        result["client_cpu_cores"] = round(client_cpu / elapsed, 2)
        result["machine_cpu_cores"] = round(machine_cpu / elapsed, 2)
        server_cpu = 0.0
        if server_before is not None and server_after is not None:
            server_cpu = server_after - server_before
            result["server_cpu_cores"] = round(server_cpu / elapsed, 2)
        other = max(0.0, machine_cpu - client_cpu - server_cpu)
        result["other_cpu_cores"] = round(other / elapsed, 2)
        return result
    finally:
        channel.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    unary = sub.add_parser("unary", help="VerifyEligibility, many calls in flight")
    unary.add_argument("--client", choices=CLIENTS, default="aio")
    unary.add_argument("--calls", type=int, default=20_000)
    unary.add_argument("--inflight", type=int, default=64)
    unary.add_argument("--warmup-calls", type=int, default=2_000)
    batch = sub.add_parser("batch", help="VerifyEligibilityBatch, one stream")
    for each in (unary, batch):
        each.add_argument("--target", required=True, help="127.0.0.1:PORT")
        each.add_argument("--requests", type=Path, required=True, help="serialized requests")
        each.add_argument("--seconds", type=float, default=30.0, help="cap of the measured loop")
        each.add_argument("--server-pid", type=int, help="to read the server's CPU time")
        each.add_argument("--label", default="load")
    args = parser.parse_args(argv)
    requests = read_messages(args.requests)
    if args.mode == "batch":
        result = run_batch(args.target, requests, args.seconds, args.server_pid)
    else:
        warmup = Plan(requests, args.warmup_calls, args.inflight, min(args.seconds, 10.0))
        plan = Plan(requests, args.calls, args.inflight, args.seconds)
        if args.client == "aio":
            phase = run_aio(args.target, warmup, plan, args.label, args.server_pid)
        else:
            phase = run_sync(
                args.client, args.target, warmup, plan, label=args.label, server_pid=args.server_pid
            )
        result = {"client": args.client, "inflight": args.inflight, **phase.summary()}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
