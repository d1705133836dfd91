"""What a consent check costs an exchange, in-process, one thread, no gRPC.

The grant is the shipped policy's MEN GetHouseholdStatus for SCHOOL_SUPPORT (basis
`consent`). A consent store (SQLite as the gateway opens it, and PostgreSQL when one
answers) holds `count` consents, one per registry household, each with a real artefact
signed by DEMO; the rows are loaded in one transaction behind the store's back (then
ANALYZE on PostgreSQL, as autovacuum would), the store itself makes the schema and does
every read. Timed: `ConsentGate.check` for three kinds of subject, and the whole
GetHouseholdStatus handler `jisr serve` registers, MEN calling with a fresh signed token
per call, audit off and on (docs/performance.md, "Consent check per exchange").
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from adapters.base import FetchContext
from bench.common import (
    CONSENT_INSTITUTION,
    CONSENT_METHOD,
    CONSENT_PURPOSE,
    INSTITUTION,
    postgres_cpu_s,
)
from bench.profile import Pipeline, caller, cpu_us, timed
from consent import artefact
from consent.model import ConsentRecord, Status, SubjectKind, UseCap
from consent.store import ConsentStore, open_store
from consent.store_common import COLUMN_LIST, COLUMNS, to_row
from gateway.engine.consent_gate import ConsentGate, Permit
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline.query import Key
from gateway.sdk.client import Credentials
from gateway.security.policy import Grant
from tests.support.registry_rows import connect

SCOPES = ("composition", "situation")
OTHER = ("ANSS", "ASD_ELIGIBILITY")  # the grantee and purpose of every fourth consent
CAP = UseCap(max_uses=100_000_000, period_s=30 * 86_400)
DAY_S = 86_400


@dataclass(frozen=True)
class Population:
    """The consents, and which subjects have exactly one matching MEN consent."""

    records: list[ConsentRecord]
    plain: list[str]  # households: one uncapped MEN consent
    capped: list[str]  # households: one MEN consent with a use cap
    people: list[str]  # a member (IDCS) of each `plain` household


def _households(data_dir: Path, count: int) -> list[tuple[str, str]]:
    """(household id, its first member's IDCS) of the registry's first `count` households."""
    first: dict[str, str] = {}
    with connect(data_dir) as db:
        query = "SELECT household_id, idcs FROM membership ORDER BY household_id, position"
        for household, idcs in db.execute(query):
            first.setdefault(household, idcs)
            if len(first) == count:
                break
    return list(first.items())


def population(data_dir: Path, pki_dir: Path, count: int) -> Population:
    """`count` consents over as many registry households (fewer if the registry is smaller)."""
    collector = Credentials.from_pki(pki_dir, INSTITUTION).signer
    now = int(time.time())
    records: list[ConsentRecord] = []
    plain: list[str] = []
    capped: list[str] = []
    people: list[str] = []
    for i, (household, declarant) in enumerate(_households(data_dir, count)):
        other = i % 4 == 3
        grantee, purpose = OTHER if other else (CONSENT_INSTITUTION, CONSENT_PURPOSE)
        cap = CAP if i % 4 == 0 else None
        claims: dict[str, Any] = {
            "act": "grant",
            "jti": secrets.token_urlsafe(12),
            "sub_kind": "household",
            "sub": household,
            "grantor": declarant,
            "grantee": grantee,
            "purposes": [purpose],
            "scopes": list(SCOPES),
            "nbf": now - DAY_S,
            "exp": now + 365 * DAY_S,
            "method": "counter",
            "iat": now,
        }
        if cap is not None:
            claims["use_cap"] = {"max_uses": cap.max_uses, "period_s": cap.period_s}
        token = artefact.sign(claims, collector.key, collector.kid, collector.alg)
        records.append(
            ConsentRecord(
                consent_id=f"C{secrets.token_hex(12)}",
                revision=1,
                subject_kind=SubjectKind.HOUSEHOLD,
                subject=household,
                grantor=declarant,
                grantee=grantee,
                purposes=(purpose,),
                scopes=SCOPES,
                valid_from=now - DAY_S,
                valid_until=now + 365 * DAY_S,
                use_cap=cap,
                status=Status.ACTIVE,
                collected_by=INSTITUTION,
                collection_method="counter",
                artefact=token,
                recorded_at=now,
                prev_hash="",
            ).sealed()
        )
        if other:
            continue
        if cap is None:
            plain.append(household)
            people.append(declarant)
        else:
            capped.append(household)
    return Population(records, plain, capped, people)


def _load_sqlite(path: Path, records: Sequence[ConsentRecord]) -> None:
    marks = ", ".join("?" for _ in COLUMNS)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            f"INSERT INTO consent_revision ({COLUMN_LIST}) VALUES ({marks})",
            [to_row(r) for r in records],
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _load_postgres(url: str, records: Sequence[ConsentRecord]) -> None:
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY consent_revision ({COLUMN_LIST}) FROM STDIN") as copy,
    ):
        for r in records:
            copy.write_row(to_row(r))
    with psycopg.connect(url, autocommit=True) as conn:
        # Planner statistics, as autovacuum would gather them on a table this size.
        conn.execute("ANALYZE consent_revision")


def open_filled(url: str | None, state_dir: Path, records: Sequence[ConsentRecord]) -> ConsentStore:
    """A consent store (migrated by itself) holding `records`."""
    store = open_store(url, state_dir)
    try:
        if url is None:
            _load_sqlite(state_dir / "consent.sqlite", records)
        else:
            _load_postgres(url, records)
    except BaseException:
        store.close()
        raise
    return store


def _check(gate: ConsentGate, grant: Grant, keys: Sequence[Key]) -> Callable[[int], object]:
    ctx = FetchContext(CONSENT_PURPOSE, 10.0, CONSENT_INSTITUTION)
    first = gate.check(grant, keys[0], ctx)
    if not isinstance(first, Permit) or not first.paths:
        raise RuntimeError(f"the bench's consent did not permit {keys[0]}")
    n = len(keys)
    return lambda i: gate.check(grant, keys[i % n], ctx)


def checks(
    gate: ConsentGate,
    grant: Grant,
    pop: Population,
    calls: int,
    seconds: float,
    *,
    postgres: bool,
) -> dict[str, float]:
    """µs per ConsentGate.check of each kind of subject."""
    kinds: dict[str, list[Key]] = {
        "household": [("household_id", h) for h in pop.plain],
        "household_capped": [("household_id", h) for h in pop.capped],
        "person": [("idcs", p) for p in pop.people],
    }
    out = {
        kind: round(timed(_check(gate, grant, keys), calls, seconds=seconds), 1)
        for kind, keys in kinds.items()
    }
    # CPU of this process (every thread) per household check; the rest of its wall time
    # is waiting (for PostgreSQL: the round trip and the server's work, whose CPU the
    # server's processes report).
    server0 = postgres_cpu_s()
    out["household_cpu"] = round(cpu_us(_check(gate, grant, kinds["household"]), calls), 1)
    if postgres:
        out["household_server_cpu"] = round((postgres_cpu_s() - server0) / (calls + 1) * 1e6, 1)
    return out


def handler(
    p: Pipeline,
    gate: ConsentGate,
    households: Sequence[str],
    calls: int,
    seconds: float,
    *,
    audit: bool,
) -> float:
    """µs per call of the whole GetHouseholdStatus handler for MEN (consent-based)."""
    requests = [
        pb.GetHouseholdStatusRequest(
            purpose=CONSENT_PURPOSE, subject=pb.Subject(household_id=h)
        ).SerializeToString()
        for h in households
    ]
    signer = Credentials.from_pki(p.pki_dir, CONSENT_INSTITUTION).signer
    n = len(requests)
    tokens = [
        signer.request_token(CONSENT_METHOD, CONSENT_PURPOSE, requests[i % n], lifetime=300)
        for i in range(calls + 1)
    ]
    handle = p.handler(audit=audit, consent=gate, method=CONSENT_METHOD)
    call = caller(handle, CONSENT_INSTITUTION, requests, tokens)
    if not pb.GetHouseholdStatusResponse.FromString(call(calls)).household.members:
        raise RuntimeError("the consent-based GetHouseholdStatus disclosed nothing")
    return round(timed(call, calls, seconds=seconds), 1)


def measure(
    p: Pipeline,
    work: Path,
    data_dir: Path,
    *,
    count: int,
    calls: int,
    seconds: float,
    postgres_url: str | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """The checks on SQLite (and PostgreSQL), and the handler around them on SQLite."""
    grant = p.security.policy.authorize(
        CONSENT_INSTITUTION, CONSENT_METHOD.rsplit("/", 1)[1], CONSENT_PURPOSE
    )
    if grant is None or not grant.consent_based:
        raise RuntimeError("the shipped policy has no consent-based MEN GetHouseholdStatus")
    began = time.perf_counter()
    pop = population(data_dir, p.pki_dir, count)
    out: dict[str, Any] = {
        "consents": len(pop.records),
        "calls": calls,
        "built_s": round(time.perf_counter() - began, 1),
    }
    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    if postgres_url is not None:
        backends.append(("postgresql", postgres_url))
    for backend, url in backends:
        state = work / f"consent-{backend}"
        state.mkdir(parents=True, exist_ok=True)
        store = open_filled(url, state, pop.records)
        try:
            gate = ConsentGate(store, p.registries)
            row: dict[str, Any] = {
                "check_us": checks(gate, grant, pop, calls, seconds, postgres=url is not None)
            }
            row["handler_us"] = handler(p, gate, pop.plain, calls, seconds, audit=False)
            if backend == "sqlite":
                row["handler_audited_us"] = handler(p, gate, pop.plain, calls, seconds, audit=True)
        finally:
            store.close()
        check = row["check_us"]["household"]
        row["share_of_handler"] = round(check / row["handler_us"], 3)
        if "handler_audited_us" in row:
            row["share_of_handler_audited"] = round(check / row["handler_audited_us"], 3)
        out[backend] = row
        say(
            f"    {backend}: ConsentGate.check {check:.0f} µs, whole MEN handler"
            f" {row['handler_us']:.0f} µs audit off: {row['share_of_handler']:.0%}"
        )
    return out
