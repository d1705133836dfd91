"""What tracing costs the gateway: `python -m bench.tracing [--quick] [--calls N]`.

The same VerifyEligibility workload as `make bench`'s gateway row (`jisr serve` over mTLS
in its own process, consents and audit on SQLite, requests signed before each loop, the
load generator bench.load in its own process with 64 calls in flight, every loop bounded
in calls and in seconds), measured with telemetry off and on, on 127.0.0.1 only:

- off: no OTEL_EXPORTER_OTLP_* endpoint: nothing is recorded, metric instruments are
  no-ops;
- tracing: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT points at bench.otlp_sink, an OTLP/gRPC
  receiver in its own process that keeps every export and parses and counts them when it
  stops; every span is recorded and exported through the gateway's span relay
  (OTEL_BSP_SCHEDULE_DELAY=200 ms); metrics stay off, as in "off";
- tracing+metrics: OTEL_EXPORTER_OTLP_ENDPOINT: the same spans, and the metrics through
  the SDK, exported every 5 s.
  Sampling is parent-based always-on (the load generator sends no traceparent), so
  every call is traced; the sink's count of server spans against the calls sent proves it.

The gateways are started once. Each round (`--rounds`) loads them one after the other
(off, tracing, tracing+metrics), then off and tracing side by side: two load generators
measuring over the same seconds, so that both meet the same machine. The headline (the
issue's target, for tracing: under 15 %) is the median over the rounds of the side-by-side
cost, 1 - rps ratio with the relay process's CPU charged to tracing; the cost by CPU per
call, and one after the other (1 - rps_mode / rps_off within a round), are reported
beside it (docs/performance-tracing.md). Then, in-process, the price of one traced call's
spans (tracing off, gateway.telemetry.tracing, the relay's marshalling, and what the SDK's own
tracer and OTLP encoder would cost), and of the per-call metric updates.
`measure()` is the whole comparison.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import marshal
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, Sampler
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue

from adapters.registry_db import REGISTRY_FILE
from bench import workload
from bench.common import (
    INSTITUTION,
    UNARY_METHOD,
    ProcessClock,
    child_pids,
    process_clock,
    write_messages,
)
from bench.identity import MAX_LOOP_S, make_pki
from bench.procs import (
    BenchError,
    Server,
    run_json,
    run_json_together,
    run_quiet,
    start_server,
    wait_for_quiet,
)
from gateway.telemetry import span_relay, tracing

UNARY_POOL = 10_000  # distinct serialized requests, cycled (as bench.run)
TARGET_COST = 0.15  # the issue's target: tracing costs under 15 % of throughput
BSP_SCHEDULE_DELAY_MS = 200
METRIC_EXPORT_INTERVAL_MS = 5000
SERVER_SPAN = "jisr.v1.RegistryExchange/VerifyEligibility"
# Each round runs these, in this order; the tracing cost is "traces" against "off", the
# cost of all telemetry "on" against "off" (docs/performance-tracing.md).
MODES = ("off", "traces", "on")
# --breakdown adds a run with only the metrics exported.
BREAKDOWN = ("metrics",)
MODE_NAMES = {
    "off": "off",
    "traces": "tracing",
    "on": "tracing+metrics",
    "metrics": "metrics only",
}

Say = Callable[[str], None]


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _jisr() -> list[str]:
    script = Path(sys.executable).with_name("jisr")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def otel_env(endpoint: str | None, mode: str = "on") -> dict[str, str]:
    """The gateway's OTEL_* variables: off (`endpoint` None), or OTLP towards `endpoint`
    for traces and metrics ("on"), traces only ("traces") or metrics only ("metrics").
    Every variable that could be inherited and matter is set (empty: not set)."""
    off = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "",
    }
    if endpoint is None or mode == "off":
        return off
    if mode not in MODE_NAMES:
        raise ValueError(f"unknown mode {mode!r}")
    traces_to = endpoint if mode in ("on", "traces") else ""
    metrics_to = endpoint if mode in ("on", "metrics") else ""
    return {
        "OTEL_SDK_DISABLED": "false",
        # The gateway turns each export on when this or the signal's own variable is set.
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint if mode == "on" else "",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": traces_to,
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": metrics_to,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": str(BSP_SCHEDULE_DELAY_MS),
        "OTEL_BSP_MAX_QUEUE_SIZE": "2048",  # the SDK's defaults, stated
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
        "OTEL_METRIC_EXPORT_INTERVAL": str(METRIC_EXPORT_INTERVAL_MS),
        "OTEL_SERVICE_NAME": "jisr-gateway",
    }


def _start(
    stack: ExitStack,
    label: str,
    argv: Sequence[str],
    log: Path,
    env: Mapping[str, str],
    *,
    tls: bool,
) -> Server:
    server = start_server(label, argv, log, env, tls=tls)
    stack.callback(server.stop)
    return server


def _sink_counts(sink: Server) -> dict[str, Any]:
    """Stop the sink; what it printed last: the JSON summary of what it received."""
    sink.stop()
    lines = sink.log.read_text(errors="replace").strip().splitlines()
    try:
        counts: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise BenchError(f"the OTLP sink printed no summary; see {sink.log}") from None
    return counts


def _load_argv(
    gateway: Server,
    requests: Path,
    pki_dir: Path,
    *,
    calls: int,
    inflight: int,
    warmup_calls: int,
    seconds: float,
    client: str,
    label: str,
    start_at: float = 0.0,
) -> list[str]:
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        "unary",
        "--target",
        gateway.target,
        "--requests",
        str(requests),
        "--server-pid",
        str(gateway.pid),
        "--pki-dir",
        str(pki_dir),
        "--institution",
        INSTITUTION,
        "--tls",
        "--client",
        client,
        "--calls",
        str(calls),
        "--inflight",
        str(inflight),
        "--warmup-calls",
        str(warmup_calls),
        "--seconds",
        str(seconds),
        "--label",
        label,
    ]
    if start_at:
        argv += ["--start-at", f"{start_at:.3f}"]
    return argv


def _load(argv: Sequence[str], label: str, seconds: float) -> dict[str, Any]:
    """One load generator run to its end (`argv`: _load_argv's); what it measured."""
    # Signing the tokens of the warm-up and of the loop takes a few seconds at most.
    return run_json(label, argv, timeout=2 * seconds + 90)


def _start_gateways(
    stack: ExitStack, modes: Sequence[str], *, data_dir: Path, pki_dir: Path, work: Path, logs: Path
) -> tuple[dict[str, Server], Server]:
    """One gateway per mode, all started once (each with its own state directory), and the
    OTLP sink the traced ones export to; stopped when `stack` closes."""
    sink = _start(
        stack,
        "otlp sink",
        [sys.executable, "-m", "bench.otlp_sink", "--port", "0"],
        logs / "otlp-sink.log",
        {},
        tls=False,
    )
    endpoint = f"http://{sink.target}"
    gateways: dict[str, Server] = {}
    for mode in modes:
        state = work / f"state-{mode}"
        state.mkdir()
        argv = [*_jisr(), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
        argv += ["--pki-dir", str(pki_dir)]
        env = {"JISR_STATE_DIR": str(state), **otel_env(endpoint, mode)}
        log = logs / f"gateway-tracing-{mode}.log"
        gateways[mode] = _start(stack, f"gateway ({mode})", argv, log, env, tls=True)
    return gateways, sink


def _slice(
    *,
    gateway: Server,
    mode: str,
    round_no: int,
    requests: Path,
    pki_dir: Path,
    calls: int,
    inflight: int,
    warmup_calls: int,
    seconds: float,
    client: str,
    quiet: Callable[[], float],
    say: Say,
) -> dict[str, Any]:
    """One bounded load run against the (already running) gateway of `mode`."""
    label = f"tracing {mode} #{round_no}"
    other = quiet()
    argv = _load_argv(
        gateway,
        requests,
        pki_dir,
        calls=calls,
        inflight=inflight,
        warmup_calls=warmup_calls,
        seconds=seconds,
        client=client,
        label=label,
    )
    result = _load(argv, label, seconds)
    result.update(mode=mode, round=round_no, other_load_before=round(other, 2))
    result["calls_sent"] = warmup_calls + int(result["calls"])
    say(
        f"    {label}: {result['rps']:,.0f} rps, p50 {result['p50_ms']:.1f} ms,"
        f" p99 {result['p99_ms']:.1f} ms, {result['errors']} errors,"
        f" gateway {result.get('server_cpu_us_per_call') or 0:,.0f} µs CPU/call"
        f" ({result['calls']:,} calls in {result['seconds']:.1f} s; other load before"
        f" {other:.2f} cores)"
    )
    if result["error_codes"]:
        say(f"    {label}: errors {result['error_codes']}")
    return result


# Side by side: how many tokens each load generator signs, per second of its loop. More
# than any one gateway answers while it shares the machine (sequential peaks: ~940 rps), so
# that every loop is bound by time, not by its count, and all of them overlap to the end.
TOGETHER_RPS_BOUND = 2_500
TOGETHER_LEAD_S = 3.0  # process start and imports, before the signing
TOGETHER_MAX_S = 60.0  # side-by-side loops are cut to this: 150,000 tokens each at most
SIGNING_S_PER_TOKEN = 60e-6  # ES256 on one core (~45 µs), with margin


# Gateways loaded side by side: "off" and "tracing" only (the issue's target), so that
# each has about one of the two cores.
TOGETHER_MODES = ("off", "traces")
RELAY_MODULE = "gateway.telemetry.span_export"


def _relay_clocks(gateway: Server) -> dict[int, ProcessClock]:
    """The gateway's relay processes by pid (one, unless it was being started again)."""
    clocks = {pid: process_clock(pid) for pid in child_pids(gateway.pid, RELAY_MODULE)}
    return {pid: clock for pid, clock in clocks.items() if clock is not None}


def _together(
    *,
    gateways: Mapping[str, Server],
    round_no: int,
    requests: Path,
    pki_dir: Path,
    inflight: int,
    seconds: float,
    client: str,
    quiet: Callable[[], float],
    say: Say,
) -> list[dict[str, Any]]:
    """One load generator per gateway, off and tracing, measuring over the same seconds:
    both meet the same machine, whatever its speed is doing. The relay process's CPU
    (which the two gateways share here) is measured, to charge it to tracing."""
    modes = TOGETHER_MODES
    seconds = min(seconds, TOGETHER_MAX_S)
    calls = int(seconds * TOGETHER_RPS_BOUND)
    other = quiet()
    start_at = time.time() + TOGETHER_LEAD_S + SIGNING_S_PER_TOKEN * calls * len(modes)
    jobs = [
        (
            f"side by side {mode} #{round_no}",
            _load_argv(
                gateways[mode],
                requests,
                pki_dir,
                calls=calls,
                inflight=inflight,
                warmup_calls=0,
                seconds=seconds,
                client=client,
                label=f"side by side {mode} #{round_no}",
                start_at=start_at,
            ),
        )
        for mode in modes
    ]
    relays_before = {mode: _relay_clocks(gateways[mode]) for mode in modes}
    results = run_json_together(jobs, timeout=2 * seconds + 120)
    for mode, result in zip(modes, results, strict=True):
        result.update(mode=mode, round=round_no, other_load_before=round(other, 2))
        result["calls_sent"] = int(result["calls"])
        # Overlapping loops: each started on time and ran its full time.
        result["overlapped"] = (
            float(result.get("start_late_s") or 0.0) < 0.5
            and float(result["seconds"]) >= 0.95 * seconds
        )
        before, after = relays_before[mode], _relay_clocks(gateways[mode])
        relay_s = sum((after[pid] - before[pid]).cpu_s for pid in before.keys() & after.keys())
        result["relay_cpu_us_per_call"] = round(relay_s / max(int(result["ok"]), 1) * 1e6, 1)
        if before.keys() != after.keys() or (mode != "off" and not before):
            result["overlapped"] = False  # a relay started again, or none: CPU not all here
    say(
        f"    side by side #{round_no}: "
        + ", ".join(
            f"{r['mode']} {r['rps']:,.0f} rps ({r['server_cpu_us_per_call'] or 0:,.0f}"
            f" + relay {r['relay_cpu_us_per_call']:,.0f} µs CPU/call)"
            for r in results
        )
        + ("" if all(r["overlapped"] for r in results) else "  [loops did not overlap]")
    )
    return results


def _received(
    sink: Server, sink_cpu_s: float | None, runs: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What the sink got from the traced gateways (read once they have all stopped)."""
    counts = _sink_counts(sink)
    by_name = counts.get("spans_by_name", {})
    sent = sum(int(r["calls_sent"]) for r in runs if r["mode"] in ("traces", "on"))
    spans = int(counts["spans"])
    received = {
        **counts,
        "calls_sent": sent,
        "server_spans": int(by_name.get(SERVER_SPAN, 0)),
        "spans_per_call": round(spans / max(sent, 1), 2),
    }
    if sink_cpu_s is not None:
        received["cpu_s"] = round(sink_cpu_s, 2)
        received["cpu_us_per_span"] = round(sink_cpu_s / max(spans, 1) * 1e6, 1)
    return received


def _median(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    values = [float(row[key]) for row in rows if row.get(key) is not None]
    return round(statistics.median(values), 1) if values else 0.0


def _paired_costs(by_mode: Mapping[str, Sequence[Mapping[str, Any]]], mode: str) -> list[float]:
    """1 - rps(mode) / rps(off) of each round: runs of one round share the machine's state
    (a busy neighbour, a slower disk), so pairs cancel what medians of rps would not."""
    by_round_off = {int(r["round"]): float(r["rps"]) for r in by_mode["off"]}
    return [
        round(1.0 - float(r["rps"]) / by_round_off[int(r["round"])], 3)
        for r in by_mode[mode]
        if by_round_off.get(int(r["round"]))
    ]


def _charged_cost(traced: Mapping[str, Any], off: Mapping[str, Any]) -> float | None:
    """1 - rps ratio of two gateways loaded side by side, with the traced one's relay CPU
    charged to it: both shared that CPU, and a CPU-bound gateway's throughput goes as the
    inverse of its CPU per call. None without the figures it needs."""
    gateway = float(traced.get("server_cpu_us_per_call") or 0.0)
    relay = float(traced.get("relay_cpu_us_per_call") or 0.0)
    if gateway <= 0 or float(off["rps"]) <= 0:
        return None
    ratio = float(traced["rps"]) / float(off["rps"]) * gateway / (gateway + relay)
    return round(1.0 - ratio, 3)


def _cpu_cost(traced: Mapping[str, Any], off: Mapping[str, Any]) -> float | None:
    """1 - the ratio of CPU per call (gateway, plus its relay when traced) of two gateways
    loaded side by side: what tracing costs a CPU-bound gateway, whichever of the two the
    scheduler happened to favour. None without the figures it needs."""
    off_cpu = float(off.get("server_cpu_us_per_call") or 0.0)
    traced_cpu = float(traced.get("server_cpu_us_per_call") or 0.0)
    if off_cpu <= 0 or traced_cpu <= 0:
        return None
    traced_cpu += float(traced.get("relay_cpu_us_per_call") or 0.0)
    return round(1.0 - off_cpu / traced_cpu, 3)


def _side_by_side(together: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per mode: median rps and CPU per call of the side-by-side loops, and its cost against
    "off" in the same loops (_charged_cost), per round and the median; rounds whose loops
    did not overlap are left out."""
    rounds = sorted({int(r["round"]) for r in together})
    by_round = {
        n: {r["mode"]: r for r in together if int(r["round"]) == n}
        for n in rounds
        if all(r["overlapped"] for r in together if int(r["round"]) == n)
    }
    modes = [mode for mode in MODE_NAMES if any(r["mode"] == mode for r in together)]
    result: dict[str, Any] = {"rounds": len(rounds), "rounds_overlapped": len(by_round)}
    for mode in modes:
        rows = [row[mode] for row in by_round.values() if mode in row]
        entry: dict[str, Any] = {
            "rps": _median(rows, "rps"),
            "p99_ms": _median(rows, "p99_ms"),
            "server_cpu_us_per_call": _median(rows, "server_cpu_us_per_call"),
            "relay_cpu_us_per_call": _median(rows, "relay_cpu_us_per_call"),
        }
        if mode != "off":
            pairs = [
                (row[mode], row["off"]) for row in by_round.values() if {mode, "off"} <= row.keys()
            ]
            costs = [c for t, o in pairs if (c := _charged_cost(t, o)) is not None]
            cpu_costs = [c for t, o in pairs if (c := _cpu_cost(t, o)) is not None]
            entry["cost_per_round"] = costs
            entry["cost"] = round(statistics.median(costs), 3) if costs else None
            entry["cpu_cost_per_round"] = cpu_costs
            entry["cpu_cost"] = round(statistics.median(cpu_costs), 3) if cpu_costs else None
        result[mode] = entry
    return result


def summarize(
    runs: Sequence[Mapping[str, Any]],
    received: Mapping[str, Any],
    together: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Medians per mode; each mode's cost against "off": side by side (the headline, when
    measured) and one after the other (the median of the rounds' paired costs); what the
    sink received over the traced runs."""
    keys = ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_call", "server_cpu_cores")
    present = [mode for mode in MODE_NAMES if any(r["mode"] == mode for r in runs)]
    by_mode = {mode: [r for r in runs if r["mode"] == mode] for mode in present}
    medians = {mode: {k: _median(rows, k) for k in keys} for mode, rows in by_mode.items()}
    per_round: dict[str, list[float]] = {}
    for mode in present:
        per_round[mode] = _paired_costs(by_mode, mode) if mode != "off" else []
        cost_of = statistics.median(per_round[mode]) if per_round[mode] else 0.0
        medians[mode]["cost"] = round(cost_of, 3)
        medians[mode]["cpu_us_per_call_added"] = round(
            medians[mode]["server_cpu_us_per_call"] - medians["off"]["server_cpu_us_per_call"], 1
        )
    side = _side_by_side(together) if together else None
    sequential = medians["traces"]["cost"]
    headline = side["traces"].get("cost") if side and "traces" in side else None
    cost = sequential if headline is None else headline
    spans = int(received["spans"])
    sent = int(received["calls_sent"])
    server_spans = int(received["server_spans"])
    return {
        **medians,
        "cost": cost,
        "cost_measured": "sequential" if headline is None else "side by side",
        "sequential_cost": sequential,
        "cost_per_round": per_round["traces"],
        "telemetry_cost": medians["on"]["cost"],
        "telemetry_cost_per_round": per_round["on"],
        "side_by_side": side,
        "target_cost": TARGET_COST,
        "target_met": cost < TARGET_COST,
        "gateway_cpu_us_per_call_added": medians["traces"]["cpu_us_per_call_added"],
        "spans_received": spans,
        "server_spans_received": server_spans,
        "calls_sent_traced": sent,
        "spans_per_call": round(spans / sent, 2) if sent else 0.0,
        "errors": sum(int(r["errors"]) for r in [*runs, *together]),
        "sink": dict(received),
    }


def measure(
    data_dir: Path,
    pki_dir: Path,
    calls: int,
    inflight: int,
    seconds: float,
    *,
    rounds: int = 8,
    warmup_calls: int = 2_000,
    client: str = "aio",
    seed: int = 11,
    quiet_wait: float = 30.0,
    quiet_sample: float = 1.0,
    logs: Path | None = None,
    span_calls: int = 2_000,
    breakdown: bool = False,
    say: Say = say,
) -> dict[str, Any]:
    """Tracing off and on, `rounds` times each in the order off, on, off, on, over the
    registry in `data_dir` and the PKI in `pki_dir` (bench.identity.make_pki's: the
    gateway's certificates and INSTITUTION's). Each run: at most `calls` measured calls
    (after `warmup_calls`) and `seconds` seconds, `inflight` in flight. Then the in-process
    span costs (`span_calls` traced calls' worth of spans; 0 skips them). `breakdown`:
    each round also runs the gateway with only traces, then only metrics, exported.
    Servers and sinks are stopped on the way out, whatever happens."""
    if seconds > MAX_LOOP_S:
        raise ValueError(f"seconds: at most {MAX_LOOP_S} (signed tokens live 300 s at most)")
    if rounds < 1:
        raise ValueError("rounds: at least 1")
    if not (data_dir / REGISTRY_FILE).is_file():
        raise BenchError(f"no registry in {data_dir}")
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    runs: list[dict[str, Any]] = []
    together: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="jisr-bench-tracing-") as tmp:
        work = Path(tmp)
        logs = logs or work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        subjects = workload.load_subjects(data_dir)
        requests = work / "unary.bin"
        write_messages(requests, workload.unary_requests(subjects, UNARY_POOL, seed))
        modes = (*MODES, *BREAKDOWN) if breakdown else MODES
        with ExitStack() as stack:
            gateways, sink = _start_gateways(
                stack, modes, data_dir=data_dir, pki_dir=pki_dir, work=work, logs=logs
            )
            sink_before = process_clock(sink.pid)
            for mode in modes:
                say(f"[tracing] warming up the gateway with tracing {mode}")
                runs.append(
                    {
                        "mode": mode,
                        "round": 0,
                        "calls_sent": warmup_calls,
                        **_load(
                            _load_argv(
                                gateways[mode],
                                requests,
                                pki_dir,
                                calls=warmup_calls,
                                inflight=inflight,
                                warmup_calls=0,
                                seconds=seconds,
                                client=client,
                                label=f"warm-up {mode}",
                            ),
                            f"warm-up {mode}",
                            seconds,
                        ),
                    }
                )
            for round_no in range(1, rounds + 1):
                say(f"[tracing] round {round_no}/{rounds}: {', '.join(modes)}")
                for mode in modes:
                    runs.append(
                        _slice(
                            gateway=gateways[mode],
                            mode=mode,
                            round_no=round_no,
                            requests=requests,
                            pki_dir=pki_dir,
                            calls=calls,
                            inflight=inflight,
                            warmup_calls=0,
                            seconds=seconds,
                            client=client,
                            quiet=lambda: wait_for_quiet(quiet_wait, sample=quiet_sample),
                            say=say,
                        )
                    )
                together += _together(
                    gateways=gateways,
                    round_no=round_no,
                    requests=requests,
                    pki_dir=pki_dir,
                    inflight=inflight,
                    seconds=seconds,
                    client=client,
                    quiet=lambda: wait_for_quiet(quiet_wait, sample=quiet_sample),
                    say=say,
                )
            sink_after = process_clock(sink.pid)
            for gateway in gateways.values():
                gateway.stop()  # each exports its last spans as it stops
            sink_cpu = (sink_after - sink_before).cpu_s if sink_before and sink_after else None
            received = _received(sink, sink_cpu, [*runs, *together])
        runs = [r for r in runs if r["round"] > 0]
    summary = summarize(runs, received, together)
    result: dict[str, Any] = {
        "started_at": started_at,
        "settings": {
            "calls": calls,
            "inflight": inflight,
            "seconds": seconds,
            "rounds": rounds,
            "warmup_calls": warmup_calls,
            "client": client,
            "households": len(subjects.household_ids),
            "breakdown": breakdown,
        },
        "otel_env_on": otel_env("http://127.0.0.1:PORT"),
        "runs": runs,
        "side_by_side": together,
        "summary": summary,
    }
    if span_calls > 0:
        say(f"[tracing] in-process: {span_calls:,} calls' spans, no-op API and SDK")
        result["span_cost_us"] = span_costs(span_calls, spans_per_call=summary["spans_per_call"])
    return result


# -- in-process: what one traced call's spans and metric updates cost --------------------

CHILD_SPANS = ("jisr.authenticate", "jisr.authorize", "jisr.adapter", "jisr.audit", "jisr.receipt")
CHUNK_CALLS = 64  # 64 calls' spans (< the BSP's 512-span batch) between untimed flushes
REPEATS = 5


class _Drop(SpanExporter):
    """An exporter that drops what it is given: the span processor's cost alone."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _sdk_call_spans(tracer: trace.Tracer) -> None:
    """One VerifyEligibility's spans made with the SDK's own tracer, as the gateway made
    them before gateway.telemetry.tracing: the SERVER span with its attributes, and its children."""
    with tracer.start_as_current_span(
        SERVER_SPAN,
        kind=trace.SpanKind.SERVER,
        attributes={
            "rpc.system": "grpc",
            "rpc.service": "jisr.v1.RegistryExchange",
            "rpc.method": "VerifyEligibility",
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as server:
        for name in CHILD_SPANS:
            with tracer.start_as_current_span(
                name,
                attributes={"jisr.institution": "RSU", "jisr.keys": 1},
                record_exception=False,
                set_status_on_exception=False,
            ):
                pass
        server.set_attribute("jisr.requester", INSTITUTION)
        server.set_attribute("jisr.purpose", "ASD_ELIGIBILITY")
        server.set_attribute("jisr.decision", "permit")
        server.set_attribute("jisr.audit_id", "bench-0000:1")
        server.set_attribute("rpc.grpc.status_code", 0)


_SERVER_ATTRIBUTES: dict[str, AttributeValue] = {
    "rpc.system": "grpc",
    "rpc.service": "jisr.v1.RegistryExchange",
    "rpc.method": "VerifyEligibility",
}
_METADATA = (("x-jisr-signature", "token"), ("user-agent", "grpc-python"))


def _gateway_call_spans() -> None:
    """The same spans as the gateway makes them now, with gateway.telemetry.tracing."""
    with tracing.server_span(SERVER_SPAN, _METADATA, _SERVER_ATTRIBUTES):
        for name in CHILD_SPANS:
            with tracing.span(name, {"jisr.institution": "RSU", "jisr.keys": 1}):
                pass
        server = tracing.current()
        server.set_attribute("jisr.requester", INSTITUTION)
        server.set_attribute("jisr.purpose", "ASD_ELIGIBILITY")
        server.set_attribute("jisr.decision", "permit")
        server.set_attribute("jisr.audit_id", "bench-0000:1")
        server.set_attribute("rpc.grpc.status_code", 0)


SPANS_PER_TREE = 1 + len(CHILD_SPANS)


def _best_us_per_call(
    calls: int, body: Callable[[], None], between: Callable[[], object] | None = None
) -> float:
    """Best of REPEATS timings of `calls` bodies, in chunks of CHUNK_CALLS; `between`
    runs untimed after each chunk. µs per body."""
    best = float("inf")
    chunks = max(1, calls // CHUNK_CALLS)
    for _ in range(REPEATS):
        total = 0.0
        for _ in range(chunks):
            started = time.perf_counter()
            for _ in range(CHUNK_CALLS):
                body()
            total += time.perf_counter() - started
            if between is not None:
                between()
        best = min(best, total / (chunks * CHUNK_CALLS))
    return best * 1e6


@contextmanager
def _provider(*processors: Any, sampler: Sampler | None = None) -> Iterator[TracerProvider]:
    resource = Resource.create({"service.name": "jisr-bench"})
    provider = TracerProvider(resource=resource, sampler=sampler)
    for processor in processors:
        provider.add_span_processor(processor)
    try:
        yield provider
    finally:
        provider.shutdown()


def _metric_updates(meter: metrics.Meter) -> Callable[[], None]:
    """The gateway's per-call metric updates: the exchange counter and histogram, one
    adapter histogram."""
    requests = meter.create_counter("jisr.exchange.requests")
    latency = meter.create_histogram("jisr.exchange.duration", unit="ms")
    adapter = meter.create_histogram("jisr.adapter.duration", unit="ms")
    attributes = {
        "rpc.method": UNARY_METHOD,
        "jisr.requester": INSTITUTION,
        "jisr.decision": "permit",
    }
    adapter_attributes = {"jisr.institution": "RSU", "jisr.record_kind": "HOUSEHOLD"}

    def update() -> None:
        requests.add(1, attributes)
        latency.record(1.5, attributes)
        adapter.record(0.2, adapter_attributes)

    return update


class _Queue:
    """What gateway.telemetry.span_relay.RelaySink does on the request path: one tuple, queued."""

    def __init__(self) -> None:
        self.queue: deque[span_relay.Flat] = deque()

    def put(self, span: tracing.Span) -> None:
        self.queue.append(span_relay.flat(span))


@contextmanager
def _gateway_pipeline(
    *processors: Any, sampler: Sampler | None = None, sinks: tuple[tracing.SpanSink, ...] = ()
) -> Iterator[None]:
    """gateway.telemetry.tracing sending spans to `processors` and `sinks`, as
    telemetry.setup_tracing does."""
    with _provider(*processors, sampler=sampler) as provider:
        tracing.install(
            tracing.Pipeline(
                processors=tuple(processors),
                sampler=provider.sampler,
                ids=provider.id_generator,
                resource=provider.resource,
                scope=InstrumentationScope("jisr"),
                sinks=sinks,
            )
        )
        try:
            yield
        finally:
            tracing.install(None)


def _marshal_us(flats: list[span_relay.Flat]) -> float:
    """µs per span of what the relay's thread does in the gateway: marshal a frame."""
    best = float("inf")
    rounds = max(1, 20_000 // len(flats))
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(rounds):
            marshal.dumps(flats)
        best = min(best, (time.perf_counter() - started) / (rounds * len(flats)))
    return best * 1e6


def span_costs(calls: int = 2_000, *, spans_per_call: float = 0.0) -> dict[str, Any]:
    """µs of one thread, per traced call of SPANS_PER_TREE spans (best of REPEATS):
    - `off`: gateway.telemetry.tracing with no pipeline, as the gateway runs with tracing off;
    - `gateway`: gateway.telemetry.tracing queueing each span as a tuple for the relay, as the
      gateway does with OTLP export on;
    - `gateway_unsampled`: the same when the sampler says no;
    - `relay`: marshalling the queued tuples, which the relay's thread does in the gateway
      (OTLP encoding happens in the relay child);
    - `sdk_bsp` / `otlp_encode`: the SDK's own tracer with the same processor, and OTLP
      encoding in-process: what the gateway paid before gateway.telemetry.tracing and the relay;
    - `metrics_noop` / `metrics_sdk`: the per-call metric updates, API vs SDK.
    Scaled per span, and to `spans_per_call` (the gateway's, from the sink) if given."""
    tracing.install(None)
    off = _best_us_per_call(calls, _gateway_call_spans)
    queued = _Queue()
    with _gateway_pipeline(sinks=(queued,)):
        lean = _best_us_per_call(calls, _gateway_call_spans, queued.queue.clear)
        for _ in range(max(1, 512 // SPANS_PER_TREE) + 1):
            _gateway_call_spans()
    flats = list(queued.queue)[:512]
    with _gateway_pipeline(sampler=ALWAYS_OFF, sinks=(_Queue(),)):
        unsampled = _best_us_per_call(calls, _gateway_call_spans)
    processor = BatchSpanProcessor(_Drop(), schedule_delay_millis=BSP_SCHEDULE_DELAY_MS)
    with _provider(processor) as provider:
        sdk_tracer = provider.get_tracer("jisr-bench")
        sdk = _best_us_per_call(calls, lambda: _sdk_call_spans(sdk_tracer), provider.force_flush)
    memory = InMemorySpanExporter()
    with _gateway_pipeline(SimpleSpanProcessor(memory)):
        for _ in range(max(1, 512 // SPANS_PER_TREE) + 1):
            _gateway_call_spans()
    batch = list(memory.get_finished_spans())[:512]
    encode = float("inf")
    encode_rounds = max(1, calls * SPANS_PER_TREE // len(batch))
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(encode_rounds):
            encode_spans(batch).SerializeToString()
        encode = min(encode, (time.perf_counter() - started) / (encode_rounds * len(batch)))
    relay = _marshal_us(flats) * SPANS_PER_TREE
    metrics_noop = _best_us_per_call(calls, _metric_updates(metrics.NoOpMeter("jisr-bench")))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    try:
        metrics_sdk = _best_us_per_call(
            calls, _metric_updates(meter_provider.get_meter("jisr-bench"))
        )
    finally:
        meter_provider.shutdown()
    per_call = {
        "off": round(off, 1),
        "gateway": round(lean, 1),
        "gateway_unsampled": round(unsampled, 1),
        "relay": round(relay, 1),
        "sdk_bsp": round(sdk, 1),
        "otlp_encode": round(encode * 1e6 * SPANS_PER_TREE, 1),
        "metrics_noop": round(metrics_noop, 1),
        "metrics_sdk": round(metrics_sdk, 1),
    }
    per_span = {
        key: round(per_call[key] / SPANS_PER_TREE, 2)
        for key in ("off", "gateway", "gateway_unsampled", "relay", "sdk_bsp", "otlp_encode")
    }
    result: dict[str, Any] = {
        "spans_per_tree": SPANS_PER_TREE,
        "per_tree_us": per_call,
        "per_span_us": per_span,
    }
    if spans_per_call:
        extra = (per_span["gateway"] - per_span["off"] + per_span["relay"]) * spans_per_call
        result["gateway_call_added_us"] = round(extra + metrics_sdk - metrics_noop, 1)
    return result


# -- the command -------------------------------------------------------------------------


def table(result: Mapping[str, Any]) -> str:
    summary = result["summary"]
    runs = result["runs"]
    lines = [
        f"{'tracing':<14}{'rps':>8}{'p50 ms':>9}{'p99 ms':>9}{'gateway µs CPU/call':>21}"
        f"{'cost':>8}   rps per round",
    ]
    for mode, name in MODE_NAMES.items():
        if mode not in summary:
            continue
        row = summary[mode]
        per_round = " / ".join(f"{float(r['rps']):,.0f}" for r in runs if r["mode"] == mode)
        lines.append(
            f"{name:<14}{row['rps']:>8,.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
            f"{row['server_cpu_us_per_call']:>21,.0f}"
            f"{'' if mode == 'off' else format(row['cost'], '.1%'):>8}   {per_round}"
        )
    lines.append("one after the other (rows above): each mode's slice of a round in turn")
    side = summary.get("side_by_side")
    if side:
        lines.append(
            f"side by side: every gateway loaded over the same seconds"
            f" ({side['rounds_overlapped']} of {side['rounds']} rounds overlapped)"
        )
        for mode, name in MODE_NAMES.items():
            if mode not in side:
                continue
            row = side[mode]
            cost = "" if mode == "off" or row.get("cost") is None else f"{row['cost']:.1%}"
            rounds = ", ".join(f"{c:.1%}" for c in row.get("cost_per_round", []))
            lines.append(
                f"  {name:<14}{row['rps']:>8,.0f} rps{row['p99_ms']:>9.1f} ms p99"
                f"{row['server_cpu_us_per_call']:>9,.0f} µs CPU/call"
                f" (relay {row['relay_cpu_us_per_call']:,.0f}){cost:>8}"
                + (f"   rounds: {rounds}" if rounds else "")
            )
            if row.get("cpu_cost") is not None:
                cpu_rounds = ", ".join(f"{c:.1%}" for c in row["cpu_cost_per_round"])
                lines.append(
                    f"  {'':<14}by CPU per call (gateway + relay): {row['cpu_cost']:.1%}"
                    f"   rounds: {cpu_rounds}"
                )
    verdict = "met" if summary["target_met"] else "NOT met"
    lines.append(
        f"tracing cost ({summary['cost_measured']}): {summary['cost']:.1%} of throughput;"
        f" target < {summary['target_cost']:.0%}: {verdict}"
    )
    lines.append(
        f"one after the other: tracing {summary['sequential_cost']:.1%} (median of the rounds:"
        f" {', '.join(f'{c:.1%}' for c in summary['cost_per_round'])}); tracing and metrics"
        f" {summary['telemetry_cost']:.1%} (rounds:"
        f" {', '.join(f'{c:.1%}' for c in summary['telemetry_cost_per_round'])})"
    )
    lines.append(
        f"spans received by the OTLP sink: {summary['spans_received']:,}"
        f" ({summary['spans_per_call']} per call; {summary['server_spans_received']:,} server"
        f" spans for {summary['calls_sent_traced']:,} calls sent while tracing);"
        f" errors {summary['errors']}"
    )
    costs = result.get("span_cost_us")
    if costs:
        tree, span = costs["per_tree_us"], costs["per_span_us"]
        lines.append(
            f"in-process, per span: tracing off {span['off']:.2f} µs, gateway.telemetry.tracing"
            f" {span['gateway']:.2f} µs (unsampled {span['gateway_unsampled']:.2f}), relay"
            f" frame {span['relay']:.2f} µs; before: SDK tracer {span['sdk_bsp']:.2f} µs +"
            f" OTLP encoding {span['otlp_encode']:.2f} µs; per call's metric updates:"
            f" no-op {tree['metrics_noop']:.1f} µs, SDK {tree['metrics_sdk']:.1f} µs"
        )
        if "gateway_call_added_us" in costs:
            lines.append(
                f"  -> about {costs['gateway_call_added_us']:.0f} µs of CPU per call at"
                f" {summary['spans_per_call']} spans per call (measured in the gateway:"
                f" {summary['gateway_cpu_us_per_call_added']:+.0f} µs CPU/call)"
            )
    return "\n".join(lines)


def _registry(data_dir: Path | None, work: Path, households: int, seed: int) -> Path:
    data_dir = data_dir or work / "data"
    if (data_dir / REGISTRY_FILE).is_file():
        say(f"[tracing] registry: reusing {data_dir / REGISTRY_FILE}")
        return data_dir
    say(f"[tracing] registry: {households:,} households, seed {seed} -> {data_dir}")
    argv = [*_jisr(), "demo-data", "--households", str(households), "--seed", str(seed)]
    run_quiet("jisr demo-data", [*argv, "--data-dir", str(data_dir), "--force"], timeout=600)
    return data_dir


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so that every child process is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small numbers: a smoke test")
    parser.add_argument("--calls", type=int, help="measured calls per run (20,000; quick 2,000)")
    parser.add_argument("--inflight", type=int, default=64, help="unary calls in flight")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help=f"cap of each run (<= {MAX_LOOP_S})"
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds of off, tracing, tracing+metrics (8; quick 2)"
    )
    parser.add_argument("--households", type=int, help="registry size (20,000; quick 2,000)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--client", choices=("aio", "threads", "futures"), default="aio")
    parser.add_argument("--data-dir", type=Path, help="reuse (or build) the registry here")
    parser.add_argument(
        "--quiet-wait", type=float, help="wait up to this for a quiet machine (30; quick 0)"
    )
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path(tempfile.gettempdir()) / "jisr-bench-tracing-logs",
        help="servers' logs (default %(default)s)",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="each round also runs traces only and metrics only (OTLP) against off",
    )
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.seconds > MAX_LOOP_S:
        parser.error(f"--seconds: at most {MAX_LOOP_S} (signed tokens live 300 s at most)")
    if args.rounds is None:
        args.rounds = 2 if args.quick else 8
    if args.rounds < 1 or args.inflight < 1:
        parser.error("--rounds and --inflight: at least 1")
    quick = bool(args.quick)
    calls = args.calls or (2_000 if quick else 20_000)
    signal.signal(signal.SIGTERM, _terminate)
    say(
        f"bench.tracing: {len(os.sched_getaffinity(0))} cores; everything on 127.0.0.1;"
        f" {args.rounds} rounds of tracing off then on, {calls:,} calls each,"
        f" {args.inflight} in flight"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="jisr-bench-tracing-") as tmp:
            work = Path(tmp)
            households = args.households or (2_000 if quick else 20_000)
            data_dir = _registry(args.data_dir, work, households, args.seed)
            result = measure(
                data_dir,
                make_pki(work / "pki"),
                calls,
                args.inflight,
                min(args.seconds, 10.0) if quick else args.seconds,
                rounds=args.rounds,
                warmup_calls=min(300 if quick else 2_000, calls),
                client=args.client,
                seed=args.seed,
                quiet_wait=args.quiet_wait if args.quiet_wait is not None else (0 if quick else 30),
                quiet_sample=0.2 if quick else 1.0,
                logs=args.logs,
                span_calls=500 if quick else 2_000,
                breakdown=bool(args.breakdown),
            )
    except BenchError as exc:
        say(f"bench.tracing: {exc}")
        return 1
    except KeyboardInterrupt:
        say("bench.tracing: interrupted; servers stopped")
        return 130
    result["command"] = "python -m bench.tracing " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
