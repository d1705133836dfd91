"""`make bench`: the gateway's full signed mTLS pipeline against bare echo servers of the
same server API, each step's cost in-process, the consent check, the audit trail, the
console's searches on a trail of 1,000,000 records, tracing off against on, then registry
events (docs/performance.md, "The harness"). Prints a table and writes
bench/results/latest.json; servers are stopped and PostgreSQL schemas dropped on every exit."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import google.protobuf
import grpc

from adapters.registry_db import REGISTRY_FILE
from bench import audit, audit_search, common, consent, procs, profile, sdk_import, workload
from bench import dci as dci_bench
from bench import events as registry_events
from bench.identity import MAX_LOOP_S
from bench.procs import BenchError, Server, say
from bench.report import table, targets
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.storage.postgres import describe
from tests.support import databases, processes
from tests.support.identities import make_pki

RESULTS = Path(__file__).resolve().parent / "results"
UNARY_POOL = 10_000  # distinct serialized requests, cycled
SCALING_CONNECTIONS = 8  # the load generator's connections in the whole-machine step
FLOOD = 10_000  # calls in flight at once (issue 18), one institution, the default limits
FLOOD_TIMEOUT_S = 120.0  # a call's deadline there: 10,000 queued calls take seconds each
SEED = 11
BATCH_SIZE = 1_000
CLIENT_CPU, SERVER_CPU = procs.CLIENT_CPU, procs.SERVER_CPU
PINNED = f"servers on CPU {SERVER_CPU}, load generator on CPU {CLIENT_CPU}"


@dataclass(frozen=True)
class Settings:
    """A run's sizes and caps (`make bench`'s defaults; QUICK for --quick)."""

    households: int = 20_000
    calls: int = 20_000
    inflight: int = 64
    warmup_calls: int = 2_000
    seconds: float = 30.0
    batches: int = 100
    batch_seconds: float = 60.0
    # The whole machine's batch step sends a real million (issue 18's target), not a rate
    # scaled up from 100 batches: a stream's start and the trail's growth weigh in as in use.
    million_batches: int = 1_000
    million_seconds: float = 120.0
    quiet_wait: float = 30.0
    quiet_sample: float = 1.0
    pipeline_calls: int = 5_000
    step_seconds: float = 60.0
    consents: int = 10_000
    audit_records: int = 20_000
    audit_threads: int = 8
    verify_records: int = 1_000_000
    build_seconds: float = 600.0
    search_records: int = audit_search.FULL_SIZE
    search_repeat: int = 30
    searches: bool = True  # bench.audit_search
    postgres: str | None = databases.DEFAULT_URL
    postgres_gateway: bool = True
    tracing: bool = True
    events: bool = True  # bench.events
    dci: bool = True  # bench.dci
    dci_calls: int = 5_000
    event_lines: int = registry_events.FULL["lines"]
    event_households: int = registry_events.FULL["households"]
    event_catchup: int = registry_events.FULL["catchup"]
    pin: bool = False
    gateway_workers: int | None = None
    data_dir: Path | None = None
    output: Path = RESULTS / "latest.json"
    quick: bool = False

    @property
    def workers(self) -> int:
        """The gateway's thread pool in this run, and so the sync echo's."""
        return self.gateway_workers or common.GATEWAY_WORKERS

    def pinned(self, cpu: int, argv: Sequence[str]) -> list[str]:
        """`argv` on one CPU with --pin (servers on the last, the load generator on 0)."""
        return procs.pinned(cpu, argv) if self.pin else list(argv)

    def quiet(self) -> float:
        """Wait for a quiet machine before a measured loop or section; the other load seen."""
        return round(procs.wait_for_quiet(self.quiet_wait, sample=self.quiet_sample), 2)


QUICK: dict[str, Any] = {"households": 2_000, "calls": 2_000, "warmup_calls": 300}
QUICK.update(seconds=10.0, batches=10, batch_seconds=15.0, quiet_wait=0.0, quiet_sample=0.2)
QUICK.update(million_batches=20, million_seconds=15.0)
QUICK.update(pipeline_calls=500, step_seconds=5.0, consents=1_000, audit_records=2_000)
QUICK.update(dci_calls=500)
QUICK.update(verify_records=100_000, build_seconds=60.0, postgres_gateway=False)
QUICK.update(search_records=50_000, search_repeat=10)
QUICK.update({f"event_{k}": v for k, v in registry_events.QUICK.items()})


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": models[0] if models else "",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
    }


class Run:
    """One run: its settings, temporary directory, servers to stop, and results."""

    def __init__(self, settings: Settings, stack: ExitStack, results: dict[str, Any]) -> None:
        self.s, self.stack, self.results = settings, stack, results
        self.work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="jisr-bench-")))
        self.logs = settings.output.parent / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.pki_dir = make_pki(self.work / "pki")
        self.requests, self.batches = self.work / "unary.bin", self.work / "batches.bin"
        self.million = self.work / "million.bin"  # the whole machine's batch step
        self.data_dir = settings.data_dir or self.work / "data"
        self.url: str | None = None  # PostgreSQL's, when it answers

    def serve(
        self, label: str, argv: Sequence[str], *, tls: bool, env: dict[str, str], pin: bool = True
    ) -> Server:
        log = self.logs / f"{label.replace(' ', '-')}.log"
        argv = self.s.pinned(SERVER_CPU, argv) if pin else list(argv)
        server = procs.start_server(label, argv, log, env, tls=tls)
        self.stack.callback(server.stop)
        say(f"    {label}: pid {server.pid} on {server.target}")
        return server

    def load(
        self,
        mode: str,
        server: Server,
        label: str,
        *extra: str,
        pin: bool = True,
        requests: Path | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """One run of the load generator (bench.load) against `server` (on its own CPU
        with --pin, unless `pin` is False: the whole machine's steps), sending `requests`
        (by default the step's: the unary pool, or the 100 batches) for `seconds` at most."""
        s, other = self.s, self.s.quiet()
        default = self.batches if mode == "batch" else self.requests
        argv = [sys.executable, "-m", "bench.load", mode, "--target", server.target]
        argv += ["--requests", str(requests or default)]
        argv += ["--server-pid", str(server.pid), "--pki-dir", str(self.pki_dir)]
        argv += ["--institution", common.INSTITUTION, "--label", label, *extra]
        argv += ["--tls"] if server.tls else []
        seconds = seconds or (s.batch_seconds if mode == "batch" else s.seconds)
        argv += ["--seconds", str(seconds)]
        # Signing the tokens of the warm-up and of the loop takes a few seconds at most.
        argv = s.pinned(CLIENT_CPU, argv) if pin else argv
        [result] = procs.run_json_together([(label, argv)], 2 * seconds + 150)
        return {**result, "other_load_before": other}

    def unary(self, server: Server, label: str) -> dict[str, Any]:
        s = self.s
        calls = ["--calls", str(s.calls), "--inflight", str(s.inflight)]
        result = self.load("unary", server, label, *calls, "--warmup-calls", str(s.warmup_calls))
        say(
            f"    {label}: {result['rps']:,.0f} rps, p50 {result['p50_ms']:.1f} ms,"
            f" p99 {result['p99_ms']:.1f} ms, {result['errors']} errors"
            f" ({result['calls']:,} calls in {result['seconds']:.1f} s)"
        )
        if result["error_codes"]:
            say(f"    {label}: errors {result['error_codes']}")
        return result

    def sdk_call(self, server: Server, household: str) -> dict[str, Any]:
        """One VerifyEligibility through the partner SDK: mTLS, a signed request, the
        receipt verified against the gateway's JWKS and checked to cover this exchange."""
        creds = Credentials.from_pki(self.pki_dir, common.INSTITUTION)
        try:
            with JisrClient(server.target, creds, timeout=10) as client:
                answer = client.verify(common.UNARY_PURPOSE, household, workload.PROGRAMMES[0])
        except JisrError as exc:
            raise BenchError(f"the gateway refused the SDK's signed call: {exc}") from None
        say(f"    SDK call: {answer.receipt['decision']}, receipt verified")
        return {**answer.receipt, "withheld": list(answer.withheld)}

    def registry(self) -> workload.Subjects:
        """`jisr demo-data` (unless --data-dir holds a registry); the requests from it."""
        s, data_dir, started = self.s, self.data_dir, time.monotonic()
        if (data_dir / REGISTRY_FILE).is_file():
            say(f"[1/11] registry: reusing {data_dir / REGISTRY_FILE}")
        else:
            say(f"[1/11] registry: {s.households:,} households, seed {SEED} -> {data_dir}")
            sizes = ("--households", str(s.households), "--seed", str(SEED), "--force")
            argv = processes.jisr("demo-data", *sizes, "--data-dir", str(data_dir))
            procs.run_quiet("jisr demo-data", argv, timeout=600)
        subjects = workload.load_subjects(data_dir)
        common.write_messages(self.requests, workload.unary_requests(subjects, UNARY_POOL, SEED))
        # The step's batches are the first of the million's (one seeded sequence).
        most = max(s.batches, s.million_batches)
        batches = workload.batch_requests(subjects, most, BATCH_SIZE, SEED)
        common.write_messages(self.batches, batches[: s.batches])
        common.write_messages(self.million, batches[: s.million_batches])
        self.results["registry"] = {
            "households": len(subjects.household_ids),
            "members": len(subjects.member_idcs),
            "seconds": round(time.monotonic() - started, 1),
        }
        return subjects

    def postgres(self) -> None:
        """Whether PostgreSQL answers at --postgres, and what the results record of it
        (never the URL itself: it may hold a password)."""
        url, results = self.s.postgres, self.results
        if url is None:
            results["postgres"] = {"available": False, "reason": "--no-postgres"}
            return
        reason, where = databases.probe(url), describe(url)
        results["postgres"] = {"where": where, "available": reason is None, "reason": reason or ""}
        if reason is None:
            say(f"    PostgreSQL answers at {where}: its rows are measured too")
            self.url = url
        else:
            say(f"    no PostgreSQL at {where} ({reason.splitlines()[0]}): its rows are skipped")

    def servers(self, household: str) -> None:
        """The echo servers, then the gateway on SQLite (unary, batch) and on PostgreSQL."""
        s, results, pki_dir = self.s, self.results, str(self.pki_dir)
        unary = results.setdefault("unary", {})
        say(f"[2/11] echo servers ({s.workers} workers for sync), mTLS and plaintext")
        for key, label, api, tls in ECHOES:
            argv = [sys.executable, "-m", "bench.echo", "--api", api, "--workers", str(s.workers)]
            argv += ["--pki-dir", pki_dir] if tls else []
            server = self.serve(label, argv, tls=tls, env={})
            unary[key] = self.unary(server, label)
            server.stop()

        say(f"[3/11] gateway, jisr serve, mTLS ({s.workers} workers), consents and audit on SQLite")
        listen = ("serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir))
        gateway = processes.jisr(*listen, "--pki-dir", pki_dir)
        env = {"JISR_WORKERS": str(s.gateway_workers)} if s.gateway_workers else {}
        server = self.serve("gateway", gateway, tls=True, env=env)
        results["sdk_call"] = self.sdk_call(server, household)
        unary["gateway"] = self.unary(server, "gateway")
        say("[4/11] gateway, VerifyEligibilityBatch, signed envelopes")
        batch = self.load("batch", server, "gateway batch")
        server.stop()
        results["batch"] = {**batch, "batch_size": BATCH_SIZE}
        say(
            f"    {batch['subjects_per_s']:,.0f} households/s ({batch['subjects']:,} subjects,"
            f" {batch['subject_errors']} errors, {batch['receipt_failures']} bad receipts"
            f"{', stream failed: ' + batch['stream_error'] if batch['stream_error'] else ''})"
        )
        if batch["receipt_failures"]:
            raise BenchError("a batch receipt did not verify or did not cover its batch")

        if self.url is None or not s.postgres_gateway:
            why = results["postgres"]["reason"] or "--quick"
            say(f"[5/11] gateway on PostgreSQL: skipped ({why})")
            return
        say("[5/11] gateway with JISR_DATABASE_URL: consents and audit on PostgreSQL")
        with databases.postgres_schema(self.url, "jisr_bench_gateway") as schema_url:
            env = {**env, "JISR_DATABASE_URL": schema_url}
            server = self.serve("gateway postgresql", gateway, tls=True, env=env)
            try:  # stopped before its schema is dropped
                self.sdk_call(server, household)
                pg_before = common.postgres_cpu_s()
                row = self.unary(server, "gateway postgresql")
                pg_cpu = common.postgres_cpu_s() - pg_before
            finally:
                server.stop()
        # PostgreSQL's CPU over warm-up and measured calls (its processes are "other" to the
        # load generator): per call, and in cores over the measured loop.
        row["postgres_cpu_us_per_call"] = round(pg_cpu / (row["calls"] + s.warmup_calls) * 1e6)
        row["postgres_cores"] = round(row["postgres_cpu_us_per_call"] * row["rps"] / 1e6, 2)
        unary["gateway_postgresql"] = row

    def scaling(self) -> None:
        """The whole machine (issue 18): calls over several connections to one gateway
        process and to two (`--processes 2`: the kernel spreads connections), each process
        bound to a CPU of its own as on a dedicated host (`--pin-processes`), the load
        generator free; the batch over a stream per process; 10,000 calls in flight."""
        s, results = self.s, self.results
        say("[4b] the whole machine: 1 and 2 gateway processes, each on a CPU of its own")
        listen = ("serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data_dir))
        gateway = processes.jisr(*listen, "--pki-dir", str(self.pki_dir))
        spread = ("--channels", str(SCALING_CONNECTIONS))
        calls = ("--calls", str(s.calls), "--inflight", str(s.inflight), *spread)
        warm = ("--warmup-calls", str(s.warmup_calls))
        rows: dict[str, Any] = {}
        for n in (1, 2):
            env = {"JISR_PROCESSES": str(n), "JISR_PIN_PROCESSES": "1"}  # default limits
            label = f"gateway {n} process{'es' if n > 1 else ''}"
            server = self.serve(label, gateway, tls=True, env=env, pin=False)
            rows[f"unary_{n}"] = self.load("unary", server, label, *calls, *warm, pin=False)
            say(f"    {label}: {rows[f'unary_{n}']['rps']:,.0f} rps")
            if n == 2:
                label = f"{label}, batch, a stream per process"
                rows["batch_2"] = batch = self.load(
                    "batch",
                    server,
                    label,
                    "--streams",
                    "2",
                    pin=False,
                    requests=self.million,
                    seconds=s.million_seconds,
                )
                say(
                    f"    {label}: {batch['subjects_per_s']:,.0f} households/s"
                    f" ({batch['subjects']:,} in {batch['seconds']:.1f} s over nodes"
                    f" {batch['nodes']})"
                )
                label = f"{FLOOD:,} calls in flight, {n} processes"
                flood = ("--calls", str(2 * FLOOD), "--inflight", str(FLOOD), *spread)
                rows["flood"] = row = self.load(
                    "unary",
                    server,
                    label,
                    *flood,
                    "--warmup-calls",
                    "0",
                    "--timeout",
                    str(FLOOD_TIMEOUT_S),
                    pin=False,
                )
                say(
                    f"    {label}: {row['calls']:,} calls, {row['errors']} errors,"
                    f" p99 {row['p99_ms'] / 1000:.1f} s"
                )
            server.stop()
        results["scaling"] = rows

    def schema(self, stack: ExitStack, prefix: str) -> str | None:
        """A PostgreSQL schema of its own until `stack` closes (None without PostgreSQL)."""
        return self.url and stack.enter_context(databases.postgres_schema(self.url, prefix))

    def in_process(self) -> None:
        """The handler's steps, the consent check, the audit trail; each one after waiting
        for a quiet machine, PostgreSQL's rows in schemas of their own."""
        s, results, pool = self.s, self.results, common.read_messages(self.requests)
        say("[6/11] gateway handler in-process, no gRPC, one thread: each step's cost")
        other = s.quiet()
        with (
            profile.pipeline(self.data_dir, self.pki_dir, self.work / "profile-state") as pipe,
            ExitStack() as schemas,
        ):
            steps = profile.steps(pipe, pool, s.pipeline_calls)
            results["steps_us"] = {**steps, "other_load_before": other}
            say(
                f"    handler {steps['handler_total']:.0f} µs/call audit on"
                f" ({steps['handler_total_no_audit']:.0f} off)"
            )
            say(f"[7/11] consent check per exchange, in-process: {s.consents:,} consents")
            other = s.quiet()
            url = self.schema(schemas, "jisr_bench_consent")
            results["consent"] = consent.measure(pipe, self.work, self.data_dir, s, url)
            results["consent"]["other_load_before"] = other
        sizes = f"{s.audit_records:,} appends, verify {s.verify_records:,}"
        say(f"[8/11] audit trail in-process: {sizes}")
        other = s.quiet()
        with ExitStack() as schemas:
            url = self.schema(schemas, "jisr_bench_audit")
            results["audit"] = audit.measure(self.work, self.pki_dir, s, url)
        results["audit"]["other_load_before"] = other

    def audit_search(self) -> None:
        """bench.audit_search in its own process: the console's searches through a gateway
        on a trail of `search_records` records, SQLite and PostgreSQL (when it answers);
        its results and its table (printed after this run's own). Exit status 1 (a p95
        over the target at full size) is a result, not a failure."""
        s = self.s
        backends = "sqlite,postgresql" if self.url else "sqlite"
        say(f"[9/11] audit search: {s.search_records:,} records, {backends} (bench.audit_search)")
        output = self.work / "audit-search.json"
        argv = [sys.executable, "-m", "bench.audit_search", "--records", str(s.search_records)]
        argv += ["--repeat", str(s.search_repeat), "--backends", backends]
        argv += ["--output", str(output), "--logs", str(self.logs)]
        argv += ["--postgres", self.url] if self.url else []
        env = processes.environment()
        done = subprocess.run(argv, check=False, stdout=subprocess.PIPE, env=env)
        if done.returncode not in {0, 1}:
            raise BenchError(f"bench.audit_search failed with exit code {done.returncode}")
        result = json.loads(output.read_text())
        self.results["audit_search"] = {**result, "table": done.stdout.decode(errors="replace")}

    def tracing(self) -> None:
        """bench.tracing over the same registry, in its own process: its results, and the
        table it prints (printed after this run's own)."""
        say("[10/11] tracing off against on (bench.tracing)")
        output = self.work / "tracing.json"
        argv = [sys.executable, "-m", "bench.tracing", "--data-dir", str(self.data_dir)]
        argv += ["--output", str(output), *(["--quick"] if self.s.quick else [])]
        env = processes.environment()
        done = subprocess.run(argv, check=False, stdout=subprocess.PIPE, env=env)
        if done.returncode != 0:
            raise BenchError(f"bench.tracing failed with exit code {done.returncode}")
        result = json.loads(output.read_text())
        self.results["tracing"] = {**result, "table": done.stdout.decode(errors="replace")}

    def events(self) -> None:
        """bench.events: the apply of `event_lines` changes, then subscribers of a gateway
        on a registry of its own catching up on `event_catchup` events."""
        s = self.s
        say(f"[11/11] registry events: apply {s.event_lines:,}, catch up {s.event_catchup:,}")
        other = s.quiet()
        sizes = {"lines": s.event_lines, "households": s.event_households}
        sizes["catchup"] = s.event_catchup
        found = registry_events.measure(self.work, self.pki_dir, self.logs, sizes)
        self.results["events"] = {**found, "other_load_before": other}

    def dci(self) -> None:
        """bench.dci: the DCI facade's sync search against the gRPC GetHouseholdStatus,
        the same households, 64 in flight, in this run."""
        s = self.s
        say(f"[dci] DCI sync search against gRPC: {s.dci_calls:,} calls each")
        other = s.quiet()
        found = dci_bench.measure(s.dci_calls, s.inflight, 2_000, self.work / "dci")
        self.results["dci"] = {**found, "other_load_before": other}


ECHOES = (  # key, label, --api, mTLS
    ("echo_sync_mtls", "echo sync mTLS", "sync", True),
    ("echo_sync_plain", "echo sync plaintext", "sync", False),
    ("echo_aio_mtls", "echo aio mTLS", "aio", True),
    ("echo_aio_plain", "echo aio plaintext", "aio", False),
    # The signed floor (issue 18): the aio echo, the request token verified, a receipt signed.
    ("floor_mtls", "signed floor mTLS", "floor", True),
)


def measure(s: Settings) -> dict[str, Any]:
    """Run every step; servers are stopped on the way out, whatever happens."""
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.run " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "workers": s.workers,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
    }
    if s.postgres:  # where, never the URL (it may hold a password)
        results["settings"]["postgres"] = describe(s.postgres)
    with ExitStack() as stack:
        run = Run(s, stack, results)
        subjects = run.registry()
        other = s.quiet()
        results["sdk_import"] = sdk_import.measure(3 if s.quick else sdk_import.RUNS)
        results["sdk_import"]["other_load_before"] = other
        run.postgres()
        run.servers(subjects.household_ids[0])
        run.scaling()
        run.in_process()
        if s.searches:
            run.audit_search()
        if s.tracing:
            run.tracing()
        if s.events:
            run.events()
        if s.dci:
            run.dci()
    results["summary"] = summarize(results)
    return results


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def _floor_targets(unary: dict[str, Any], rps: dict[str, float]) -> dict[str, Any]:
    """Issue 18's targets against the signed floor: throughput >= 0.8 x, p99 <= 1.5 x."""
    if "floor_mtls" not in rps:
        return {}
    over = _ratio(rps["gateway"], rps["floor_mtls"])
    p99 = _ratio(float(unary["gateway"]["p99_ms"]), float(unary["floor_mtls"]["p99_ms"]))
    return {
        "floor_over_echo_aio_mtls": _ratio(rps["floor_mtls"], rps["echo_aio_mtls"]),
        "gateway_over_floor": over,
        "target_floor_0_8_met": over >= 0.8,
        "gateway_p99_over_floor_p99": p99,
        "target_floor_p99_1_5_met": 0 < p99 <= 1.5,
    }


def _scaling_targets(scaling: dict[str, Any] | None) -> dict[str, Any]:
    """Issue 18 on the whole machine: 2 processes >= 1.7 x one (here the load generator
    shares the 2 cores), the batch over both, 10,000 calls in flight without a failure."""
    if not scaling:
        return {}
    over = _ratio(float(scaling["unary_2"]["rps"]), float(scaling["unary_1"]["rps"]))
    batch = scaling["batch_2"]
    # The target is a real million's time; a run cut short (the cap, an error, --quick's
    # 20 batches) is scaled up for the record, and never counts as met.
    whole = int(batch["subjects"]) >= 1_000_000 and not (
        batch["subject_errors"] or batch["stream_error"]
    )
    rate = float(batch["subjects_per_s"])
    scaled = round(1_000_000 / rate, 1) if rate else float("inf")
    million_s = round(float(batch["seconds"]), 1) if whole else scaled
    flood = scaling["flood"]
    # A refusal with its documented reason (RESOURCE_EXHAUSTED: TOO_MANY_CALLS, grpc's
    # max_concurrent_rpcs) is the limits working; a failure is anything else.
    refused = int(flood["error_codes"].get("RESOURCE_EXHAUSTED", 0))
    failed = int(flood["errors"]) - refused
    return {
        "processes_2_over_1": over,
        "target_processes_1_7_met": over >= 1.7,
        "batch_2_processes_million_households_s": million_s,
        "batch_2_processes_whole_million": whole,
        "target_million_in_30s_2_processes_met": whole and million_s <= 30.0,
        "flood_calls": flood["calls"],
        "flood_refused": refused,
        "flood_failed": failed,
        "target_flood_no_failure_met": failed == 0 and flood["calls"] > 0,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios and the design's targets, met or not."""
    unary = results["unary"]
    rps = {key: float(row["rps"]) for key, row in unary.items()}
    ratio = _ratio(rps["gateway"], rps["echo_sync_mtls"])
    batch_rate = float(results["batch"]["subjects_per_s"])
    million_s = 1_000_000 / batch_rate if batch_rate else float("inf")
    verify_s = float(results["audit"]["verify"]["million_s"])
    share = float(results["consent"]["sqlite"]["share_of_handler"])
    pg_rps = rps.get("gateway_postgresql")
    search, events = results.get("audit_search"), results.get("events")
    return {
        "gateway_over_echo_sync_mtls": ratio,
        "gateway_over_echo_sync_plain": _ratio(rps["gateway"], rps["echo_sync_plain"]),
        "echo_sync_mtls_over_plain": _ratio(rps["echo_sync_mtls"], rps["echo_sync_plain"]),
        "echo_aio_over_sync_mtls": _ratio(rps["echo_aio_mtls"], rps["echo_sync_mtls"]),
        "echo_aio_over_sync_plain": _ratio(rps["echo_aio_plain"], rps["echo_sync_plain"]),
        "target_ratio_met": ratio >= 0.5,
        "target_p99_met": unary["gateway"]["p99_ms"] <= 20.0,
        **_floor_targets(unary, rps),
        "gateway_errors": unary["gateway"]["errors"],
        "batch_households_per_s": batch_rate,
        # One process, for reference: DESIGN.md's million in <= 30 s is on 2 cores
        # (_scaling_targets).
        "batch_million_households_s": round(million_s, 1),
        **_scaling_targets(results.get("scaling")),
        "gateway_postgresql_rps": pg_rps,
        "gateway_postgresql_over_sqlite": _ratio(pg_rps, rps["gateway"]) if pg_rps else None,
        "audit_verify_million_s": verify_s,
        "target_verify_10s_met": verify_s <= 10.0,
        "target_verify_3s_met": verify_s <= 3.0,
        "consent_share_of_handler": share,
        "target_consent_10pct_met": share < 0.10,
        "audit_search_worst_p95_ms": search["worst_p95_ms"] if search else None,
        "target_audit_search_1s_met": search["target_met"] if search else None,
        **(_events_summary(events) if events else {}),
        **(_dci_summary(results["dci"]) if "dci" in results else {}),
    }


def _dci_summary(dci: dict[str, Any]) -> dict[str, Any]:
    return {
        "dci_over_grpc_cost": dci["cost_ratio"],
        "dci_over_grpc_server_cpu": dci["server_cpu_ratio"],
        "target_dci_2x_met": dci["met"],
    }


def _events_summary(events: dict[str, Any]) -> dict[str, Any]:
    apply, catchup, crowd = events["apply"], events["catchup"], events["crowd"]
    return {
        "events_apply_s": apply["seconds"],
        "events_apply_lines": apply["lines"],
        "target_events_apply_60s_met": apply["target_met"],
        "events_catchup_s": catchup["seconds"],
        "events_catchup_events": catchup["events"],
        "target_events_catchup_10s_met": catchup["target_met"],
        "events_slow_subscriber_ratio": crowd["ratio"],
        "target_events_slow_subscriber_met": crowd["target_met"],
    }


def settings_from(argv: Sequence[str] | None) -> Settings:
    base, url = Settings(), databases.configured_url()
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    add = parser.add_argument
    add("--quick", action="store_true", help="small numbers: a smoke test")
    sizes = {
        "--calls": ("calls", "measured unary calls per server"),
        "--inflight": ("inflight", "unary calls in flight"),
        "--seconds": ("seconds", f"cap of each unary run (<= {MAX_LOOP_S})"),
        "--households": ("households", "registry size, when it is built"),
        "--gateway-workers": ("gateway_workers", "JISR_WORKERS, and the sync echo's threads"),
        "--consents": ("consents", "consents in the consent store"),
        "--audit-records": ("audit_records", "records appended per audit store"),
        "--audit-threads": ("audit_threads", "threads appending them"),
        "--verify-records": ("verify_records", "records of the trail verified"),
        "--search-records": ("search_records", "records of the trail searched"),
        "--search-repeat": ("search_repeat", "searches of each kind, per backend"),
        "--event-lines": ("event_lines", "registry changes applied (bench.events)"),
        "--event-households": ("event_households", "registry they apply to"),
        "--event-catchup": ("event_catchup", "events each subscriber catches up on"),
    }
    for flag, (name, what) in sizes.items():
        default, quick = getattr(base, name) or common.GATEWAY_WORKERS, QUICK.get(name)
        shown = f"{default:,}" if isinstance(default, int) else str(default)
        shown += f"; quick {quick:,}" if quick is not None else ""
        add(flag, dest=name, type=type(default), help=f"{what} ({shown})")
    add("--data-dir", type=Path, help="reuse (or build) the registry here")
    add("--postgres", default=url, help=f"PostgreSQL for its rows, when it answers ({url})")
    add("--no-postgres", action="store_true", help="no PostgreSQL rows")
    add("--no-audit-search", action="store_true", help="skip bench.audit_search")
    add("--no-tracing", action="store_true", help="skip bench.tracing")
    add("--no-events", action="store_true", help="skip bench.events")
    add("--no-dci", action="store_true", help="skip bench.dci")
    add("--pin", action="store_true", help=PINNED)
    add("--output", type=Path, default=base.output, help="%(default)s")
    args = parser.parse_args(argv)
    chosen = {f.name: getattr(args, f.name, None) for f in fields(Settings)}
    given = {k: v for k, v in chosen.items() if v is not None}
    given.update(postgres=None if args.no_postgres else args.postgres, tracing=not args.no_tracing)
    given.update(searches=not args.no_audit_search, events=not args.no_events, dci=not args.no_dci)
    settings = replace(base, **{**(QUICK if args.quick else {}), **given})
    if settings.seconds > MAX_LOOP_S:
        parser.error(f"--seconds: at most {MAX_LOOP_S} (signed tokens live 300 s at most)")
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # unwinds as Ctrl-C does
    m = machine()
    say(f"bench: {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, grpcio {m['grpcio']}")
    say(f"bench: everything on 127.0.0.1; {PINNED if settings.pin else 'not pinned'}")
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
    if "audit_search" in results:
        print("\n" + results["audit_search"]["table"])
    if "tracing" in results:
        print("\n" + results["tracing"]["table"])
    if "events" in results:
        print("\n" + registry_events.table(results["events"]))
    print("\n" + targets(results["summary"]))
    print(f"results: {settings.output}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
