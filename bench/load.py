"""The load generator, in its own process: `python -m bench.load unary|batch ...`.

Raw request bytes, each call with its own `x-jisr-signature` token over them (signed before
each loop, never inside it), over mTLS (`--tls`) or plaintext: the same client for the
echo servers and the gateway. unary: grpc.aio, `--inflight` calls in flight, a warm-up,
then at most `--calls` calls for at most `--seconds`. batch: one VerifyEligibilityBatch
stream of signed envelopes, every receipt checked as the SDK checks it. Prints one JSON
object: latencies, errors by code, and the CPU of this process, the server and the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from bench.common import (
    BATCH_METHOD,
    BATCH_PURPOSE,
    INSTITUTION,
    UNARY_METHOD,
    UNARY_PURPOSE,
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
from tests.support.identities import tls

CALL_TIMEOUT_S = 10.0


class Clocks:
    """Wall time and the CPU of this process, of the server and of the machine, from
    construction to `read`."""

    def __init__(self, server_pid: int | None) -> None:
        self.pid = server_pid
        self.server = process_clock(server_pid) if server_pid else None
        self.cpu, self.machine = time.process_time(), machine_busy_seconds()
        self.wall = time.perf_counter()

    def read(self, served: int, unit: str) -> dict[str, Any]:
        """Seconds, cores used by each, and the server's CPU µs per `unit` (`served`)."""
        elapsed = max(time.perf_counter() - self.wall, 1e-9)
        client = time.process_time() - self.cpu
        machine = machine_busy_seconds() - self.machine
        after = process_clock(self.pid) if self.pid else None
        out: dict[str, Any] = {
            "seconds": round(elapsed, 3),
            "client_cpu_cores": round(client / elapsed, 2),
            "machine_cpu_cores": round(machine / elapsed, 2),
        }
        server_cpu = 0.0
        if self.server is not None and after is not None:
            spent = after - self.server
            server_cpu = spent.cpu_s
            out[f"server_cpu_us_per_{unit}"] = (
                round(server_cpu / served * 1e6, 1) if served else None
            )
            out["server_cpu_cores"] = round(server_cpu / elapsed, 2)
            if served and unit == "call":
                out["server_system_share"] = round(spent.system_s / max(server_cpu, 1e-9), 2)
                for kind in ("voluntary", "involuntary"):
                    switches = getattr(spent, f"{kind}_switches")
                    out[f"server_{kind}_switches_per_call"] = round(switches / served, 1)
        out["other_cpu_cores"] = round(max(0.0, machine - client - server_cpu) / elapsed, 2)
        return out


# -- unary: grpc.aio, --inflight calls in flight ----------------------------------------


async def _loop(
    call: Any,
    requests: Sequence[bytes],
    metadata: Sequence[Metadata],
    *,
    inflight: int,
    seconds: float,
    latencies: list[float],
    errors: Counter[str],
) -> None:
    """Call i sends requests[i % n] with metadata[i], until every token is used or
    `seconds` pass."""
    counter, n = itertools.count(), len(requests)
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while (i := next(counter)) < len(metadata) and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await call(requests[i % n], timeout=CALL_TIMEOUT_S, metadata=metadata[i])
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(inflight)))


async def _unary(args: argparse.Namespace, creds: Credentials) -> dict[str, Any]:
    requests = read_messages(args.requests)
    signing: list[float] = []

    def signed(calls: int, seconds: float) -> list[Metadata]:
        started = time.perf_counter()
        metadata = signed_metadata(
            creds.signer,
            UNARY_METHOD,
            args.purpose,
            requests,
            calls=calls,
            lifetime=lifetime_for(seconds),
        )
        signing.append(round(time.perf_counter() - started, 3))
        return metadata

    channel = (
        grpc.aio.secure_channel(args.target, tls(creds))
        if args.tls
        else grpc.aio.insecure_channel(args.target)
    )
    async with channel:
        await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
        call = channel.unary_unary(UNARY_METHOD)
        warmup_s = min(args.seconds, 10.0)
        warmup = signed(args.warmup_calls, warmup_s)
        await _loop(
            call,
            requests,
            warmup,
            inflight=args.inflight,
            seconds=warmup_s,
            latencies=[],
            errors=Counter(),
        )
        # --start-at: several load generators measuring over the same seconds. A late
        # start is recorded, so that the harness can tell the loops did not overlap.
        wait = max(0.0, args.start_at - time.time()) if args.start_at else 0.0
        metadata = signed(args.calls, args.seconds + wait)
        wait = args.start_at - time.time() if args.start_at else 0.0
        await asyncio.sleep(max(0.0, wait))
        latencies: list[float] = []
        errors: Counter[str] = Counter()
        clocks = Clocks(args.server_pid)
        await _loop(
            call,
            requests,
            metadata,
            inflight=args.inflight,
            seconds=args.seconds,
            latencies=latencies,
            errors=errors,
        )
    ordered = sorted(latencies)
    ok = len(ordered) - sum(errors.values())
    result = {
        "client": "aio",
        "inflight": args.inflight,
        "tls": args.tls,
        "signing_s": signing,
        "start_late_s": round(max(0.0, -wait), 3),
        "calls": len(ordered),
        "ok": ok,
        "errors": len(ordered) - ok,
        "error_codes": dict(errors),
        **clocks.read(ok, "call"),
    }
    result["rps"] = round(ok / max(result["seconds"], 1e-9), 1)
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
        result[f"{name}_ms"] = round(percentile(ordered, q) * 1000, 3)
    return result


# -- batch: one stream of signed envelopes ------------------------------------------------


class _Receipts:
    """Checks each batch's receipt as the SDK does: signed by the gateway's key, for this
    call's jti, this position, these batch bytes and these result bytes."""

    def __init__(self, jwks: Mapping[str, Any], stream: SignedStream) -> None:
        self.jwks, self.stream = jwks, stream
        self.received: list[str] = []
        self.failures = 0

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
    """One stream of `stream`'s envelopes, sent until `seconds` pass; what came back."""
    deadline = time.monotonic() + seconds
    sent = [0]

    def requests() -> Iterator[bytes]:
        for envelope in stream.envelopes:
            if time.monotonic() >= deadline:
                return
            sent[0] += 1
            yield envelope

    checked = _Receipts(jwks, stream)
    subjects = errors = answered = 0
    stream_error = ""
    try:
        responses = call(requests(), timeout=seconds + 30, metadata=stream.metadata)
        for raw in responses:
            envelope = pb.VerifyEligibilityBatchResponse.FromString(raw)
            checked.batch(answered, envelope)
            results = pb.EligibilityBatchResults.FromString(envelope.results).results
            answered += 1
            subjects += len(results)
            errors += sum(1 for r in results if r.WhichOneof("result") == "error")
        checked.closing(responses.trailing_metadata())
    except grpc.RpcError as exc:
        stream_error = exc.code().name
    return {
        "batches_sent": sent[0],
        "batches_answered": answered,
        "subjects": subjects,
        "subject_errors": errors,
        "stream_error": stream_error,
        "receipts_checked": answered + (0 if stream_error else 1),
        "receipt_failures": checked.failures,
    }


def _batch(args: argparse.Namespace, creds: Credentials) -> dict[str, Any]:
    """A warm-up stream of two batches, then one measured stream of every batch; each
    stream's envelopes and token are signed before it starts."""
    batches = read_messages(args.requests)
    signer, jwks, lifetime = creds.signer, creds.gateway_jwks, lifetime_for(args.seconds)
    channel = (
        grpc.secure_channel(args.target, tls(creds))
        if args.tls
        else grpc.insecure_channel(args.target)
    )
    with channel:
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        call = channel.stream_stream(BATCH_METHOD)
        warmup = signed_stream(signer, args.purpose, batches[:2], lifetime)
        _stream(call, warmup, args.seconds, jwks)  # connections, statements, caches
        started = time.perf_counter()
        stream = signed_stream(signer, args.purpose, batches, lifetime)
        signing_s = round(time.perf_counter() - started, 3)
        clocks = Clocks(args.server_pid)
        result = _stream(call, stream, args.seconds, jwks)
        answered = result["subjects"]
        result.update(clocks.read(answered, "subject"), signing_s=signing_s)
    good = answered - result["subject_errors"]
    result["subjects_per_s"] = round(good / max(result["seconds"], 1e-9), 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    unary = sub.add_parser("unary", help="VerifyEligibility, many calls in flight")
    unary.add_argument("--client", choices=("aio",), default="aio", help="(aio only)")
    unary.add_argument("--calls", type=int, default=20_000)
    unary.add_argument("--inflight", type=int, default=64)
    unary.add_argument("--warmup-calls", type=int, default=2_000)
    unary.add_argument("--purpose", default=UNARY_PURPOSE)
    unary.add_argument(
        "--start-at",
        type=float,
        default=0.0,
        help="epoch seconds: start the measured loop then (after warm-up and signing)",
    )
    batch = sub.add_parser("batch", help="VerifyEligibilityBatch, one stream")
    batch.add_argument("--purpose", default=BATCH_PURPOSE)
    for each in (unary, batch):
        each.add_argument("--target", required=True, help="127.0.0.1:PORT")
        each.add_argument("--requests", type=Path, required=True, help="serialized requests")
        each.add_argument("--seconds", type=float, default=30.0, help="cap of the measured loop")
        each.add_argument("--server-pid", type=int, help="to read the server's CPU time")
        each.add_argument("--label", default="load", help="names the run in ps")
        each.add_argument("--pki-dir", type=Path, required=True, help="signing key (and TLS)")
        each.add_argument("--institution", default=INSTITUTION)
        each.add_argument("--tls", action="store_true", help="mTLS (else plaintext)")
    args = parser.parse_args(argv)
    if args.seconds > MAX_LOOP_S:
        parser.error(f"--seconds: at most {MAX_LOOP_S} (signed tokens live 300 s at most)")
    creds = Credentials.from_pki(args.pki_dir, args.institution, sub="jisr-bench")
    result = _batch(args, creds) if args.mode == "batch" else asyncio.run(_unary(args, creds))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
