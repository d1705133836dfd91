"""Receipts: the gateway's signed statement of what was asked and what was answered.

A compact JWS (`typ: jisr-receipt+jwt`) by the gateway's own key, sent in the trailing
metadata `x-jisr-receipt`. Anyone holding the gateway's published JWKS can verify one
offline with any standard JOSE library.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

from gateway.security.trust import key_from_jwk

RECEIPT_TYP = "jisr-receipt+jwt"
PERMIT = "permit"
DENY = "deny"


class ReceiptError(ValueError):
    """A receipt that does not verify against the given keys."""


@dataclass(frozen=True, slots=True)
class Exchanged:
    """What a receipt attests: the request, the answer, and on what basis."""

    jti: str
    rh: str
    sh: str
    method: str
    purpose: str
    decision: str
    fields: Sequence[str]
    basis: str
    reason: str = ""
    audit: str = ""
    trace: str = ""
    batches: int | None = None
    seq: int | None = None
    consents: Sequence[str] = ()


class ReceiptSigner:
    """Signs receipts with the gateway's ES256 key; the key is parsed once at start."""

    def __init__(self, key: EllipticCurvePrivateKey, kid: str, gateway_id: str) -> None:
        self._key = key
        self._headers = {"typ": RECEIPT_TYP, "kid": kid}
        self.gateway_id = gateway_id

    def sign(self, exchanged: Exchanged, now: float | None = None) -> str:
        claims: dict[str, Any] = {
            "iss": self.gateway_id,
            "jti": exchanged.jti,
            "rh": exchanged.rh,
            "sh": exchanged.sh,
            "method": exchanged.method,
            "purpose": exchanged.purpose,
            "decision": exchanged.decision,
            "fields": list(exchanged.fields),
            "basis": exchanged.basis,
            "audit": exchanged.audit,
            "trace": exchanged.trace,
            "iat": int(now if now is not None else time.time()),
        }
        if exchanged.reason:
            claims["reason"] = exchanged.reason
        if exchanged.batches is not None:
            claims["batches"] = exchanged.batches
        if exchanged.seq is not None:
            claims["seq"] = exchanged.seq
        if exchanged.consents:
            claims["consents"] = list(exchanged.consents)
        return jwt.encode(claims, self._key, algorithm="ES256", headers=self._headers)


def verify(receipt: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    """The claims of a receipt signed by a key of `jwks`; ReceiptError otherwise."""
    try:
        header = jwt.get_unverified_header(receipt)
    except jwt.PyJWTError as exc:
        raise ReceiptError(f"not a compact JWS: {exc}") from None
    if header.get("typ") != RECEIPT_TYP:
        raise ReceiptError(f"typ is {header.get('typ')!r}, not {RECEIPT_TYP}")
    keys = {k.get("kid"): k for k in jwks.get("keys", []) if isinstance(k, dict)}
    jwk = keys.get(header.get("kid"))
    if jwk is None:
        raise ReceiptError("signed by a key that is not in the gateway's JWKS")
    try:
        key, alg = key_from_jwk(jwk)
        if header.get("alg") != alg:
            raise ReceiptError(f"alg {header.get('alg')!r} is not the key's {alg}")
        claims: dict[str, Any] = jwt.decode(
            receipt, key, algorithms=[alg], options={"verify_aud": False, "verify_iat": False}
        )
    except (jwt.PyJWTError, ValueError) as exc:
        raise ReceiptError(f"signature does not verify: {exc}") from None
    return claims


def load_jwks(text: str) -> dict[str, Any]:
    """A JWKS document from JSON text."""
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ReceiptError("a JWKS needs a 'keys' array")
    return doc
