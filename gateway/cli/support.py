"""What `jisr demo-data` and `jisr call` do, kept apart from argument parsing."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import secrets
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from adapters.demo_data import generate
from adapters.registry_db import REGISTRY_FILE, Registry
from gateway.base.wire import MAX_BATCH
from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.sdk.client import Answer, Credentials, JisrClient, JisrError, subject


def demo_data(data_dir: Path, households: int, seed: int, *, force: bool) -> int:
    """Generate the synthetic registry, with progress on stderr and a summary at the end."""
    started = time.monotonic()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total:
            print(file=sys.stderr)
        elif now - last[0] >= 1.0 or 100 * done // total >= 99:
            last[0] = now
            rate = done / max(now - started, 1e-9)
            tail = "; sorting rows and building indexes..." if 100 * done // total >= 99 else ""
            print(
                f"\rjisr demo-data: {done:,}/{total:,} households ({100 * done // total}%),"
                f" {rate:,.0f}/s{tail}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    if households < 1:
        print("jisr demo-data: --households must be at least 1", file=sys.stderr)
        return 2
    try:
        summary = generate(data_dir, households, seed, force=force, progress=progress)
    except FileExistsError as exc:
        print(f"jisr demo-data: {exc}", file=sys.stderr)
        return 1
    print(
        f"jisr demo-data: SYNTHETIC registry {summary.path}: {summary.households:,} households,"
        f" {summary.persons:,} persons ({summary.unregistered_persons:,} outside the RSU,"
        f" {summary.deceased:,} deceased), {summary.covered:,} with AMO coverage,"
        f" {summary.enrolled:,} ASD enrolments; seed {seed}, {summary.seconds:.1f} s"
    )
    return 0


def _json(message: Message, indent: int | None = 2) -> str:
    return json_format.MessageToJson(
        message,
        indent=indent,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        ensure_ascii=False,
    )


def _show(message: Message) -> None:
    print(_json(message))


# A tree of field paths: each name maps to its kept sub-fields, or None to keep it whole.
Paths = dict[str, "Paths | None"]

# The members of a RegistryExchange response or batch result that hold a disclosed message;
# the others (`withheld`, a result's `error`) are the gateway's own and always shown.
DISCLOSED = frozenset({"person", "household", "decision"})


def _paths(fields: Iterable[str]) -> Paths:
    """The receipt's `fields` claim (dotted paths) as a tree."""
    tree: Paths = {}
    for path in fields:
        node: Paths | None = tree
        *parents, leaf = path.split(".")
        for name in parents:
            node = None if node is None else node.setdefault(name, {})
        if node is not None:  # else a parent is disclosed whole, which covers this path
            node[leaf] = None
    return tree


def _kept(value: Any, tree: Paths | None) -> Any:
    """`value` (JSON data) with only the fields of `tree`; lists are kept element by
    element, as the gateway minimises repeated messages."""
    if tree is None:
        return value
    if isinstance(value, list):
        return [_kept(item, tree) for item in value]
    if isinstance(value, dict):
        return {key: _kept(item, tree[key]) for key, item in value.items() if key in tree}
    return value


def _disclosed(message: Message, fields: Iterable[str]) -> dict[str, Any]:
    """The message as JSON data (proto field names), showing only the fields the receipt
    says were disclosed. Printing every field with its default would show a withheld one
    as if it were data (`""`, `VITAL_STATUS_UNSPECIFIED`), not as absent."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    tree = _paths(fields)
    return {key: _kept(value, tree) if key in DISCLOSED else value for key, value in data.items()}


def _print_json(data: dict[str, Any], indent: int | None = 2) -> None:
    print(json.dumps(data, indent=indent, ensure_ascii=False))


def _receipt(
    claims: dict[str, Any],
    token: str,
    show_token: bool,
    what: str = "",
    withheld: Sequence[str] = (),
) -> None:
    """A verified receipt, summarised on stderr (never the subject); its JWS on stdout when
    asked, to keep or check offline with `jisr receipt verify`."""
    fields = ", ".join(claims.get("fields", [])) or "-"
    held = f"; withheld {', '.join(withheld)}" if withheld else ""
    print(
        f"receipt verified{what}: decision {claims['decision']}, basis {claims['basis']!r},"
        f" fields {fields}{held}",
        file=sys.stderr,
    )
    if show_token:
        print(token)


def _answer(answer: Answer[Any], show_receipt: bool) -> None:
    """The disclosed response as JSON, `withheld` as its snake_case paths; then the
    verified receipt."""
    data = _disclosed(answer.message, answer.receipt.get("fields", []))
    data["withheld"] = list(answer.withheld)
    _print_json(data)
    _receipt(answer.receipt, answer.receipt_token, show_receipt)


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


class BatchInputError(Exception):
    """A batch input that cannot be sent: the message names the file (and line)."""


@dataclass(frozen=True)
class BatchInput:
    """The subjects of `jisr call batch FILE`, each with its line in FILE (1-based, blank
    lines counted), so that results and errors can name the line a user can open."""

    name: str
    lines: list[int]
    subjects: list[str]

    def batches(self, size: int) -> Iterator[list[str]]:
        for start in range(0, len(self.subjects), size):
            yield self.subjects[start : start + size]


def _batch_input(path: Path) -> BatchInput:
    """Every non-blank line of FILE ('-': stdin), read whole before anything is sent: a bad
    line or an empty input is refused before the gateway sees any subject, and no input
    error can arise inside gRPC's request-sending thread mid-stream."""
    name = "stdin" if str(path) == "-" else str(path)
    try:
        data = sys.stdin.buffer.read() if name == "stdin" else path.read_bytes()
    except OSError as exc:
        raise BatchInputError(f"{name}: {exc.strerror or exc}") from None
    lines: list[int] = []
    subjects: list[str] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise BatchInputError(f"{name}:{number}: not UTF-8 text") from None
        if text:
            lines.append(number)
            subjects.append(text)
    if not subjects:
        raise BatchInputError(f"{name}: no subject (one household id or IDCS per line)")
    return BatchInput(name, lines, subjects)


def _status_text(status: status_pb2.Status) -> str:
    """`CODE REASON: message` of one subject's error, as `jisr call` prints a unary one;
    the message's `subjects[i]` (an index in a batch the CLI made up) is left out."""
    code = next((c.name for c in grpc.StatusCode if c.value[0] == status.code), str(status.code))
    reason = ""
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reason = f" {info.reason}"
    return f"{code}{reason}: {_BATCH_INDEX.sub('', status.message)}"


_BATCH_INDEX = re.compile(r"^subjects\[\d+\]\.?")


def _batch(client: JisrClient, args: argparse.Namespace, given: BatchInput) -> None:
    """Each result as one JSON line with its input line; each batch's receipt, then the
    stream's closing receipt; a failed subject also named on stderr by FILE:LINE."""
    stream = client.verify_batch_stream(
        args.purpose, args.programme, given.batches(args.batch_size), _date(args.as_of)
    )
    done = 0
    for answer in stream:
        results = answer.message.results
        lines = given.lines[done : done + len(results)]
        for line, result in zip(lines, results, strict=True):
            _batch_result(given.name, line, result, answer.receipt.get("fields", []))
        span = f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]}-{lines[-1]}"
        where = f": batch {answer.message.batch_index} ({span})"
        _receipt(answer.receipt, answer.receipt_token, args.receipt, where, answer.withheld)
        done += len(results)
    if stream.closing is not None:
        closing = stream.closing
        count = closing.claims.get("batches")
        batches = f": stream of {count} batch{'' if count == 1 else 'es'}"
        _receipt(closing.claims, closing.token, args.receipt, batches)


def _batch_result(
    name: str, line: int, result: pb.EligibilityResult, fields: Iterable[str]
) -> None:
    _print_json({"line": line, **_disclosed(result, fields)}, indent=None)
    if result.HasField("error"):
        print(f"jisr call batch: {name}:{line}: {_status_text(result.error)}", file=sys.stderr)


def _unary(client: JisrClient, args: argparse.Namespace) -> Answer[Any]:
    if args.method == "person":
        return client.person_status(args.purpose, args.idcs)
    if args.method == "household":
        return client.household_status(args.purpose, args.subject)
    return client.verify(args.purpose, args.subject, args.programme, _date(args.as_of))


def _checked_batch_args(args: argparse.Namespace) -> BatchInput:
    if not 1 <= args.batch_size <= MAX_BATCH:
        raise BatchInputError(f"--batch-size: {args.batch_size} is not between 1 and {MAX_BATCH}")
    return _batch_input(args.file)


def call(args: argparse.Namespace) -> int:
    """One call (or one batch stream), printed as JSON; errors as code and reason."""
    try:
        _date(getattr(args, "as_of", None))
    except ValueError:
        print(f"jisr call: --as-of: {args.as_of!r} is not YYYY-MM-DD", file=sys.stderr)
        return 2
    given: BatchInput | None = None
    if args.method == "batch":
        try:
            given = _checked_batch_args(args)
        except BatchInputError as exc:
            print(f"jisr call batch: {exc}", file=sys.stderr)
            return 2
    try:
        credentials = Credentials.from_pki(args.pki_dir, args.institution)
    except (OSError, ValueError) as exc:
        print(f"jisr call: credentials of {args.institution}: {exc}", file=sys.stderr)
        return 2
    with JisrClient(
        args.target,
        credentials,
        timeout=args.timeout,
        insecure_plaintext=args.insecure_plaintext,
    ) as client:
        try:
            if given is not None:
                _batch(client, args, given)
            else:
                _answer(_unary(client, args), args.receipt)
        except JisrError as exc:
            print(f"jisr call: {exc}", file=sys.stderr)
            return 1
    return 0


# Example subjects for newcomers, picked from the synthetic registry by what they show.
SAMPLES: dict[str, tuple[str, str]] = {
    "amot-eligible": (
        "household under the AMOT threshold with no other AMO coverage",
        "SELECT h.household_id FROM household h WHERE h.score < 9.3264284 AND NOT EXISTS"
        " (SELECT 1 FROM membership m JOIN coverage c USING (idcs)"
        "  WHERE m.household_id = h.household_id AND c.scheme <> 'AMO_TADAMON')"
        " ORDER BY h.household_id LIMIT 1",
    ),
    "above-thresholds": (
        "household above both thresholds",
        "SELECT household_id FROM household WHERE score > 10 ORDER BY household_id LIMIT 1",
    ),
    "declarant": (
        "IDCS of a household's declarant",
        "SELECT idcs FROM membership WHERE relationship = 1 ORDER BY idcs LIMIT 1",
    ),
    "deceased": (
        "IDCS of a deceased person",
        "SELECT idcs FROM person WHERE vital_status = 2 ORDER BY idcs LIMIT 1",
    ),
    "unregistered": (
        "IDCS of a living person in no RSU household",
        "SELECT idcs FROM person WHERE vital_status = 1 AND idcs NOT IN"
        " (SELECT idcs FROM membership) ORDER BY idcs LIMIT 1",
    ),
}


def samples(data_dir: Path, kind: str | None) -> int:
    """Print example subjects (all kinds, or the bare value of one kind for scripts)."""
    registry = Registry(data_dir / REGISTRY_FILE)
    try:
        conn = registry.connection()
        for name, (label, sql) in SAMPLES.items():
            if kind is not None and name != kind:
                continue
            row = conn.execute(sql).fetchone()
            value = row[0] if row else "(none in this registry)"
            print(value if kind else f"{name:18} {value}  {label}")
    finally:
        registry.close()
    return 0


CONSENT_PURPOSE = "CONSENT_MANAGEMENT"


def consent(args: argparse.Namespace) -> int:
    """`jisr consent grant|revoke|list|show`, as a consent collector's counter uses it."""
    credentials = Credentials.from_pki(args.pki_dir, args.institution)
    with JisrClient(args.target, credentials, insecure_plaintext=args.insecure_plaintext) as client:
        try:
            answer = _consent_call(client, args)
        except JisrError as exc:
            print(f"jisr consent: {exc}", file=sys.stderr)
            return 1
    _show(answer.message)
    return 0


def _consent_call(client: JisrClient, args: argparse.Namespace) -> Answer[Any]:
    now = int(time.time())
    if args.action == "grant":
        claims: dict[str, Any] = {
            "act": "grant",
            "jti": secrets.token_urlsafe(12),
            "sub_kind": "household" if args.subject.startswith("H") else "person",
            "sub": args.subject,
            "grantor": args.grantor,
            "grantee": args.grantee,
            "purposes": args.purposes.split(","),
            "scopes": args.scopes.split(","),
            "nbf": now,
            "exp": now + args.days * 86_400,
            "method": args.method,
            "iat": now,
        }
        if args.max_uses:
            claims["use_cap"] = {"max_uses": args.max_uses, "period_s": args.period_days * 86_400}
        request = cpb.GrantConsentRequest(
            purpose=CONSENT_PURPOSE, artefact=client.sign_artefact(claims)
        )
        return client.consent("GrantConsent", request, cpb.GrantConsentResponse, CONSENT_PURPOSE)
    if args.action == "revoke":
        claims = {
            "act": "revoke",
            "jti": secrets.token_urlsafe(12),
            "cid": args.consent_id,
            "grantor": args.grantor,
            "method": args.method,
            "iat": now,
        }
        revoke = cpb.RevokeConsentRequest(
            purpose=CONSENT_PURPOSE, artefact=client.sign_artefact(claims)
        )
        return client.consent("RevokeConsent", revoke, cpb.RevokeConsentResponse, CONSENT_PURPOSE)
    if args.action == "list":
        listing = cpb.ListConsentsRequest(purpose=CONSENT_PURPOSE, subject=subject(args.subject))
        return client.consent("ListConsents", listing, cpb.ListConsentsResponse, CONSENT_PURPOSE)
    show = cpb.GetConsentRequest(
        purpose=CONSENT_PURPOSE, consent_id=args.consent_id, include_history=args.history
    )
    return client.consent("GetConsent", show, cpb.GetConsentResponse, CONSENT_PURPOSE)
