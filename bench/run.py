"""`make bench`: the gateway's full signed, mTLS pipeline against bare echo servers, one run.

Steps, every one on 127.0.0.1 and every load loop bounded in calls and in seconds:
1. a synthetic registry (or `--data-dir`'s), requests serialized from it up front, and a
   PKI like `make run`'s (gateway CA, server certificate, receipt key, institution DEMO);
2. bare echo servers of the gateway's own server API (sync grpc.server, the gateway's
   worker count, generic handler on raw bytes, the gateway's method path), each in its
   own process: over mTLS with the gateway's certificates (first a short probe of the load
   generator's client kinds), then plaintext; 3. the same echo on grpc.aio, for reference;
4. `jisr serve` over mTLS (consents and the audit trail on SQLite in its data dir, as it
   always runs: every reply waits for its durable audit record): one call through the
   partner SDK (receipt verified), the same unary run; then, when PostgreSQL answers,
   the same run with JISR_DATABASE_URL (consents and audit on PostgreSQL, a schema of
   the bench's own);
5. a VerifyEligibilityBatch stream of signed envelopes (SQLite gateway);
6. the handler's steps called in-process without gRPC, one thread, µs per call, the
   audit record among them;
7. the consent check's cost per exchange, in-process (bench.consent);
8. the audit trail in-process (bench.audit): appends per second through the group-commit
   writer (8 threads) and raw `append_batch`, on SQLite and PostgreSQL; verification of
   a 1,000,000-record trail read from SQLite.
Every server gets the same bytes: the request and one `x-jisr-signature` token per call,
signed before each loop (the echo servers ignore it). The load generator is its own
process (bench.load), the same for every server. Prints a table; writes
bench/results/latest.json. Servers are stopped, and PostgreSQL schemas dropped, even on
error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import google.protobuf
import grpc

from adapters.registry_db import REGISTRY_FILE
from bench import audit, consent, pg, profile, workload
from bench.common import (
    GATEWAY_WORKERS,
    INSTITUTION,
    UNARY_PURPOSE,
    read_messages,
    write_messages,
)
from bench.identity import MAX_LOOP_S, credentials, make_pki
from bench.load import CLIENTS
from bench.procs import BenchError, Server, run_json, run_quiet, start_server, wait_for_quiet
from bench.report import table
from gateway.sdk.client import JisrClient, JisrError
from gateway.storage.postgres import describe

RESULTS = Path(__file__).resolve().parent / "results"
UNARY_POOL = 10_000  # distinct serialized requests, cycled


@dataclass(frozen=True)
class Settings:
    households: int
    seed: int
    calls: int
    inflight: int
    warmup_calls: int
    seconds: float
    batches: int
    batch_size: int
    batch_seconds: float
    client: str
    probe_calls: int
    probe_seconds: float
    quiet_wait: float
    pipeline_calls: int
    step_seconds: float
    audit_records: int
    audit_threads: int
    verify_records: int
    build_seconds: float
    consents: int
    postgres: str | None
    postgres_gateway: bool
    pin: bool
    gateway_workers: int | None
    data_dir: Path | None
    pki_dir: Path
    output: Path
    quick: bool

    def server_argv(self, argv: Sequence[str]) -> list[str]:
        """A server's command, on the last CPU when pinning."""
        return _pinned(SERVER_CPU, argv) if self.pin else list(argv)

    def client_argv(self, argv: Sequence[str]) -> list[str]:
        """The load generator's command, on CPU 0 when pinning."""
        return _pinned(CLIENT_CPU, argv) if self.pin else list(argv)

    def quiet(self) -> float:
        """Wait for a quiet machine before a measured loop; the other load seen."""
        return wait_for_quiet(self.quiet_wait, sample=0.2 if self.quick else 1.0)

    @property
    def workers(self) -> int:
        """The gateway's thread pool in this run, and so the sync echo's."""
        return self.gateway_workers or GATEWAY_WORKERS


CLIENT_CPU = 0
SERVER_CPU = max(os.sched_getaffinity(0))


def _pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "bench.pin", str(cpu), *argv]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
    }


def _jisr() -> list[str]:
    script = Path(sys.executable).with_name("jisr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def _registry(settings: Settings, work: Path) -> Path:
    data_dir = settings.data_dir or work / "data"
    if (data_dir / REGISTRY_FILE).is_file():
        say(f"[1/8] registry: reusing {data_dir / REGISTRY_FILE}")
        return data_dir
    say(f"[1/8] registry: {settings.households:,} households, seed {settings.seed} -> {data_dir}")
    run_quiet(
        "jisr demo-data",
        [
            *_jisr(),
            "demo-data",
            "--households",
            str(settings.households),
            "--seed",
            str(settings.seed),
            "--data-dir",
            str(data_dir),
            "--force",
        ],
        timeout=600,
    )
    return data_dir


def _load_argv(settings: Settings, mode: str, server: Server, requests: Path) -> list[str]:
    """The load generator's common arguments: whom to call, with which identity."""
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        mode,
        "--target",
        server.target,
        "--requests",
        str(requests),
        "--server-pid",
        str(server.pid),
        "--pki-dir",
        str(settings.pki_dir),
        "--institution",
        INSTITUTION,
    ]
    return [*argv, "--tls"] if server.tls else argv


def _unary(
    settings: Settings, server: Server, requests: Path, client: str, label: str, *, probe: bool
) -> dict[str, Any]:
    calls, seconds = (
        (settings.probe_calls, settings.probe_seconds)
        if probe
        else (settings.calls, settings.seconds)
    )
    other = settings.quiet()
    argv = [
        *_load_argv(settings, "unary", server, requests),
        "--client",
        client,
        "--calls",
        str(calls),
        "--inflight",
        str(settings.inflight),
        "--warmup-calls",
        str(min(settings.warmup_calls, calls)),
        "--seconds",
        str(seconds),
        "--label",
        label,
    ]
    # Signing the tokens of the warm-up and of the loop takes a few seconds at most.
    result = run_json(label, settings.client_argv(argv), timeout=2 * seconds + 90)
    result["other_load_before"] = round(other, 2)
    say(
        f"    {label}: {result['rps']:,.0f} rps, p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, {result['errors']} errors"
        f" ({result['calls']:,} calls in {result['seconds']:.1f} s;"
        f" tokens signed beforehand in {sum(result['signing_s']):.1f} s)"
    )
    if result["error_codes"]:
        say(f"    {label}: errors {result['error_codes']}")
    return result


def _batch(settings: Settings, server: Server, batches: Path) -> dict[str, Any]:
    other = settings.quiet()
    label = "gateway batch"
    argv = [
        *_load_argv(settings, "batch", server, batches),
        "--seconds",
        str(settings.batch_seconds),
        "--label",
        label,
    ]
    result = run_json(label, settings.client_argv(argv), timeout=settings.batch_seconds + 90)
    result["batch_size"] = settings.batch_size
    result["other_load_before"] = round(other, 2)
    say(
        f"    {label}: {result['subjects_per_s']:,.0f} households/s"
        f" ({result['batches_answered']} batches, {result['subjects']:,} subjects,"
        f" {result['subject_errors']} subject errors, {result['seconds']:.1f} s;"
        f" {result['receipts_checked']} receipts checked, {result['receipt_failures']} bad)"
    )
    if result["stream_error"]:
        say(f"    {label}: the stream failed with {result['stream_error']}")
    return result


def _serve(
    settings: Settings,
    stack: ExitStack,
    label: str,
    argv: Sequence[str],
    log: Path,
    *,
    tls: bool,
    env: dict[str, str] | None = None,
) -> Server:
    server = start_server(label, settings.server_argv(argv), log, env, tls=tls)
    stack.callback(server.stop)
    say(f"    {label}: pid {server.pid} on {server.target}")
    return server


def _sanity(settings: Settings, server: Server, subjects: workload.Subjects) -> dict[str, Any]:
    """One VerifyEligibility through the partner SDK: mTLS, a signed request, the receipt
    verified against the gateway's JWKS and checked to cover this request and answer."""
    household = subjects.household_ids[0]
    try:
        with JisrClient(server.target, credentials(settings.pki_dir), timeout=10) as client:
            answer = client.verify(UNARY_PURPOSE, household, workload.PROGRAMMES[0])
    except JisrError as exc:
        raise BenchError(f"the gateway refused the SDK's signed call: {exc}") from None
    receipt = answer.receipt
    say(
        f"    SDK call: {receipt['decision']}, receipt verified (fields {len(receipt['fields'])},"
        f" withheld {list(answer.withheld)})"
    )
    return {
        "decision": receipt["decision"],
        "fields": receipt["fields"],
        "basis": receipt["basis"],
        "withheld": list(answer.withheld),
    }


ECHOES = (
    # key, label, --api, mTLS
    ("echo_sync_mtls", "echo sync mTLS", "sync", True),
    ("echo_sync_plain", "echo sync plaintext", "sync", False),
    ("echo_aio_mtls", "echo aio mTLS", "aio", True),
    ("echo_aio_plain", "echo aio plaintext", "aio", False),
)


def _echoes(
    settings: Settings, stack: ExitStack, requests: Path, results: dict[str, Any]
) -> tuple[dict[str, Any], str]:
    """Step 2: each echo server in turn (the client probe on the first); their unary rows
    and the load generator's client kind."""
    logs = settings.output.parent / "logs"
    unary: dict[str, Any] = {}
    client = settings.client
    say(f"[2/8] echo servers ({settings.workers} workers for sync), mTLS and plaintext")
    for key, label, api, tls in ECHOES:
        argv = [sys.executable, "-m", "bench.echo", "--port", "0", "--api", api]
        argv += ["--workers", str(settings.workers)]
        if tls:
            argv += ["--pki-dir", str(settings.pki_dir)]
        server = _serve(
            settings, stack, label, argv, logs / f"{key.replace('_', '-')}.log", tls=tls
        )
        if key == "echo_sync_mtls":
            # --quick probes only the client it uses, unless asked to choose (auto).
            kinds = CLIENTS if client == "auto" or not settings.quick else (client,)
            probe = {
                kind: _unary(settings, server, requests, kind, f"probe {kind}", probe=True)
                for kind in kinds
            }
            results["client_probe"] = probe
            if client == "auto":
                client = max(probe, key=lambda kind: float(probe[kind]["rps"]))
            results["client"] = client
            say(f"    load generator client: {client}")
        unary[key] = _unary(settings, server, requests, client, label, probe=False)
        server.stop()

    return unary, client


def measure(settings: Settings) -> dict[str, Any]:
    """Run every step; servers are stopped on the way out, whatever happens."""
    logs = settings.output.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "workers": settings.workers,
    }
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jisr-bench-")))
        settings = replace(settings, pki_dir=make_pki(work / "pki"))
        results["settings"] = {
            k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()
        }
        if settings.postgres:  # where, never the URL (it may hold a password)
            results["settings"]["postgres"] = describe(settings.postgres)
        started = time.monotonic()
        data_dir = _registry(settings, work)
        subjects = workload.load_subjects(data_dir)
        requests, batches = work / "unary.bin", work / "batches.bin"
        write_messages(requests, workload.unary_requests(subjects, UNARY_POOL, settings.seed))
        write_messages(
            batches,
            workload.batch_requests(subjects, settings.batches, settings.batch_size, settings.seed),
        )
        results["registry"] = {
            "households": len(subjects.household_ids),
            "members": len(subjects.member_idcs),
            "seconds": round(time.monotonic() - started, 1),
        }
        unary, client = _echoes(settings, stack, requests, results)

        url, results["postgres"] = _postgres(settings)
        say(
            f"[3/8] gateway, jisr serve, mTLS ({settings.workers} workers), consents and audit"
            " on SQLite (every reply after its durable audit record)"
        )
        gateway_argv = [*_jisr(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        gateway_argv += ["--pki-dir", str(settings.pki_dir)]
        workers_env = (
            {"JISR_WORKERS": str(settings.gateway_workers)} if settings.gateway_workers else {}
        )
        server = _serve(
            settings,
            stack,
            "gateway",
            gateway_argv,
            logs / "gateway.log",
            tls=True,
            env=workers_env,
        )
        results["sdk_call"] = _sanity(settings, server, subjects)
        unary["gateway"] = _unary(settings, server, requests, client, "gateway", probe=False)
        results["unary"] = unary
        say("[4/8] gateway, VerifyEligibilityBatch, signed envelopes")
        results["batch"] = _batch(settings, server, batches)
        server.stop()
        if results["batch"]["receipt_failures"]:
            raise BenchError("a batch receipt did not verify or did not cover its batch")

        if url is not None and settings.postgres_gateway:
            say("[5/8] gateway with JISR_DATABASE_URL: consents and audit on PostgreSQL")
            unary["gateway_postgresql"] = _gateway_postgresql(
                settings,
                stack,
                url,
                argv=gateway_argv,
                env=workers_env,
                subjects=subjects,
                requests=requests,
                client=client,
            )
        else:
            why = results["postgres"]["reason"] or "--quick, or --no-postgres-gateway"
            say(f"[5/8] gateway on PostgreSQL: skipped ({why})")

        pool = read_messages(requests)
        _in_process(settings, work=work, data_dir=data_dir, pool=pool, url=url, results=results)
    results["summary"] = summarize(results)
    return results


def _gateway_postgresql(
    settings: Settings,
    stack: ExitStack,
    url: str,
    *,
    argv: Sequence[str],
    env: dict[str, str],
    subjects: workload.Subjects,
    requests: Path,
    client: str,
) -> dict[str, Any]:
    """The gateway's unary run with JISR_DATABASE_URL: consents and audit on PostgreSQL, in
    a schema made for it and dropped after the server has stopped."""
    log = settings.output.parent / "logs" / "gateway-postgresql.log"
    with pg.schema(url, "gateway") as schema_url:
        env = {**env, "JISR_DATABASE_URL": schema_url}
        server = _serve(settings, stack, "gateway postgresql", argv, log, tls=True, env=env)
        try:
            _sanity(settings, server, subjects)
            label = "gateway postgresql"
            pg_before = pg.server_cpu_s()
            result = _unary(settings, server, requests, client, label, probe=False)
            pg_cpu = pg.server_cpu_s() - pg_before
        finally:
            server.stop()
    # PostgreSQL's CPU over warm-up and measured calls (its processes are "other" to the
    # load generator): per call, and in cores over the measured loop's length.
    result["postgres_cpu_us_per_call"] = round(
        pg_cpu / (result["calls"] + settings.warmup_calls) * 1e6
    )
    result["postgres_cores"] = round(result["postgres_cpu_us_per_call"] * result["rps"] / 1e6, 2)
    say(
        f"    PostgreSQL's own processes: {result['postgres_cpu_us_per_call']:,} µs CPU per call"
        f" (~{result['postgres_cores']:.2f} cores, part of the 'other' column)"
    )
    return result


def _in_process(
    settings: Settings,
    *,
    work: Path,
    data_dir: Path,
    pool: Sequence[bytes],
    url: str | None,
    results: dict[str, Any],
) -> None:
    """Steps 6 to 8: the handler's steps, the consent check, the audit trail; each one
    after waiting for a quiet machine. PostgreSQL rows (`url`) in schemas of their own."""
    say("[6/8] gateway handler in-process, no gRPC, one thread: each step's cost")
    other = settings.quiet()
    with profile.pipeline(data_dir, settings.pki_dir, work / "profile-state") as pipe:
        steps = profile.steps(pipe, pool, settings.pipeline_calls)
        steps["other_load_before"] = round(other, 2)
        results["steps_us"] = steps
        say(
            f"    handler {steps['handler_total']:.0f} us/call audit on"
            f" ({steps['handler_total_no_audit']:.0f} off); token verify"
            f" {steps['alone']['token_verify']:.0f}, exchange"
            f" {steps['alone']['exchange_verify']:.0f}, audit record"
            f" {steps['alone']['audit_record']:.0f} ({steps['audit_record_cpu_us']:.0f} CPU),"
            f" receipt {steps['alone']['receipt_sign']:.0f} (alone)"
        )
        say(
            f"[7/8] consent check per exchange, in-process: {settings.consents:,} consents,"
            " MEN GetHouseholdStatus SCHOOL_SUPPORT"
        )
        other = settings.quiet()
        with ExitStack() as schemas:
            consent_url = schemas.enter_context(pg.schema(url, "consent")) if url else None
            results["consent"] = consent.measure(
                pipe,
                work,
                data_dir,
                count=settings.consents,
                calls=settings.pipeline_calls,
                seconds=settings.step_seconds,
                postgres_url=consent_url,
                say=say,
            )
        results["consent"]["other_load_before"] = round(other, 2)

    say(
        f"[8/8] audit trail in-process: {settings.audit_records:,} appends"
        f" ({settings.audit_threads} threads), verify {settings.verify_records:,} records"
    )
    other = settings.quiet()
    with ExitStack() as schemas:
        audit_url = schemas.enter_context(pg.schema(url, "audit")) if url else None
        results["audit"] = audit.measure(
            work,
            settings.pki_dir,
            count=settings.audit_records,
            threads=settings.audit_threads,
            verify_records=settings.verify_records,
            seconds=settings.step_seconds,
            build_seconds=settings.build_seconds,
            postgres_url=audit_url,
            say=say,
        )
    results["audit"]["other_load_before"] = round(other, 2)


def _postgres(settings: Settings) -> tuple[str | None, dict[str, Any]]:
    """The URL if PostgreSQL answers at --postgres (probed once, a few seconds at most),
    and what the results record of it (never the URL itself: it may hold a password)."""
    if settings.postgres is None:
        return None, {"available": False, "reason": "--no-postgres"}
    reason = pg.probe(settings.postgres)
    where = describe(settings.postgres)
    if reason is None:
        say(f"    PostgreSQL answers at {where}: its rows are measured too")
        return settings.postgres, {"where": where, "available": True, "reason": ""}
    say(f"    no PostgreSQL at {where} ({reason}): its rows are skipped")
    return None, {"where": where, "available": False, "reason": reason}


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios and the design's targets, met or not."""
    unary = results["unary"]
    gateway = unary["gateway"]
    rps = {key: float(row["rps"]) for key, row in unary.items()}
    ratio = _ratio(rps["gateway"], rps["echo_sync_mtls"])
    batch_rate = float(results["batch"]["subjects_per_s"])
    million_s = 1_000_000 / batch_rate if batch_rate else float("inf")
    verify = results["audit"]["verify"]
    million_verify = float(verify["million_s"])
    share = float(results["consent"]["sqlite"]["share_of_handler"])
    pg_rps = float(unary["gateway_postgresql"]["rps"]) if "gateway_postgresql" in unary else None
    return {
        "gateway_over_echo_sync_mtls": ratio,
        "gateway_over_echo_sync_plain": _ratio(rps["gateway"], rps["echo_sync_plain"]),
        "echo_sync_mtls_over_plain": _ratio(rps["echo_sync_mtls"], rps["echo_sync_plain"]),
        "echo_aio_over_sync_mtls": _ratio(rps["echo_aio_mtls"], rps["echo_sync_mtls"]),
        "echo_aio_over_sync_plain": _ratio(rps["echo_aio_plain"], rps["echo_sync_plain"]),
        "target_ratio_met": ratio >= 0.5,
        "target_p99_met": gateway["p99_ms"] <= 20.0,
        "gateway_errors": gateway["errors"],
        "batch_households_per_s": batch_rate,
        "batch_million_households_s": round(million_s, 1),
        "target_million_in_30s_met": million_s <= 30.0,
        "gateway_postgresql_rps": pg_rps,
        "gateway_postgresql_over_sqlite": _ratio(pg_rps, rps["gateway"]) if pg_rps else None,
        "audit_verify_million_s": million_verify,
        "target_verify_10s_met": million_verify <= 10.0,
        "target_verify_3s_met": million_verify <= 3.0,
        "consent_share_of_handler": share,
        "target_consent_10pct_met": share < 0.10,
    }


def settings_from(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke test")
    parser.add_argument("--calls", type=int, help="measured unary calls (20,000; quick 2,000)")
    parser.add_argument("--inflight", type=int, default=64, help="unary calls in flight")
    parser.add_argument("--households", type=int, help="registry size (20,000; quick 2,000)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--seconds", type=float, default=30.0, help=f"cap of each unary run (<= {MAX_LOOP_S})"
    )
    parser.add_argument("--batches", type=int, help="batches in the stream (100; quick 10)")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument(
        "--batch-seconds", type=float, default=60.0, help=f"cap of the stream (<= {MAX_LOOP_S})"
    )
    parser.add_argument(
        "--client",
        choices=(*CLIENTS, "auto"),
        default="aio",
        help="load generator client (auto: the probe's fastest)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help=f"servers on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}",
    )
    parser.add_argument(
        "--gateway-workers", type=int, help="JISR_WORKERS for the gateway (default: its own)"
    )
    parser.add_argument("--data-dir", type=Path, help="reuse (or build) the registry here")
    parser.add_argument(
        "--audit-records",
        type=int,
        help="records appended per audit store through the writer (20,000; quick 2,000)",
    )
    parser.add_argument("--audit-threads", type=int, default=8, help="threads appending")
    parser.add_argument(
        "--verify-records",
        type=int,
        help="records of the trail verified (1,000,000; quick 100,000)",
    )
    parser.add_argument(
        "--consents", type=int, help="consents in the consent store (10,000; quick 1,000)"
    )
    parser.add_argument(
        "--postgres",
        default=pg.DEFAULT_URL,
        help="PostgreSQL for the PostgreSQL rows, when it answers (default %(default)s)",
    )
    parser.add_argument(
        "--no-postgres", action="store_true", help="skip every PostgreSQL measurement"
    )
    parser.add_argument(
        "--no-postgres-gateway",
        action="store_true",
        help="skip the gateway run on PostgreSQL (always skipped with --quick)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    if max(args.seconds, args.batch_seconds) > MAX_LOOP_S:
        parser.error(f"--seconds, --batch-seconds: at most {MAX_LOOP_S} (tokens live <= 300 s)")
    quick = bool(args.quick)
    return Settings(
        households=args.households or (2_000 if quick else 20_000),
        seed=args.seed,
        calls=args.calls or (2_000 if quick else 20_000),
        inflight=args.inflight,
        warmup_calls=300 if quick else 2_000,
        seconds=min(args.seconds, 10.0) if quick else args.seconds,
        batches=args.batches or (10 if quick else 100),
        batch_size=args.batch_size,
        batch_seconds=min(args.batch_seconds, 15.0) if quick else args.batch_seconds,
        client=args.client,
        probe_calls=1_000 if quick else 10_000,
        probe_seconds=3.0 if quick else 5.0,
        quiet_wait=0.0 if quick else 30.0,
        pipeline_calls=500 if quick else 5_000,
        step_seconds=5.0 if quick else 60.0,
        audit_records=args.audit_records or (2_000 if quick else 20_000),
        audit_threads=args.audit_threads,
        verify_records=args.verify_records or (100_000 if quick else 1_000_000),
        build_seconds=60.0 if quick else 600.0,
        consents=args.consents or (1_000 if quick else 10_000),
        postgres=None if args.no_postgres else args.postgres,
        postgres_gateway=not (quick or args.no_postgres_gateway),
        pin=bool(args.pin),
        gateway_workers=args.gateway_workers,
        data_dir=args.data_dir,
        pki_dir=Path(),  # made in the run's temporary directory
        output=args.output,
        quick=quick,
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so that every child process is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(argv)
    signal.signal(signal.SIGTERM, _terminate)
    info = machine()
    say(
        f"bench: {info['nproc']} cores ({info['cpu_model']}), Python {info['python']},"
        f" grpcio {info['grpcio']}; everything on 127.0.0.1; "
        + (
            f"servers pinned to CPU {SERVER_CPU}, load generator to CPU {CLIENT_CPU}"
            if settings.pin
            else "load generator and servers share the cores"
        )
    )
    try:
        results = measure(settings)
    except BenchError as exc:
        say(f"bench: {exc}")
        return 1
    except KeyboardInterrupt:
        say("bench: interrupted; servers stopped")
        return 130
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    settings.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"results: {settings.output}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
