"""The table `make bench` prints at the end, from the results it writes as JSON."""

from __future__ import annotations

from typing import Any

from bench.profile import IN_SEQUENCE


def _met(flag: bool) -> str:
    return "met" if flag else "NOT met"


def _number(value: Any, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


STEP_LABELS = {
    "token_verify": "request token verify (pyjwt, trust store, rh)",
    "replay_check": "replay check (iss, jti)",
    "parse_request": "parse request",
    "policy_authorize": "policy authorize",
    "exchange_verify": "exchange pipeline (Exchange.verify)",
    "projection": "projection (DEMO: every field)",
    "projection_minimising": "projection (CNSS: score_band withheld)",
    "response_serialize_hash": "serialize response + sha256",
    "receipt_sign": "receipt sign (ReceiptSigner.sign)",
}
REFERENCE_LABELS = {
    "es256_verify_raw": ("ES256 verify, cryptography", "~45"),
    "es256_sign_raw": ("ES256 sign, cryptography", "~17"),
    "pyjwt_decode_verify": ("pyjwt decode+verify ES256", "~65"),
    "pyjwt_unverified_header": ("pyjwt get_unverified_header", "-"),
}


def _unary_rows(results: dict[str, Any]) -> list[str]:
    unary, workers = results["unary"], results["workers"]
    inflight = unary["gateway"]["inflight"]
    lines = [
        f"{'VerifyEligibility, ' + str(inflight) + ' in flight':<42} {'rps':>8} {'p50 ms':>7}"
        f" {'p99 ms':>7} {'errors':>6} {'srv us/call':>11} {'srv cores':>9} {'other':>5}",
    ]
    rows = (
        ("echo_sync_plain", f"echo, sync grpc.server ({workers} w), plaintext"),
        ("echo_sync_mtls", f"echo, sync grpc.server ({workers} w), mTLS"),
        ("echo_aio_plain", "echo, grpc.aio, plaintext"),
        ("echo_aio_mtls", "echo, grpc.aio, mTLS"),
        ("gateway", f"gateway, jisr serve ({workers} w), full"),
    )
    for key, label in rows:
        row = unary[key]
        lines.append(
            f"  {label:<40} {row['rps']:>8,.0f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f}"
            f" {row['errors']:>6}"
            f" {_number(row['server_cpu_us_per_call']):>11}"
            f" {_number(row['server_cpu_cores'], 2):>9}"
            f" {row['other_cpu_cores']:>5.2f}"
        )
    return lines


def _step_rows(steps: dict[str, Any]) -> list[str]:
    alone, sequence = steps["alone"], steps["in_sequence"]
    lines = [
        f"{'in-process, one thread, no gRPC, µs/call':<48} {'alone':>7} {'in seq.':>8}",
    ]
    for key, label in STEP_LABELS.items():
        in_seq = sequence.get(key) if key in IN_SEQUENCE else None
        lines.append(f"  {label:<46} {alone[key]:>7.1f} {_number(in_seq, 1):>8}")
    lines += [
        f"  {'sum of the steps':<46} {sum(alone[k] for k in IN_SEQUENCE):>7.1f}"
        f" {steps['in_sequence_sum']:>8.1f}",
        f"  {'the whole handler (gateway.service)':<46} {'':>7} {steps['handler_total']:>8.1f}",
        "",
        f"{'reference, same process':<48} {'µs':>7} {'DESIGN':>8}",
    ]
    for key, (label, design) in REFERENCE_LABELS.items():
        lines.append(f"  {label:<46} {steps['references'][key]:>7.1f} {design:>8}")
    return lines


def table(results: dict[str, Any]) -> str:
    m, unary, summary = results["machine"], results["unary"], results["summary"]
    gateway = unary["gateway"]
    inflight = gateway["inflight"]
    lines = [
        "",
        f"Jisr bench, {results['started_at']}: {m['nproc']} cores ({m['cpu_model']}),"
        f" Python {m['python']}, grpcio {m['grpcio']}",
        (
            "servers pinned to one CPU, load generator to another (--pin)"
            if results["settings"].get("pin")
            else "load generator and servers share the CPUs (not pinned)"
        ),
        "every server gets the same request bytes and one pre-signed x-jisr-signature per call",
        "",
        *_unary_rows(results),
    ]
    batch = results["batch"]
    lines += [
        "",
        f"gateway / echo sync mTLS         {summary['gateway_over_echo_sync_mtls']:.2f}"
        f"   (target >= 0.50 of the echo of the same API: {_met(summary['target_ratio_met'])})",
        f"gateway / echo sync plaintext    {summary['gateway_over_echo_sync_plain']:.2f}",
        f"echo sync mTLS / plaintext       {summary['echo_sync_mtls_over_plain']:.2f}",
        f"echo aio / sync (mTLS; plain)    {summary['echo_aio_over_sync_mtls']:.2f};"
        f" {summary['echo_aio_over_sync_plain']:.2f}",
        f"gateway p99 at {inflight} in flight     {gateway['p99_ms']:.1f} ms"
        f"   (target <= 20 ms: {_met(summary['target_p99_met'])})",
        f"batch, {batch['batches_answered']} x {batch['batch_size']:,} subjects, signed"
        f"  {batch['subjects_per_s']:,.0f} households/s, {batch['subject_errors']} errors,"
        f" {batch['receipt_failures']} bad receipts"
        f" -> 1,000,000 in {summary['batch_million_households_s']:.1f} s"
        f" (target <= 30 s: {_met(summary['target_million_in_30s_met'])})",
        "client probe vs sync echo mTLS   "
        + ", ".join(f"{k} {v['rps']:,.0f} rps" for k, v in results["client_probe"].items())
        + f"; measured with {results['client']}",
        "",
        *_step_rows(results["steps_us"]),
        "",
        "srv us/call: server CPU per call (all its threads); other: cores used meanwhile by"
        " processes outside the bench; alone: the step in a tight loop of its own; in seq.:"
        " timed inside the handler's sequence of steps",
    ]
    return "\n".join(lines)
