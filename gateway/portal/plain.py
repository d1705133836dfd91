"""An access report and contest cases in plain language: what a citizen reads.

Pure (no I/O). The gateway's AccessEntry names fields by their wire names; a citizen reads
the kind of data instead ("your identity", "your household's composition"), grouped the
way consents name them (the `[scopes]` of policy.toml, which the wire contract fixes), so
a report and a consent speak of the same things. An unknown field is shown as it is named,
never dropped: the report must not hide a disclosure the portal has no words for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp

from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.pb.jisr.v1 import consent_pb2 as cpb
from gateway.pb.jisr.v1 import contests_pb2 as kpb

# Field (its last path part) -> the kind of data a citizen is told of.
GROUPS: dict[str, str] = {
    "idcs": "identity",
    "household_id": "identity",
    "vital_status": "vital",
    "death_date": "vital",
    "civil_status": "civil",
    "relationship": "civil",
    "birth_date": "civil",
    "region": "situation",
    "area": "situation",
    "registered_on": "situation",
    "scored_on": "situation",
    "enrolments": "situation",
    "score_band": "socio_economic",
    "programme": "eligibility",
    "eligible": "eligibility",
    "reasons": "eligibility",
    "threshold_version": "eligibility",
    "legal_reference": "eligibility",
    "as_of": "eligibility",
}
# Composition of the household: members' details, whatever the field.
MEMBERS_PREFIX = "members."


@dataclass(frozen=True)
class Access:
    """One access as the report page shows it."""

    institution: str
    purpose: str
    basis: str
    when: dt.datetime
    groups: tuple[str, ...]  # kinds of data, in a fixed order
    unnamed: tuple[str, ...]  # fields the portal has no words for, as named
    permitted: bool
    record_id: str


ORDER = ("identity", "vital", "civil", "composition", "situation", "socio_economic", "eligibility")


def groups_of(fields: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the kinds of data the fields belong to, in ORDER; the fields without a kind)."""
    kinds: set[str] = set()
    unnamed: list[str] = []
    for field in fields:
        if field.startswith(MEMBERS_PREFIX) or field == "members":
            kinds.add("composition")
            continue
        kind = GROUPS.get(field.rsplit(".", 1)[-1])
        if kind is None:
            unnamed.append(field)
        else:
            kinds.add(kind)
    return tuple(k for k in ORDER if k in kinds), tuple(sorted(set(unnamed)))


def access(entry: apb.AccessEntry) -> Access:
    groups, unnamed = groups_of(entry.fields)
    when = dt.datetime.fromtimestamp(entry.time.seconds + entry.time.nanos / 1e9, dt.UTC)
    return Access(
        institution=entry.institution,
        purpose=entry.purpose,
        basis=entry.basis,
        when=when,
        groups=groups,
        unnamed=unnamed,
        permitted=entry.decision == "permit",
        record_id=entry.record_id,
    )


def report(entries: Iterable[apb.AccessEntry]) -> list[Access]:
    """The accesses, newest first."""
    return sorted((access(e) for e in entries), key=lambda a: a.when, reverse=True)


def _time(stamp: Timestamp) -> dt.datetime | None:
    """A wire time as an aware datetime; None when unset."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return dt.datetime.fromtimestamp(stamp.seconds + stamp.nanos / 1e9, dt.UTC)


@dataclass(frozen=True)
class Case:
    """One contest case as the citizen reads it, with the steps open to them now."""

    case_id: str
    record_id: str
    institution: str
    state: str
    outcome: str
    opened: dt.datetime | None
    answer_due: dt.datetime | None
    appeal_due: dt.datetime | None
    statement: str
    answer: str
    decision: str
    version: int
    can_accept: bool
    can_escalate: bool
    can_withdraw: bool


def case(c: kpb.ContestCase, now: dt.datetime | None = None) -> Case:
    """`c` for the citizen. The gateway decides every step again; these flags only spare
    the citizen a button that would be refused (an appeal past its window)."""
    moment = now or dt.datetime.now(dt.UTC)
    appeal_due = _time(c.appeal_due)
    answered = c.state == "answered"
    return Case(
        case_id=c.case_id,
        record_id=c.record_id,
        institution=c.institution,
        state=c.state,
        outcome=c.outcome,
        opened=_time(c.opened),
        answer_due=_time(c.answer_due),
        appeal_due=appeal_due,
        statement=c.statement,
        answer=c.answer,
        decision=c.decision,
        version=c.version,
        can_accept=answered,
        can_escalate=answered and appeal_due is not None and moment < appeal_due,
        can_withdraw=c.state in ("open", "answered"),
    )


@dataclass(frozen=True)
class Step:
    """One step of a case's history: who (a kind of actor, never a person), what, when."""

    when: dt.datetime | None
    actor: str
    action: str
    text: str


def step(e: kpb.CaseEvent) -> Step:
    return Step(when=_time(e.time), actor=e.actor_kind, action=e.action, text=e.text)


_CONSENT_STATUS = {
    cpb.CONSENT_STATUS_ACTIVE: "active",
    cpb.CONSENT_STATUS_REVOKED: "revoked",
    cpb.CONSENT_STATUS_EXPIRED: "expired",
}


@dataclass(frozen=True)
class Consent:
    """One consent as the citizen reads it: who may receive what, for what, until when."""

    consent_id: str
    about_household: bool
    given_by_you: bool
    grantee: str
    purposes: tuple[str, ...]
    scopes: tuple[str, ...]  # kinds of data (the policy's scopes), in ORDER
    valid_from: dt.datetime | None
    valid_until: dt.datetime | None
    status: str  # "active", "revoked" or "expired"
    can_revoke: bool


def consent(c: cpb.Consent, citizen: str) -> Consent:
    """`c` for the citizen `citizen` (IDCS): only the one who gave a consent may take it
    back (the gateway's rule too: GRANTOR_NOT_ENTITLED)."""
    status = _CONSENT_STATUS.get(c.status, "expired")
    mine = c.grantor_idcs == citizen
    known = [s for s in ORDER if s in c.scopes]
    return Consent(
        consent_id=c.consent_id,
        about_household=c.subject.WhichOneof("subject") == "household_id",
        given_by_you=mine,
        grantee=c.grantee,
        purposes=tuple(c.purposes),
        scopes=tuple(known + sorted(set(c.scopes) - set(known))),
        valid_from=_time(c.valid_from),
        valid_until=_time(c.valid_until),
        status=status,
        can_revoke=mine and status == "active",
    )
