"""What `jisr demo-data` and `jisr call` do, kept apart from argument parsing."""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from adapters.demo_data import generate
from adapters.registry_db import REGISTRY_FILE, Registry
from gateway.client import Answer, Credentials, JisrClient, JisrError, subject
from gateway.pb.jisr.v1 import consent_pb2 as cpb


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


def _answer(answer: Answer[Any], show_receipt: bool) -> None:
    """The response as JSON; the verified receipt on stderr (or the raw JWS if asked)."""
    _show(answer.message)
    if show_receipt:
        print(answer.receipt_token)
        return
    fields = ", ".join(answer.receipt.get("fields", [])) or "-"
    print(
        f"receipt verified: decision {answer.receipt['decision']}, basis"
        f" {answer.receipt['basis']!r}, fields {fields}",
        file=sys.stderr,
    )


def _date(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _subjects(path: Path) -> Iterator[str]:
    handle = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    with handle:
        for line in handle:
            if line.strip():
                yield line.strip()


def _batches(path: Path, size: int) -> Iterator[list[str]]:
    subjects = _subjects(path)
    while batch := list(itertools.islice(subjects, size)):
        yield batch


def call(args: argparse.Namespace) -> int:
    """One call (or one batch stream), printed as JSON; errors as code and reason."""
    try:
        as_of = _date(getattr(args, "as_of", None))
    except ValueError:
        print(f"jisr call: --as-of: {args.as_of!r} is not YYYY-MM-DD", file=sys.stderr)
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
            if args.method == "person":
                _answer(client.person_status(args.purpose, args.idcs), args.receipt)
            elif args.method == "household":
                _answer(client.household_status(args.purpose, args.subject), args.receipt)
            elif args.method == "eligibility":
                answer = client.verify(args.purpose, args.subject, args.programme, as_of)
                _answer(answer, args.receipt)
            else:
                for response in client.verify_batches(
                    args.purpose, args.programme, _batches(args.file, args.batch_size), as_of
                ):
                    for result in response.results:
                        print(_json(result, indent=None))
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
