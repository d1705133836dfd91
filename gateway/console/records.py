"""Access records as the console shows them: back to the trail's own record (so its hash
can be recomputed), and a receipt set beside the record it names.

The gateway's receipt for an exchange quotes the record id (`audit`) and the same
request hash, response hash, method, purpose, decision, fields, basis and trace id as the
record. A DPO handed a receipt by an institution (or a citizen) checks here that the
gateway signed it and that it tells the same story as the trail.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.audit.record import AuditRecord
from gateway.pb.jisr.v1 import audit_pb2 as apb
from gateway.security import projection, receipts
from gateway.security.policy import METHODS


def at_us(record: apb.AccessRecord) -> int:
    return record.time.seconds * 1_000_000 + record.time.nanos // 1000


def moment(record: apb.AccessRecord) -> dt.datetime:
    return dt.datetime.fromtimestamp(at_us(record) / 1_000_000, dt.UTC)


def audit_record(r: apb.AccessRecord) -> AuditRecord:
    """The trail's record, every field as stored, so that its hash can be recomputed
    (and an evidence bundle written) from what the gateway sent."""
    return AuditRecord(
        node=r.node,
        seq=r.seq,
        at_us=at_us(r),
        trace_id=r.trace_id,
        requester=r.requester,
        requester_sub=r.requester_sub,
        method=r.method,
        purpose=r.purpose,
        basis=r.basis,
        subjects=tuple(r.subject_hashes),
        fields=tuple(r.fields),
        decision=r.decision,
        reason=r.reason,
        rh=r.request_hash,
        sh=r.response_hash,
        jti=r.jti,
        part=r.part,
        latency_us=r.latency_us,
        prev_hash=r.prev_hash,
        hash=r.hash,
    )


def withheld(method: str, disclosed: Sequence[str]) -> tuple[str, ...]:
    """The fields of the method's answer that the exchange did not disclose, for a DPO
    asking what the institution did *not* receive: every leaf of the disclosed message
    (`policy.METHODS`) that no disclosed path names or contains. The trail records what
    was disclosed; this is its complement, so a refusal (nothing disclosed) or a method
    the console does not know withholds nothing worth listing: ()."""
    known = METHODS.get(method.rsplit("/", 1)[-1])
    if known is None or not disclosed:
        return ()
    return tuple(
        leaf
        for leaf in projection.all_paths(known.disclosed)
        if not any(leaf == d or leaf.startswith(d + ".") for d in disclosed)
    )


def hash_holds(r: apb.AccessRecord) -> bool:
    """Whether the record's hash is that of its fields: what is shown is what was chained.
    (Its place in the chain is the integrity page's business.)"""
    record = audit_record(r)
    try:
        return record.sealed().hash == r.hash
    except ValueError:
        return False


@dataclass(frozen=True)
class ClaimCheck:
    claim: str
    receipt: str
    record: str

    @property
    def agrees(self) -> bool:
        return self.receipt == self.record


@dataclass(frozen=True)
class ReceiptCheck:
    """A pasted receipt: the signature's verdict, then each claim against the record."""

    signed: bool
    problem: str  # why the signature does not verify ("" when it does)
    claims: tuple[ClaimCheck, ...]

    @property
    def agrees(self) -> bool:
        return self.signed and all(c.agrees for c in self.claims)


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def check_receipt(token: str, r: apb.AccessRecord, jwks: Mapping[str, Any]) -> ReceiptCheck:
    """Verify `token` with the gateway's keys and compare its claims with record `r`."""
    try:
        claims = receipts.verify(token.strip(), jwks)
    except receipts.ReceiptError as exc:
        return ReceiptCheck(False, str(exc), ())
    expected = {
        "audit": f"{r.node}:{r.seq}",
        "jti": r.jti,
        "method": r.method,
        "purpose": r.purpose,
        "decision": r.decision,
        "basis": r.basis,
        "fields": _text(list(r.fields)),
        "rh": r.request_hash,
        "sh": r.response_hash,
        "trace": r.trace_id,
    }
    checks = tuple(
        ClaimCheck(name, _text(claims.get(name)), value) for name, value in expected.items()
    )
    return ReceiptCheck(True, "", checks)
