"""The table `make bench` prints at the end, from the results it writes as JSON."""

from __future__ import annotations

from typing import Any

from bench.common import GATEWAY_WORKERS


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def _number(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(results: dict[str, Any]) -> str:
    m, unary, summary = results["machine"], results["unary"], results["summary"]
    inflight = unary["gateway"]["inflight"]
    lines = [
        "",
        f"Jisr bench, {results['started_at']}: {m['nproc']} cores ({m['cpu_model']}),"
        f" Python {m['python']}, grpcio {m['grpcio']}",
        (
            "servers pinned to one CPU, load generator to another (--pin)"
            if results["settings"].get("pin")
            else "load generator and servers share the CPUs (not pinned)"
        ),
        "",
        f"{'VerifyEligibility, ' + str(inflight) + ' in flight':<38} {'rps':>8} {'p50 ms':>7}"
        f" {'p99 ms':>7} {'errors':>6} {'srv us/call':>11} {'srv cores':>9} {'other':>5}",
    ]
    workers = results["settings"].get("gateway_workers") or GATEWAY_WORKERS
    rows = (
        ("echo_sync", f"echo, sync grpc.server ({GATEWAY_WORKERS} workers)"),
        ("echo_aio", "echo, grpc.aio"),
        ("gateway", f"gateway, jisr serve ({workers} workers)"),
    )
    for key, label in rows:
        row = unary[key]
        lines.append(
            f"  {label:<36} {row['rps']:>8,.0f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f}"
            f" {row['errors']:>6}"
            f" {_number(row['server_cpu_us_per_call']):>11}"
            f" {_number(row['server_cpu_cores'], 2):>9}"
            f" {row['other_cpu_cores']:>5.2f}"
        )
    batch = results["batch"]
    gateway = unary["gateway"]
    lines += [
        "",
        f"gateway / echo sync throughput   {summary['gateway_over_echo_sync']:.2f}"
        f"   (target >= 0.50: {_met(summary['target_ratio_met'])})",
        f"gateway p99 at {inflight} in flight     {gateway['p99_ms']:.1f} ms"
        f"   (target <= 20 ms: {_met(summary['target_p99_met'])})",
        f"echo aio / echo sync throughput  {summary['echo_aio_over_echo_sync']:.2f}",
        f"batch, {batch['batches_answered']} x {batch['batch_size']:,} subjects"
        f"      {batch['subjects_per_s']:,.0f} households/s, {batch['subject_errors']} errors"
        f" -> 1,000,000 in {summary['batch_million_households_s']:.1f} s"
        f" (target <= 30 s: {_met(summary['target_million_in_30s_met'])})",
        f"gateway handler in-process       {results['pipeline_us_per_call']:.0f} us/call"
        " (one thread, no gRPC)",
        "client probe vs sync echo        "
        + ", ".join(f"{k} {v['rps']:,.0f} rps" for k, v in results["client_probe"].items())
        + f"; measured with {results['client']}",
        "",
        "srv us/call: server CPU per call (all its threads); other: cores used meanwhile by"
        " processes outside the bench",
    ]
    return "\n".join(lines)
