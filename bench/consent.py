"""What a consent check costs an exchange, in-process, one thread, no gRPC: the shipped
policy's consent-based grant (MEN, GetHouseholdStatus, SCHOOL_SUPPORT) over a consent store
(SQLite, and PostgreSQL when one answers) holding `count` consents with real artefacts,
loaded behind the store's back (docs/performance.md, "Consent check per exchange")."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adapters.base import FetchContext
from bench.common import INSTITUTION, clocked, postgres_cpu_s
from bench.identity import tokens
from bench.procs import say
from bench.profile import Pipeline, caller, cpu_us, timed
from consent import artefact
from consent.model import ConsentRecord, Status, SubjectKind, UseCap
from gateway.base.wire import REGISTRY_EXCHANGE, method_path
from gateway.engine.consent_gate import ConsentGate, Permit
from gateway.pb.jisr.v1 import registry_pb2 as pb
from gateway.pipeline.query import Key
from gateway.sdk.client import Credentials
from gateway.security.policy import Grant
from tests.support.databases import ConsentDatabase
from tests.support.registry_rows import first_members

if TYPE_CHECKING:
    from bench.run import Settings

CONSENT_INSTITUTION, CONSENT_PURPOSE = "MEN", "SCHOOL_SUPPORT"  # the grant measured
CONSENT_METHOD = method_path(REGISTRY_EXCHANGE, "GetHouseholdStatus")
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


def population(data_dir: Path, pki_dir: Path, count: int) -> Population:
    """`count` consents over as many registry households (fewer if the registry is smaller)."""
    collector = Credentials.from_pki(pki_dir, INSTITUTION).signer
    now = int(time.time())
    records: list[ConsentRecord] = []
    plain, capped, people = list[str](), list[str](), list[str]()
    for i, (household, declarant) in enumerate(first_members(data_dir, count)):
        other = i % 4 == 3
        grantee, purpose = OTHER if other else (CONSENT_INSTITUTION, CONSENT_PURPOSE)
        cap = CAP if i % 4 == 0 else None
        claims: dict[str, Any] = {"act": "grant", "jti": secrets.token_urlsafe(12), "iat": now}
        claims.update(sub_kind="household", sub=household, grantor=declarant, grantee=grantee)
        claims.update(purposes=[purpose], scopes=list(SCOPES), nbf=now - DAY_S, method="counter")
        claims["exp"] = now + 365 * DAY_S
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
        if not other and cap is None:
            plain.append(household)
            people.append(declarant)
        elif not other:
            capped.append(household)
    return Population(records, plain, capped, people)


def _check(gate: ConsentGate, grant: Grant, keys: Sequence[Key]) -> Callable[[int], object]:
    ctx = FetchContext(CONSENT_PURPOSE, 10.0, CONSENT_INSTITUTION)
    first = gate.check(grant, keys[0], ctx)
    if not isinstance(first, Permit) or not first.paths:
        raise RuntimeError(f"the bench's consent did not permit {keys[0]}")
    n = len(keys)
    return lambda i: gate.check(grant, keys[i % n], ctx)


def checks(
    gate: ConsentGate, grant: Grant, pop: Population, s: Settings, pg: bool
) -> dict[str, float]:
    """µs per ConsentGate.check of each kind of subject."""
    kinds: dict[str, list[Key]] = {
        "household": [("household_id", h) for h in pop.plain],
        "household_capped": [("household_id", h) for h in pop.capped],
        "person": [("idcs", p) for p in pop.people],
    }
    calls, seconds = s.pipeline_calls, s.step_seconds
    out = {
        k: round(timed(_check(gate, grant, keys), calls, seconds=seconds), 1)
        for k, keys in kinds.items()
    }
    # CPU of this process (every thread) per household check; the rest of its wall time
    # is waiting (for PostgreSQL: the round trip and the server's work, whose CPU the
    # server's processes report).
    server0 = postgres_cpu_s()
    out["household_cpu"] = round(cpu_us(_check(gate, grant, kinds["household"]), calls), 1)
    if pg:
        out["household_server_cpu"] = round((postgres_cpu_s() - server0) / (calls + 1) * 1e6, 1)
    return out


def handler(
    p: Pipeline, gate: ConsentGate, households: Sequence[str], s: Settings, audit: bool
) -> float:
    """µs per call of the whole GetHouseholdStatus handler for MEN (consent-based)."""
    subjects = [pb.Subject(household_id=h) for h in households]
    requests = [
        pb.GetHouseholdStatusRequest(purpose=CONSENT_PURPOSE, subject=subject).SerializeToString()
        for subject in subjects
    ]
    calls, signer = s.pipeline_calls, Credentials.from_pki(p.pki_dir, CONSENT_INSTITUTION).signer
    signed = tokens(signer, CONSENT_METHOD, CONSENT_PURPOSE, requests, calls + 1)
    handle = p.handler(audit=audit, consent=gate, method=CONSENT_METHOD)
    call = caller(handle, CONSENT_INSTITUTION, requests, signed)
    if not pb.GetHouseholdStatusResponse.FromString(call(calls)).household.members:
        raise RuntimeError("the consent-based GetHouseholdStatus disclosed nothing")
    return round(timed(call, calls, seconds=s.step_seconds), 1)


def measure(
    p: Pipeline, work: Path, data_dir: Path, s: Settings, postgres_url: str | None
) -> dict[str, Any]:
    """The checks over `s.consents` consents on SQLite (and PostgreSQL), and the handler
    around them on SQLite, `s.pipeline_calls` calls each capped at `s.step_seconds`."""
    name = CONSENT_METHOD.rsplit("/", 1)[1]
    grant = p.security.policy.authorize(CONSENT_INSTITUTION, name, CONSENT_PURPOSE)
    if grant is None or not grant.consent_based:
        raise RuntimeError("the shipped policy has no consent-based MEN GetHouseholdStatus")
    pop, built_s = clocked(lambda: population(data_dir, p.pki_dir, s.consents))
    out: dict[str, Any] = {
        "consents": len(pop.records),
        "calls": s.pipeline_calls,
        "built_s": round(built_s, 1),
    }
    postgres = [("postgresql", postgres_url)] if postgres_url else []
    for backend, url in [("sqlite", None), *postgres]:
        state = work / f"consent-{backend}"
        state.mkdir(parents=True, exist_ok=True)
        with closing(ConsentDatabase(backend, state, url)) as db:
            store = db.open()  # it makes the schema; the rows go in behind its back
            db.load(pop.records)
            gate = ConsentGate(store, p.registries)
            row: dict[str, Any] = {"check_us": checks(gate, grant, pop, s, url is not None)}
            row["handler_us"] = handler(p, gate, pop.plain, s, audit=False)
            if backend == "sqlite":
                row["handler_audited_us"] = handler(p, gate, pop.plain, s, audit=True)
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
