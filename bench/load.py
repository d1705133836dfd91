"""The load generator, in its own process: `python -m bench.load unary|batch ...`.

Each call carries its own `x-jisr-signature` over its raw bytes, signed before each loop;
mTLS (`--tls`) or plaintext. unary: grpc.aio, a warm-up, then `--calls` calls capped at
`--seconds`. batch: one VerifyEligibilityBatch stream, every receipt checked as the SDK
does. Prints one JSON object: latencies, errors by code, the CPU of this process, the
server and the rest."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc

from bench import common, identity
from bench.identity import Metadata
from gateway.base.jws import body_hash
from gateway.base.wire import RECEIPT_METADATA, SIGNATURE_METADATA
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
        self.server = common.process_clock(server_pid) if server_pid else None
        self.cpu, self.machine = time.process_time(), common.machine_busy_seconds()
        self.wall = time.perf_counter()

    def read(self, served: int, unit: str) -> dict[str, Any]:
        """Seconds, cores used by each, and the server's CPU µs per `unit` (`served`)."""
        elapsed = max(time.perf_counter() - self.wall, 1e-9)
        client = time.process_time() - self.cpu
        machine = common.machine_busy_seconds() - self.machine
        after = common.process_clock(self.pid) if self.pid else None
        out: dict[str, Any] = {
            "seconds": round(elapsed, 3),
            "client_cpu_cores": round(client / elapsed, 2),
            "machine_cpu_cores": round(machine / elapsed, 2),
        }
        server_cpu = 0.0
        if self.server is not None and after is not None:
            spent = after - self.server
            server_cpu = spent.cpu_s
            per_unit = round(server_cpu / served * 1e6, 1) if served else None
            out[f"server_cpu_us_per_{unit}"] = per_unit
            out["server_cpu_cores"] = round(server_cpu / elapsed, 2)
            if served and unit == "call":
                out["server_system_share"] = round(spent.system_s / max(server_cpu, 1e-9), 2)
                for kind in ("voluntary", "involuntary"):
                    switches = getattr(spent, f"{kind}_switches")
                    out[f"server_{kind}_switches_per_call"] = round(switches / served, 1)
        out["other_cpu_cores"] = round(max(0.0, machine - client - server_cpu) / elapsed, 2)
        return out


def _channel(api: Any, args: argparse.Namespace, creds: Credentials) -> Any:
    """A channel of `api` (grpc or grpc.aio) to --target, over mTLS with --tls, on a
    connection of its own (grpc would otherwise share one between equal channels: with
    `jisr serve --processes N` the kernel spreads connections, not calls)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    if args.tls:
        return api.secure_channel(args.target, tls(creds), options=options)
    return api.insecure_channel(args.target, options=options)


async def _loop(
    calls: Sequence[Any],
    requests: Sequence[bytes],
    metadata: Sequence[Metadata],
    inflight: int,
    seconds: float,
    *,
    timeout: float = CALL_TIMEOUT_S,
) -> tuple[list[float], Counter[str]]:
    """Call i sends requests[i % n] with metadata[i], `inflight` at a time (worker k on
    connection k % len(calls)), until every token is used or `seconds` pass; latencies,
    errors by code."""
    counter, n, deadline = itertools.count(), len(requests), time.monotonic() + seconds
    latencies, errors = list[float](), Counter[str]()

    async def worker(call: Any) -> None:
        while (i := next(counter)) < len(metadata) and time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                await call(requests[i % n], timeout=timeout, metadata=metadata[i])
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker(calls[k % len(calls)]) for k in range(inflight)))
    return latencies, errors


async def _unary(args: argparse.Namespace, creds: Credentials) -> dict[str, Any]:
    requests = common.read_messages(args.requests)
    signing: list[float] = []

    def signed(calls: int, seconds: float) -> list[Metadata]:
        started, lifetime = time.perf_counter(), identity.lifetime_for(seconds)
        method, purpose = common.UNARY_METHOD, common.UNARY_PURPOSE
        signed = identity.tokens(creds.signer, method, purpose, requests, calls, lifetime=lifetime)
        metadata: list[Metadata] = [((SIGNATURE_METADATA, token),) for token in signed]
        signing.append(round(time.perf_counter() - started, 3))
        return metadata

    channels = [_channel(grpc.aio, args, creds) for _ in range(args.channels)]
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT_S)
        calls = [channel.unary_unary(common.UNARY_METHOD) for channel in channels]
        warmup_s = min(args.seconds, 10.0)
        warmup = signed(args.warmup_calls, warmup_s)
        await _loop(calls, requests, warmup, args.inflight, warmup_s, timeout=args.timeout)
        # --start-at: several load generators measuring over the same seconds. A late
        # start is recorded, so that the harness can tell the loops did not overlap.
        wait = max(0.0, args.start_at - time.time()) if args.start_at else 0.0
        metadata = signed(args.calls, args.seconds + wait)
        wait = args.start_at - time.time() if args.start_at else 0.0
        await asyncio.sleep(max(0.0, wait))
        clocks = Clocks(args.server_pid)
        latencies, errors = await _loop(
            calls, requests, metadata, args.inflight, args.seconds, timeout=args.timeout
        )
    finally:
        for channel in channels:
            await channel.close()
    ordered = sorted(latencies)
    ok = len(ordered) - sum(errors.values())
    result = {
        "client": "aio",
        "inflight": args.inflight,
        "channels": args.channels,
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
        result[f"{name}_ms"] = round(common.percentile(ordered, q) * 1000, 3)
    return result


def _stream(
    call: Any, stream: identity.SignedStream, seconds: float, jwks: Mapping[str, Any]
) -> dict[str, Any]:
    """One stream of `stream`'s envelopes, sent until `seconds` pass; what came back. Every
    receipt is checked as the SDK checks it: signed by the gateway's key, for this jti, this
    position, these batch bytes and these result bytes."""
    deadline = time.monotonic() + seconds
    sent, failures, received, audit = [0], [0], list[str](), [""]

    def requests() -> Iterator[bytes]:
        for envelope in stream.envelopes:
            if time.monotonic() >= deadline:
                return
            sent[0] += 1
            yield envelope

    def check(token: str, names: str, *expected: Any) -> None:
        try:
            claims = receipts.verify(token, jwks)
        except ReceiptError:
            claims = {}
        failures[0] += tuple(claims.get(name) for name in names.split()) != expected
        audit[0] = str(claims.get("audit", ""))

    subjects = errors = 0
    stream_error = ""
    try:
        responses = call(requests(), timeout=seconds + 30, metadata=stream.metadata)
        for raw in responses:
            envelope = pb.VerifyEligibilityBatchResponse.FromString(raw)
            seq, sh = len(received), body_hash(envelope.results)
            received.append(sh)
            check(envelope.receipt, "jti seq rh sh", stream.jti, seq, stream.batch_hashes[seq], sh)
            results = pb.EligibilityBatchResults.FromString(envelope.results).results
            subjects += len(results)
            errors += sum(1 for r in results if r.WhichOneof("result") == "error")
        trailers = responses.trailing_metadata() or ()
        closing = [str(v) for k, v in trailers if k == RECEIPT_METADATA] or [""]
        rh = identity.chain(stream.batch_hashes[: len(received)])
        check(
            closing[0], "jti rh sh batches", stream.jti, rh, identity.chain(received), len(received)
        )
    except grpc.RpcError as exc:
        stream_error = exc.code().name
    answered = len(received)
    return {
        "batches_sent": sent[0],
        "batches_answered": answered,
        "subjects": subjects,
        "subject_errors": errors,
        "stream_error": stream_error,
        "receipts_checked": answered + (0 if stream_error else 1),
        "receipt_failures": failures[0],
        "node": audit[0].rpartition(":")[0],  # the gateway process that served it
    }


def _batch(args: argparse.Namespace, creds: Credentials) -> dict[str, Any]:
    """A warm-up stream of two batches on each connection, then the measured streams side
    by side, the batches dealt out between them; each stream's envelopes and token are
    signed before it starts."""
    batches = common.read_messages(args.requests)
    signer, jwks, lifetime = creds.signer, creds.gateway_jwks, identity.lifetime_for(args.seconds)
    channels = _channels_on_nodes(args, creds, batches[:2], args.streams)
    try:
        started = time.perf_counter()
        share = _dealt(batches, len(channels))
        streams = [identity.signed_stream(signer, common.BATCH_PURPOSE, b, lifetime) for b in share]
        signing_s = round(time.perf_counter() - started, 3)
        clocks = Clocks(args.server_pid)
        with ThreadPoolExecutor(len(channels)) as pool:
            runs = list(
                pool.map(
                    lambda pair: _stream(pair[0], pair[1], args.seconds, jwks),
                    [(call, stream) for (_, call), stream in zip(channels, streams, strict=True)],
                )
            )
        answered = sum(r["subjects"] for r in runs)
        result = _summed(runs)
        result.update(clocks.read(answered, "subject"), signing_s=signing_s)
    finally:
        for channel, _ in channels:
            channel.close()
    good = answered - result["subject_errors"]
    result["subjects_per_s"] = round(good / max(result["seconds"], 1e-9), 1)
    return result


def _dealt(batches: Sequence[bytes], streams: int) -> list[Sequence[bytes]]:
    """`batches` in `streams` contiguous shares of (nearly) equal length, so that each stream
    carries the workload's own mix. Dealt round-robin, the bench's batches, whose programmes
    alternate, gave one stream every AMOT batch and the other every ASD batch: the AMOT
    stream, which reads each member's coverage, ran ~1.8 x as long (docs/performance.md,
    "The batch", fourth pass)."""
    if not 0 < streams <= len(batches):
        raise ValueError(f"{len(batches)} batches cannot fill {streams} streams")
    size, extra = divmod(len(batches), streams)
    bounds = [k * size + min(k, extra) for k in range(streams + 1)]
    return [batches[bounds[k] : bounds[k + 1]] for k in range(streams)]


# Connections opened at most to find `--streams` gateway processes (the kernel spreads
# connections between the processes of `jisr serve --processes N` by their addresses).
MAX_CONNECTIONS = 16


def _channels_on_nodes(
    args: argparse.Namespace, creds: Credentials, warmup: Sequence[bytes], wanted: int
) -> list[tuple[Any, Any]]:
    """(channel, stream method) of `wanted` connections, each served by another gateway
    process: a warm-up stream on each tells which (its receipt's audit id names the node);
    fewer if MAX_CONNECTIONS did not find as many."""
    found: dict[str, tuple[Any, Any]] = {}
    lifetime = identity.lifetime_for(args.seconds)
    for _ in range(MAX_CONNECTIONS):
        channel = _channel(grpc, args, creds)
        grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_S)
        call = channel.stream_stream(common.BATCH_METHOD)
        stream = identity.signed_stream(creds.signer, common.BATCH_PURPOSE, warmup, lifetime)
        node = _stream(call, stream, args.seconds, creds.gateway_jwks)["node"]
        if not node or node in found:  # a failed warm-up names no process
            channel.close()
        else:
            found[node] = (channel, call)
        if len(found) == wanted:
            break
    return list(found.values())


def _summed(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The streams' counts added up; their errors and nodes listed."""
    counted = ("batches_sent", "batches_answered", "subjects", "subject_errors")
    result: dict[str, Any] = {k: sum(r[k] for r in runs) for k in counted}
    result["receipts_checked"] = sum(r["receipts_checked"] for r in runs)
    result["receipt_failures"] = sum(r["receipt_failures"] for r in runs)
    result["stream_error"] = ",".join(r["stream_error"] for r in runs if r["stream_error"])
    result["streams"] = len(runs)
    result["nodes"] = sorted({r["node"] for r in runs})
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    unary = sub.add_parser("unary", help="VerifyEligibility, many calls in flight")
    unary.add_argument("--calls", type=int, default=20_000)
    unary.add_argument("--inflight", type=int, default=64)
    unary.add_argument("--warmup-calls", type=int, default=2_000)
    when = "epoch seconds: start the measured loop then (after warm-up and signing)"
    unary.add_argument("--start-at", type=float, default=0.0, help=when)
    unary.add_argument("--channels", type=int, default=1, help="connections the calls share")
    unary.add_argument("--timeout", type=float, default=CALL_TIMEOUT_S, help="per call (s)")
    batch = sub.add_parser("batch", help="VerifyEligibilityBatch streams")
    spread = "streams side by side, each served by another gateway process (--processes)"
    batch.add_argument("--streams", type=int, default=1, help=spread)
    for each in (unary, batch):
        each.add_argument("--target", required=True, help="127.0.0.1:PORT")
        each.add_argument("--requests", type=Path, required=True, help="serialized requests")
        each.add_argument("--seconds", type=float, default=30.0, help="cap of the measured loop")
        each.add_argument("--server-pid", type=int, help="to read the server's CPU time")
        each.add_argument("--label", default="load", help="names the run in ps")
        each.add_argument("--pki-dir", type=Path, required=True, help="signing key (and TLS)")
        each.add_argument("--institution", default=common.INSTITUTION)
        each.add_argument("--tls", action="store_true", help="mTLS (else plaintext)")
    args = parser.parse_args(argv)
    if args.seconds > identity.MAX_LOOP_S:
        parser.error(f"--seconds: at most {identity.MAX_LOOP_S} (signed tokens live 300 s at most)")
    creds = Credentials.from_pki(args.pki_dir, args.institution, sub="jisr-bench")
    result = _batch(args, creds) if args.mode == "batch" else asyncio.run(_unary(args, creds))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
