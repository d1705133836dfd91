"""The consent record: who consents, to whom, for what, for how long, on what evidence.

A record is never updated in place: every change (grant, revocation) is a new revision
whose `prev_hash` is the previous revision's `hash`, so the history of a consent can be
verified like a small hash chain. Times are whole seconds since the epoch (UTC).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from enum import StrEnum


class SubjectKind(StrEnum):
    """What a consent is about: a whole RSU household or one person."""

    HOUSEHOLD = "household"
    PERSON = "person"


class Status(StrEnum):
    """Stored status; EXPIRED is never stored, it is derived from `valid_until`."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class UseCap:
    """At most `max_uses` exchanges per `period_s` seconds (fixed windows from valid_from)."""

    max_uses: int
    period_s: int


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One revision of one consent."""

    consent_id: str
    revision: int  # 1 for the grant, then 2, 3, ...
    subject_kind: SubjectKind
    subject: str  # household id or IDCS
    grantor: str  # IDCS of the declarant (household) or of the person
    grantee: str  # institution id that may receive the data
    purposes: tuple[str, ...]  # sorted purpose codes
    scopes: tuple[str, ...]  # sorted field-group names known to the policy
    valid_from: int
    valid_until: int
    use_cap: UseCap | None
    status: Status  # ACTIVE or REVOKED (as stored)
    collected_by: str  # the consent-collector institution
    collection_method: str  # e.g. "counter", "portal", "mobile"
    artefact: str  # compact JWS by the collecting institution (consent/artefact.py)
    recorded_at: int
    prev_hash: str  # "" for revision 1
    hash: str = ""  # SHA-256 (hex) of the canonical form of every other field

    def canonical(self) -> bytes:
        """The bytes the hash covers: sorted-key JSON of every field but `hash`."""
        data = asdict(self)
        data.pop("hash")
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    def sealed(self) -> ConsentRecord:
        """This revision with its hash computed."""
        return replace(self, hash=hashlib.sha256(self.canonical()).hexdigest())

    def status_at(self, now: int) -> Status:
        """REVOKED as stored; else EXPIRED outside the validity window; else ACTIVE."""
        if self.status == Status.REVOKED:
            return Status.REVOKED
        if now >= self.valid_until or now < self.valid_from:
            return Status.EXPIRED
        return Status.ACTIVE

    def revoked(self, at: int, artefact: str = "") -> ConsentRecord:
        """The next revision: the same consent, revoked at `at`."""
        return replace(
            self,
            revision=self.revision + 1,
            status=Status.REVOKED,
            artefact=artefact or self.artefact,
            recorded_at=at,
            prev_hash=self.hash,
            hash="",
        ).sealed()


def verify_history(revisions: list[ConsentRecord]) -> str | None:
    """None if the revisions (oldest first) chain correctly; else what is wrong."""
    previous = ""
    for expected, record in enumerate(revisions, start=1):
        if record.revision != expected:
            return f"revision {record.revision} where {expected} was expected"
        if record.prev_hash != previous:
            return f"revision {record.revision} does not follow revision {expected - 1}"
        if record.sealed().hash != record.hash:
            return f"revision {record.revision} was altered (hash mismatch)"
        if record.consent_id != revisions[0].consent_id:
            return f"revision {record.revision} belongs to another consent"
        previous = record.hash
    return None
