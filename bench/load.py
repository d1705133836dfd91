"""The load generator, run in its own process: `python -m bench.load unary|batch ...`.

Sends pre-serialized requests as raw bytes (no serializer: the same client code for the
echo servers and the gateway), each with its own `x-jisr-signature` token signed by the
calling institution's key over those bytes (a fresh jti per call; every server gets the
same bytes and metadata, the echo servers ignore them), over mTLS with the institution's
certificate (`--tls`) or plaintext. Keeps `--inflight` calls in flight, warms up, then
measures at most `--calls` calls for at most `--seconds`; the tokens of each loop are
signed just before it, never inside it. Prints one JSON object on stdout and short
progress lines on stderr. Client kinds: `aio` (grpc.aio, one event loop),
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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.common import (
    BATCH_METHOD,
    BATCH_PURPOSE,
    INSTITUTION,
    UNARY_METHOD,
    UNARY_PURPOSE,
    ProcessClock,
    machine_busy_seconds,
    percentile,
    process_clock,
    read_messages,
)
from bench.identity import (
    MAX_LOOP_S,
    Metadata,
    SignedStream,
    chain,
    channel_credentials,
    credentials,
    lifetime_for,
    signed_metadata,
    signed_stream,
)
from gateway.base.jws import body_hash
from gateway.base.wire import RECEIPT_METADATA
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Credentials
from gateway.security import receipts
from gateway.security.receipts import ReceiptError

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
    server: ProcessClock | None = None
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
            **_server_detail(self.server, ok),
        }


def _server_detail(server: ProcessClock | None, calls: int) -> dict[str, Any]:
    """The server's kernel share of its CPU, and its threads' context switches per call."""
    if server is None or not calls:
        return {}
    return {
        "server_system_share": round(server.system_s / max(server.cpu_s, 1e-9), 2),
        "server_voluntary_switches_per_call": round(server.voluntary_switches / calls, 1),
        "server_involuntary_switches_per_call": round(server.involuntary_switches / calls, 1),
    }


@dataclass(frozen=True)
class Plan:
    """One bounded loop: at most `calls` calls and `seconds` seconds. Call i sends
    requests[i % n] with metadata[i] (its own pre-signed token)."""

    requests: Sequence[bytes]
    metadata: Sequence[Metadata]
    calls: int
    inflight: int
    seconds: float


@dataclass(frozen=True)
class Caller:
    """Who calls: the institution's credentials, for tokens (always) and mTLS (if `tls`)."""

    creds: Credentials
    tls: bool
    purpose: str

    def plan(
        self,
        requests: Sequence[bytes],
        calls: int,
        inflight: int,
        seconds: float,
        *,
        wait_s: float = 0.0,
    ) -> Plan:
        """A loop's plan with its `calls` tokens signed now (outside any timing), to live
        through `wait_s` before the loop and the loop itself."""
        metadata = signed_metadata(
            self.creds.signer,
            UNARY_METHOD,
            self.purpose,
            requests,
            calls=calls,
            lifetime=lifetime_for(seconds + wait_s),
        )
        return Plan(requests, metadata, calls, inflight, seconds)


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
    server_before = process_clock(server_pid) if server_pid else None
    cpu_before = time.process_time()
    machine_before = machine_busy_seconds()
    started = time.perf_counter()
    with _Progress(label, phase):
        yield phase
    phase.seconds = time.perf_counter() - started
    phase.machine_cpu_s = machine_busy_seconds() - machine_before
    phase.client_cpu_s = time.process_time() - cpu_before
    server_after = process_clock(server_pid) if server_pid else None
    if server_before is not None and server_after is not None:
        phase.server = server_after - server_before
        phase.server_cpu_s = phase.server.cpu_s


# -- grpc.aio client --------------------------------------------------------------------


async def _aio_loop(call: Any, plan: Plan, phase: Phase) -> None:
    counter = itertools.count()
    deadline = time.monotonic() + plan.seconds
    requests, n, metadata = plan.requests, len(plan.requests), plan.metadata
    latencies = phase.latencies

    async def worker() -> None:
        while True:
            i = next(counter)
            if i >= plan.calls or time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            try:
                await call(requests[i % n], timeout=CALL_TIMEOUT_S, metadata=metadata[i])
            except grpc.aio.AioRpcError as exc:
                phase.fail(exc.code().name)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(plan.inflight)))


def run_aio(target: str, caller: Caller, loops: Loops, label: str, server_pid: int | None) -> Phase:
    async def main() -> Phase:
        channel = (
            grpc.aio.secure_channel(target, channel_credentials(caller.creds))
            if caller.tls
            else grpc.aio.insecure_channel(target)
        )
        async with channel:
            await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
            call = channel.unary_unary(UNARY_METHOD)
            await _aio_loop(call, loops.warmup(caller), Phase())
            plan = loops.measured(caller)
            await asyncio.sleep(loops.wait_s())
            with measuring(label, server_pid, Phase()) as phase:
                await _aio_loop(call, plan, phase)
            return phase

    return asyncio.run(main())


# -- sync clients -----------------------------------------------------------------------


def _threads_loop(call: Any, plan: Plan, phase: Phase) -> None:
    counter = itertools.count()
    deadline = time.monotonic() + plan.seconds
    requests, n, metadata = plan.requests, len(plan.requests), plan.metadata
    latencies = phase.latencies

    def worker() -> None:
        while True:
            i = next(counter)
            if i >= plan.calls or time.monotonic() >= deadline:
                return
            started = time.perf_counter()
            try:
                call(requests[i % n], timeout=CALL_TIMEOUT_S, metadata=metadata[i])
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
    requests, n, metadata = plan.requests, len(plan.requests), plan.metadata
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
        future = call.future(requests[i % n], timeout=CALL_TIMEOUT_S, metadata=metadata[i])
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


def _sync_channel(target: str, caller: Caller) -> grpc.Channel:
    if caller.tls:
        return grpc.secure_channel(target, channel_credentials(caller.creds))
    return grpc.insecure_channel(target)


def run_sync(
    kind: str, target: str, caller: Caller, loops: Loops, *, label: str, server_pid: int | None
) -> Phase:
    loop = _threads_loop if kind == "threads" else _futures_loop
    channel = _sync_channel(target, caller)
    try:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        call = channel.unary_unary(UNARY_METHOD)
        loop(call, loops.warmup(caller), Phase())
        plan = loops.measured(caller)
        time.sleep(loops.wait_s())
        with measuring(label, server_pid, Phase()) as phase:
            loop(call, plan, phase)
        return phase
    finally:
        channel.close()


@dataclass(frozen=True)
class Loops:
    """The warm-up and the measured loop of a unary run; each one's tokens are signed
    just before it starts, and the time that takes is recorded (never inside a loop)."""

    requests: Sequence[bytes]
    warmup_calls: int
    calls: int
    inflight: int
    seconds: float
    start_at: float = 0.0  # epoch seconds: the measured loop starts then, not before
    signing_s: list[float] = field(default_factory=list)
    late_s: list[float] = field(default_factory=list)

    def _signed(self, caller: Caller, calls: int, seconds: float, wait_s: float = 0.0) -> Plan:
        started = time.perf_counter()
        plan = caller.plan(self.requests, calls, self.inflight, seconds, wait_s=wait_s)
        self.signing_s.append(time.perf_counter() - started)
        return plan

    def warmup(self, caller: Caller) -> Plan:
        return self._signed(caller, self.warmup_calls, min(self.seconds, 10.0))

    def measured(self, caller: Caller) -> Plan:
        wait_s = max(0.0, self.start_at - time.time()) if self.start_at else 0.0
        return self._signed(caller, self.calls, self.seconds, wait_s)

    def wait_s(self) -> float:
        """How long to wait for `start_at` (several load generators starting together);
        a late start is recorded, so that the harness can tell the loops did not overlap."""
        if not self.start_at:
            return 0.0
        wait = self.start_at - time.time()
        if wait < 0:
            self.late_s.append(-wait)
        return max(0.0, wait)


# -- batch stream -----------------------------------------------------------------------


@dataclass
class _Receipts:
    """Checks each batch's receipt as the SDK does: signed by the gateway's key, for this
    call's jti, this position, these batch bytes and these result bytes."""

    jwks: Mapping[str, Any]
    stream: SignedStream
    received: list[str] = field(default_factory=list)
    failures: int = 0

    def batch(self, seq: int, envelope: pb.VerifyEligibilityBatchResponse) -> None:
        sh = body_hash(envelope.results)
        self.received.append(sh)
        expected = (self.stream.jti, seq, self.stream.batch_hashes[seq], sh)
        self._check(envelope.receipt, ("jti", "seq", "rh", "sh"), expected)

    def closing(self, trailers: Sequence[tuple[str, Any]] | None) -> None:
        values = [str(v) for k, v in trailers or () if k == RECEIPT_METADATA]
        sent = self.stream.batch_hashes[: len(self.received)]
        expected = (self.stream.jti, chain(sent), chain(self.received), len(self.received))
        self._check(values[0] if values else "", ("jti", "rh", "sh", "batches"), expected)

    def _check(self, token: str, names: tuple[str, ...], expected: tuple[Any, ...]) -> None:
        try:
            claims = receipts.verify(token, self.jwks)
        except ReceiptError:
            self.failures += 1
            return
        if tuple(claims.get(name) for name in names) != expected:
            self.failures += 1


def _stream(
    call: Any, stream: SignedStream, seconds: float, jwks: Mapping[str, Any]
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    sent = [0]

    def requests() -> Iterator[bytes]:
        for envelope in stream.envelopes:
            if time.monotonic() >= deadline:
                return
            sent[0] += 1
            yield envelope

    checked = _Receipts(jwks, stream)
    subjects = errors = responses = 0
    stream_error = ""
    started = time.perf_counter()
    try:
        responses_iter = call(requests(), timeout=seconds + 30, metadata=stream.metadata)
        for raw in responses_iter:
            envelope = pb.VerifyEligibilityBatchResponse.FromString(raw)
            checked.batch(responses, envelope)
            results = pb.EligibilityBatchResults.FromString(envelope.results)
            responses += 1
            subjects += len(results.results)
            errors += sum(1 for r in results.results if r.WhichOneof("result") == "error")
        trailers = responses_iter.trailing_metadata()
    except grpc.RpcError as exc:
        stream_error = exc.code().name
        trailers = None
    elapsed = time.perf_counter() - started
    if not stream_error:
        checked.closing(trailers)
    return {
        "batches_sent": sent[0],
        "batches_answered": responses,
        "subjects": subjects,
        "subject_errors": errors,
        "stream_error": stream_error,
        "receipts_checked": responses + (0 if stream_error else 1),
        "receipt_failures": checked.failures,
        "seconds": round(elapsed, 3),
        "subjects_per_s": round((subjects - errors) / max(elapsed, 1e-9), 1),
    }


def run_batch(
    target: str, caller: Caller, batches: Sequence[bytes], seconds: float, server_pid: int | None
) -> dict[str, Any]:
    """A warm-up stream of two batches, then one measured stream of every batch; each
    stream's envelopes and token are signed before it starts."""
    channel = _sync_channel(target, caller)
    signer, jwks = caller.creds.signer, caller.creds.gateway_jwks
    lifetime = lifetime_for(seconds)
    try:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        call = channel.stream_stream(BATCH_METHOD)
        warmup = signed_stream(signer, caller.purpose, batches[:2], lifetime)
        _stream(call, warmup, seconds, jwks)  # connections, statements, caches
        signing_started = time.perf_counter()
        stream = signed_stream(signer, caller.purpose, batches, lifetime)
        signing_s = time.perf_counter() - signing_started
        server_before = process_clock(server_pid) if server_pid else None
        cpu_before = time.process_time()
        machine_before = machine_busy_seconds()
        result = _stream(call, stream, seconds, jwks)
        client_cpu = time.process_time() - cpu_before
        machine_cpu = machine_busy_seconds() - machine_before
        server_after = process_clock(server_pid) if server_pid else None
        elapsed = max(result["seconds"], 1e-9)
        result["signing_s"] = round(signing_s, 3)
        result["client_cpu_cores"] = round(client_cpu / elapsed, 2)
        result["machine_cpu_cores"] = round(machine_cpu / elapsed, 2)
        server_cpu = 0.0
        if server_before is not None and server_after is not None:
            server_cpu = (server_after - server_before).cpu_s
            result["server_cpu_cores"] = round(server_cpu / elapsed, 2)
            answered = result["subjects"]
            result["server_cpu_us_per_subject"] = (
                round(server_cpu / answered * 1e6, 1) if answered else None
            )
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
    unary.add_argument("--purpose", default=UNARY_PURPOSE)
    unary.add_argument(
        "--start-at",
        type=float,
        default=0.0,
        help="epoch seconds: start the measured loop then (after warm-up and signing), so"
        " that several load generators measure over the same seconds",
    )
    batch = sub.add_parser("batch", help="VerifyEligibilityBatch, one stream")
    batch.add_argument("--purpose", default=BATCH_PURPOSE)
    for each in (unary, batch):
        each.add_argument("--target", required=True, help="127.0.0.1:PORT")
        each.add_argument("--requests", type=Path, required=True, help="serialized requests")
        each.add_argument("--seconds", type=float, default=30.0, help="cap of the measured loop")
        each.add_argument("--server-pid", type=int, help="to read the server's CPU time")
        each.add_argument("--label", default="load")
        each.add_argument("--pki-dir", type=Path, required=True, help="signing key (and TLS)")
        each.add_argument("--institution", default=INSTITUTION)
        each.add_argument("--tls", action="store_true", help="mTLS (else plaintext)")
    args = parser.parse_args(argv)
    if args.seconds > MAX_LOOP_S:
        parser.error(f"--seconds: at most {MAX_LOOP_S} (signed tokens live 300 s at most)")
    requests = read_messages(args.requests)
    caller = Caller(credentials(args.pki_dir, args.institution), args.tls, args.purpose)
    if args.mode == "batch":
        result = run_batch(args.target, caller, requests, args.seconds, args.server_pid)
    else:
        loops = Loops(
            requests, args.warmup_calls, args.calls, args.inflight, args.seconds, args.start_at
        )
        if args.client == "aio":
            phase = run_aio(args.target, caller, loops, args.label, args.server_pid)
        else:
            phase = run_sync(
                args.client,
                args.target,
                caller,
                loops,
                label=args.label,
                server_pid=args.server_pid,
            )
        result = {
            "client": args.client,
            "inflight": args.inflight,
            "tls": args.tls,
            "signing_s": [round(s, 3) for s in loops.signing_s],
            "start_late_s": round(sum(loops.late_s), 3),
            **phase.summary(),
        }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
