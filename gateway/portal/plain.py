"""An access report in plain language: what a citizen reads for each access.

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

from gateway.pb.jisr.v1 import audit_pb2 as apb

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
