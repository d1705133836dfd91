"""An outside witness of the audit trail: the observatory countersigns the gateway's
signed checkpoints, so the gateway alone cannot rewrite history (docs/audit-format.md,
"Witnessed checkpoints").

The gateway's checkpoint says "record node:seq has hash H", signed by the gateway's key.
A gateway (or whoever holds its key) could rebuild a chain with other records, recompute
every hash and re-sign new checkpoints: its own signatures prove nothing against itself.
A witness that countersigned (node, seq, H) earlier pins that history: a bundle whose
chain gives another hash at node:seq contradicts the witness, whatever the gateway signs.

The witness keeps its own log (one JSON object per line: node, seq, hash, the checkpoint's
time, and the countersignature, a compact JWS by the witness's institution key), so the
gateway cannot delete what was witnessed. It countersigns only checkpoints of a bundle
that verifies against the gateway's published keys, and refuses, naming node and seq, a
checkpoint that contradicts one it witnessed before.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.chain import Finding
from gateway.audit.record import AuditRecord, Checkpoint

TYP = "jisr-witness+jwt"
# The algorithms an institution's signing key may have (gateway/security/pki.py).
ALGS = ("ES256", "EdDSA")
WITNESS = "witness"  # the kind of a finding against a witnessed checkpoint


@dataclass(frozen=True, slots=True)
class Witnessed:
    """One countersigned checkpoint, as the witness's log keeps it."""

    node: str
    seq: int
    hash: str
    at_us: int
    witness: str
    witnessed_at: str
    token: str

    def line(self) -> str:
        return json.dumps(
            {
                "node": self.node,
                "seq": self.seq,
                "hash": self.hash,
                "at_us": self.at_us,
                "witness": self.witness,
                "witnessed_at": self.witnessed_at,
                "token": self.token,
            },
            sort_keys=True,
        )


@dataclass(frozen=True, slots=True)
class Signer:
    """The witness institution's signing key, its kid and algorithm, and its id."""

    key: EllipticCurvePrivateKey | Ed25519PrivateKey
    kid: str
    alg: str
    institution: str


def countersign(cp: Checkpoint, signer: Signer, now: dt.datetime) -> Witnessed:
    """The witness's countersignature of a checkpoint it verified: claims name the node,
    seq and hash, the checkpoint's time, and the SHA-256 of the gateway's signature."""
    at = now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    claims = {
        "iss": signer.institution,
        "node": cp.node,
        "seq": cp.seq,
        "hash": cp.hash,
        "at_us": cp.at_us,
        "gateway_signature_sha256": hashlib.sha256(cp.signature.encode()).hexdigest(),
        "witnessed_at": at,  # not `iat`: a log is read years later, and across clocks
    }
    headers = {"typ": TYP, "kid": signer.kid}
    token = jwt.encode(claims, signer.key, algorithm=signer.alg, headers=headers)
    return Witnessed(cp.node, cp.seq, cp.hash, cp.at_us, signer.institution, at, token)


def read_log(path: Path) -> list[Witnessed]:
    """The witness's log; ValueError naming the file and line of anything unreadable."""
    if not path.exists():
        return []
    found: list[Witnessed] = []
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not text.strip():
            continue
        try:
            found.append(_entry(json.loads(text)))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ValueError(f"{path}:{number}: not a witnessed checkpoint") from None
    return found


def _entry(obj: Any) -> Witnessed:
    """One line of the log; TypeError or KeyError unless every member has its type."""
    if not isinstance(obj, dict):
        raise TypeError("not an object")
    texts = [obj[k] for k in ("node", "hash", "witness", "witnessed_at", "token")]
    if type(obj["seq"]) is not int or type(obj["at_us"]) is not int:
        raise TypeError("seq and at_us are whole numbers")
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("node, hash, witness, witnessed_at and token are strings")
    node, hash_, who, when, token = texts
    return Witnessed(node, obj["seq"], hash_, obj["at_us"], who, when, token)


def contradictions(log: Iterable[Witnessed], checkpoints: Iterable[Checkpoint]) -> list[str]:
    """Checkpoints that give another hash to a node:seq the witness countersigned."""
    known = {(w.node, w.seq): w for w in log}
    out: list[str] = []
    for cp in checkpoints:
        seen = known.get((cp.node, cp.seq))
        if seen is not None and seen.hash != cp.hash:
            out.append(
                f"{cp.node}:{cp.seq}: the gateway now signs another hash than the one "
                f"witnessed on {seen.witnessed_at}"
            )
    return out


def check_signatures(log: Sequence[Witnessed], jwks: Mapping[str, Any]) -> list[Finding]:
    """A finding for each log entry whose countersignature does not verify with the
    witness's keys, or does not sign exactly that entry. ValueError for keys that are not
    a usable JWKS."""
    keys = _keys(jwks)
    findings: list[Finding] = []
    for w in log:
        claims = _claims(w.token, keys)
        signed = claims is not None and (
            claims.get("node"),
            claims.get("seq"),
            claims.get("hash"),
            claims.get("at_us"),
            claims.get("iss"),
            claims.get("witnessed_at"),
        ) == (w.node, w.seq, w.hash, w.at_us, w.witness, w.witnessed_at)
        if not signed:
            detail = "the witness's countersignature does not verify for this entry"
            findings.append(Finding(w.node, w.seq, WITNESS, detail))
    return findings


def countersigns(w: Witnessed, cp: Checkpoint, jwks: Mapping[str, Any]) -> bool:
    """True if `w` verifies with the witness's keys and countersigns exactly this signed
    checkpoint (its node, seq, hash, time and gateway signature). ValueError for keys that
    are not a usable JWKS."""
    claims = _claims(w.token, _keys(jwks))
    return claims is not None and (
        claims.get("iss"),
        claims.get("node"),
        claims.get("seq"),
        claims.get("hash"),
        claims.get("at_us"),
        claims.get("gateway_signature_sha256"),
    ) == (
        w.witness,
        cp.node,
        cp.seq,
        cp.hash,
        cp.at_us,
        hashlib.sha256(cp.signature.encode()).hexdigest(),
    )


def _keys(jwks: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    try:
        return {k.key_id: k for k in jwt.PyJWKSet.from_dict(dict(jwks)).keys if k.key_id}
    except (jwt.PyJWTError, TypeError, KeyError) as exc:
        raise ValueError(
            f"the witness's keys are not a usable JWKS ({type(exc).__name__})"
        ) from None


def _claims(token: str, keys: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        header = jwt.get_unverified_header(token)
        key = keys.get(str(header.get("kid", "")))
        if header.get("typ") != TYP or key is None:
            return None
        claims: dict[str, Any] = jwt.decode(token, key.key, algorithms=list(ALGS))
    except (jwt.PyJWTError, TypeError, ValueError):  # a key of another kind than the token's
        return None
    return claims


def against_records(log: Sequence[Witnessed], records: Iterable[AuditRecord]) -> list[Finding]:
    """A finding for each witnessed node:seq whose record, among `records`, has another
    hash: the chain was rewritten after the witness countersigned it."""
    wanted = {(w.node, w.seq): w for w in log}
    findings: list[Finding] = []
    for record in records:
        w = wanted.get((record.node, record.seq))
        if w is not None and record.hash != w.hash:
            detail = (
                f"the chain here is not the one the witness {w.witness} countersigned on "
                f"{w.witnessed_at}: the history was rewritten"
            )
            findings.append(Finding(record.node, record.seq, WITNESS, detail))
    return findings


def against_bundle(
    log: Sequence[Witnessed], records: Iterable[AuditRecord], checkpoints: Sequence[Checkpoint]
) -> list[Finding]:
    """Everything a bundle says that contradicts the witness: a record or a checkpoint
    giving a witnessed node:seq another hash; and, when nothing in the bundle falls on a
    witnessed node:seq, that the witness vouches for none of it (a slice after the last
    witnessed checkpoint, or a node the witness never saw, is not covered)."""
    findings: list[Finding] = []
    wanted = {(w.node, w.seq) for w in log}
    covered = False
    for record in records:
        covered = covered or (record.node, record.seq) in wanted
        findings += against_records(log, [record])
    for line in contradictions(log, checkpoints):
        node_seq, _, detail = line.partition(": ")
        node, _, seq = node_seq.rpartition(":")
        findings.append(Finding(node, int(seq), WITNESS, detail))
    covered = covered or any((cp.node, cp.seq) in wanted for cp in checkpoints)
    if not covered:
        detail = "no witnessed checkpoint falls in this bundle: the witness vouches for none of it"
        findings.append(Finding("", 0, WITNESS, detail, where="witness log"))
    return findings


def append_log(path: Path, entries: Sequence[Witnessed]) -> None:
    """Append entries to the log, starting on a line of their own."""
    text = "".join(w.line() + "\n" for w in entries)
    if not text:
        return
    starts_clean = not path.exists() or path.read_bytes()[-1:] in {b"", b"\n"}
    with path.open("a", encoding="utf-8") as file:
        file.write(text if starts_clean else "\n" + text)
