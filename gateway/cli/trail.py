"""`jisr audit query` and `jisr audit report`: the trail read over the AuditTrail service,
with the caller's credentials, as a DPO, the regulator or a citizen portal would.

Unlike `verify`, `export` and `prune` (which open the store itself, on the gateway's
machine), these ask a running gateway: the policy decides what the caller may see (a DPO
its own institution's requests, the regulator all), each query is itself recorded, and
every answer's receipt is verified before anything is printed. Subjects are given as
identifiers and hashed by the gateway; records come back with subject hashes only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp

from gateway.pb.jisr.v1 import audit_pb2, consent_pb2, registry_pb2
from gateway.sdk import filters
from gateway.sdk.client import Credentials, JisrClient, JisrError
from gateway.sdk.trail import AUDIT_PURPOSE, REPORT_PURPOSE, Trail, proof_document

DEFAULT_TARGET = "127.0.0.1:50051"
DEFAULT_LIMIT = 100
EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
_SERVICES = (registry_pb2, consent_pb2, audit_pb2)


class UsageError(Exception):
    """A flag or argument the command cannot use; the message names it."""


def add_parsers(actions: Any) -> None:
    """`query` and `report` under `jisr audit`."""
    query = actions.add_parser(
        "query",
        help="list access records from a running gateway (a DPO's search)",
        description="Records matching every filter given, newest first, from a running\n"
        "gateway, with the caller's credentials: a DPO sees its own institution's\n"
        "requests, the regulator all. Each query is itself recorded.",
        epilog=_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _remote_flags(query, institution="DEMO", purpose=AUDIT_PURPOSE)
    query.add_argument("--subject", help="an IDCS or household id (hashed by the gateway)")
    query.add_argument("--requester", help="the institution that asked, e.g. CNSS")
    query.add_argument("--access-purpose", help="the purpose it asked for, e.g. AMO_ENROLMENT")
    query.add_argument("--method", help="GetPersonStatus, or a full /package.Service/Method")
    query.add_argument("--decision", choices=("permit", "deny"), help="the outcome")
    query.add_argument("--reason", help="a refusal's reason (docs/errors.md), e.g. REPLAYED")
    query.add_argument("--since", help="from this day or time (YYYY-MM-DD[THH:MM[:SS]], UTC)")
    query.add_argument("--until", help="before this day or time (excluded)")
    query.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help="records at most (default: %(default)s)",
    )
    query.set_defaults(remote=_query)
    report = actions.add_parser(
        "report",
        help="a citizen's access report from a running gateway",
        description="Every access to a person's or household's data (a person's report\n"
        "covers their household), as a citizen portal or the regulator asks for it.",
        epilog=_STATUS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("subject", help="an IDCS or household id")
    _remote_flags(report, institution="CNDP", purpose=REPORT_PURPOSE)
    report.add_argument("--since", help="from this day or time (YYYY-MM-DD[THH:MM[:SS]], UTC)")
    report.add_argument(
        "--proofs",
        type=Path,
        metavar="FILE",
        help="also write each entry's proof of inclusion to FILE (`jisr audit check-proof`)",
    )
    report.set_defaults(remote=_report)


_STATUS = """exit status:
  0  answered (no record found included)
  1  the gateway refused (reason printed, e.g. NOT_AN_AUDITOR)
  2  nothing asked: a bad flag, subject or credentials"""


def _remote_flags(parser: argparse.ArgumentParser, *, institution: str, purpose: str) -> None:
    parser.add_argument(
        "--target", default=DEFAULT_TARGET, help="the gateway's host:port (default: %(default)s)"
    )
    parser.add_argument(
        "--institution",
        default=institution,
        help="whose credentials to use (default: %(default)s)",
    )
    parser.add_argument(
        "--purpose", default=purpose, help="purpose of this read (default: %(default)s)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per call")
    parser.add_argument("--insecure-plaintext", action="store_true", help="UNSAFE: no TLS")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace, pki_dir: Path) -> int:
    """Ask the gateway; one line and exit 2 if nothing could be asked, 1 if refused."""
    name = f"jisr audit {args.action}"
    try:
        credentials = Credentials.from_pki(pki_dir, args.institution)
    except (OSError, ValueError) as exc:
        print(f"{name}: credentials of {args.institution} in {pki_dir}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with JisrClient(
            args.target,
            credentials,
            timeout=args.timeout,
            insecure_plaintext=args.insecure_plaintext,
        ) as client:
            count = args.remote(Trail(client, args.purpose), args)
    except UsageError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except JisrError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"{name}: {count} record{'s' if count != 1 else ''}", file=sys.stderr)
    return EXIT_OK


_FLAGS = filters.Filters(
    subject="--subject",
    requester="--requester",
    purpose="--access-purpose",
    method="--method",
    decision="--decision",
    reason="--reason",
    since="--since",
    until="--until",
)


def _query(trail: Trail, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError(f"--limit: {args.limit} is not a positive number")
    typed = filters.Filters(
        subject=args.subject or "",
        requester=args.requester or "",
        purpose=args.access_purpose or "",
        method=args.method or "",
        decision=args.decision or "",
        reason=args.reason or "",
        since=args.since or "",
        until=args.until or "",
    )
    try:
        query = filters.access_query(typed, _FLAGS)
    except filters.FilterError as exc:
        raise UsageError(str(exc)) from None
    return _print(trail.query(query, limit=args.limit), args.json, _record_line)


def _report(trail: Trail, args: argparse.Namespace) -> int:
    who = _subject("SUBJECT", args.subject)
    since = _time("--since", args.since) if args.since else None
    entries = trail.report(who, since, proofs=args.proofs is not None).message.entries
    if args.proofs is not None:
        proofs = [proof_document(e.proof) for e in entries if e.HasField("proof")]
        try:
            args.proofs.write_text(json.dumps({"proofs": proofs}, indent=1) + "\n")
        except OSError as exc:
            raise UsageError(f"--proofs: {args.proofs}: {exc.strerror}") from None
        print(
            f"jisr audit report: {len(proofs)} of {len(entries)} entries proved in"
            f" {args.proofs}{_unproved(len(entries) - len(proofs))}",
            file=sys.stderr,
        )
    return _print(entries, args.json, _entry_line)


def _unproved(count: int) -> str:
    """Why some entries have no proof (docs/audit-format.md §9, "Which entries")."""
    if not count:
        return ""
    return (
        f"; {count} without: too recent for a checkpoint yet, sealed before checkpoints"
        " signed trees, or about other persons too (a batch), whose proof would expose them"
    )


def _print(items: Iterable[Any], as_json: bool, line: Any) -> int:
    count = 0
    for item in items:
        if as_json:
            print(json.dumps(MessageToDict(item, preserving_proto_field_name=True)))
        else:
            print(line(item))
        count += 1
    return count


def _record_line(r: audit_pb2.AccessRecord) -> str:
    method = r.method.rsplit("/", 1)[-1]
    outcome = r.decision if not r.reason else f"{r.decision} {r.reason}"
    return (
        f"{_when(r.time)}  {r.requester:<6} {r.purpose or '-':<22} {method:<24}"
        f" {outcome:<32} {r.node}:{r.seq}  {len(r.subject_hashes)} subject(s)"
    )


def _entry_line(e: audit_pb2.AccessEntry) -> str:
    fields = ", ".join(e.fields) or "nothing disclosed"
    return f"{_when(e.time)}  {e.institution:<6} {e.purpose:<22} {e.decision:<6} {fields}"


def _when(stamp: Timestamp) -> str:
    return stamp.ToDatetime(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _subject(flag: str, value: str) -> str:
    try:
        return filters.subject(flag, value)
    except filters.FilterError as exc:
        raise UsageError(str(exc)) from None


def _time(flag: str, value: str) -> dt.datetime:
    try:
        return filters.moment(flag, value)
    except filters.FilterError as exc:
        raise UsageError(str(exc)) from None
