"""Request tokens: the compact JWS in `x-jisr-signature`, checked as the wire contract says.

Pure: the caller passes the certificate's institution, the called method, the exact
request bytes and the time. Follows RFC 8725: the algorithm is the one pinned on the key
(never the header's choice), keys come only from the trust store (never from jku/jwk/x5u
headers), the token type is explicit, every claim is required and checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ec import ECDSA, EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from gateway.errors import Reason
from gateway.trust import PublicKey, TrustStore

REQUEST_TYP = "jisr-req+jwt"
BATCH_TYP = "jisr-batch+jwt"
MAX_LIFETIME_S = 300
SKEW_S = 30
REQUIRED = ("iss", "sub", "aud", "iat", "exp", "jti", "purpose", "method", "rh")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_FORBIDDEN_HEADERS = frozenset({"jku", "jwk", "x5u", "x5c", "crit"})


class TokenError(Exception):
    """A token that must be refused, with the stable reason partners see."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class RequestClaims:
    """The checked claims of one request token."""

    iss: str
    sub: str
    jti: str
    purpose: str
    method: str
    rh: str
    iat: int
    exp: int
    kid: str


def body_hash(data: bytes) -> str:
    """base64url (unpadded) SHA-256 of exact bytes: the `rh`/`sh` of the wire contract."""
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _segment(text: str) -> bytes:
    """Strict base64url (RFC 7515: no padding, URL-safe alphabet only)."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except ValueError:
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS") from None


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS") from None
    if not isinstance(value, dict):
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS")
    return value


def _verify_signature(key: PublicKey, alg: str, signature: bytes, signed: bytes) -> bool:
    """ES256 (raw r||s, 64 bytes) or EdDSA (Ed25519) over the JWS signing input."""
    try:
        if alg == "ES256":
            if len(signature) != 64 or not isinstance(key, EllipticCurvePublicKey):
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), signed, ECDSA(SHA256()))
            return True
        if alg == "EdDSA" and isinstance(key, Ed25519PublicKey):
            key.verify(signature, signed)
            return True
    except InvalidSignature:
        return False
    return False


def signed_claims(
    token: str, typ: str, institution: str, trust: TrustStore
) -> tuple[dict[str, Any], str]:
    """Check the header and signature by one of `institution`'s keys; claims and key id.

    Parsed once, verified with `cryptography` directly: pyjwt parsed each token twice and
    cost about twice as much per exchange (docs/performance.md).
    """
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS")
    header = _json_object(_segment(parts[0]))
    if header.get("typ") != typ:
        raise TokenError(Reason.WRONG_TOKEN_TYPE, f"token typ must be {typ}")
    if _FORBIDDEN_HEADERS & header.keys():
        raise TokenError(Reason.MALFORMED_TOKEN, "token headers may not carry keys or crit")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError(Reason.UNKNOWN_KEY, "token names no key id")
    trusted = trust.get(institution, kid)
    if trusted is None:
        raise TokenError(Reason.UNKNOWN_KEY, "the key id is not one of the caller's keys")
    if trusted.revoked:
        raise TokenError(Reason.KEY_REVOKED, "the signing key has been revoked")
    if header.get("alg") != trusted.alg:
        raise TokenError(Reason.ALGORITHM_NOT_ALLOWED, f"this key signs with {trusted.alg} only")
    signature = _segment(parts[2])
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not _verify_signature(trusted.key, trusted.alg, signature, signing_input):
        raise TokenError(Reason.BAD_SIGNATURE, "the signature does not verify")
    return _json_object(_segment(parts[1])), kid


def _str(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > 256:
        raise TokenError(Reason.MALFORMED_TOKEN, f"claim {name} must be a non-empty string")
    return value


def _int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenError(Reason.MALFORMED_TOKEN, f"claim {name} must be a whole number")
    return value


def verify_request(
    token: str,
    *,
    institution: str,
    method: str,
    body: bytes | None,
    audience: str,
    now: float,
    trust: TrustStore,
) -> RequestClaims:
    """All checks of the wire contract except replay, which needs shared state.

    `body` None defers the `rh` check: a stream's token covers its first message, which
    has not arrived when the call starts (see `check_body`).
    """
    claims, kid = signed_claims(token, REQUEST_TYP, institution, trust)
    missing = [name for name in REQUIRED if name not in claims]
    if missing:
        raise TokenError(Reason.MALFORMED_TOKEN, f"token lacks claim {missing[0]}")
    iss = _str(claims, "iss")
    if iss != institution:
        raise TokenError(Reason.ISSUER_MISMATCH, "iss is not the certificate's institution")
    aud = claims["aud"]
    if aud != audience and not (isinstance(aud, list) and audience in aud):
        raise TokenError(Reason.WRONG_AUDIENCE, "the token is not addressed to this gateway")
    iat, exp = _int(claims, "iat"), _int(claims, "exp")
    if iat > now + SKEW_S:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "iat is in the future")
    if exp <= iat or exp - iat > MAX_LIFETIME_S:
        raise TokenError(
            Reason.TOKEN_LIFETIME, f"exp must be after iat by at most {MAX_LIFETIME_S} s"
        )
    if exp < now - SKEW_S:
        raise TokenError(Reason.TOKEN_EXPIRED, "the token has expired")
    if _str(claims, "method") != method:
        raise TokenError(Reason.METHOD_MISMATCH, "the token was issued for another method")
    rh = _str(claims, "rh")
    if body is not None:
        check_body(rh, body)
    return RequestClaims(
        iss=iss,
        sub=_str(claims, "sub"),
        jti=_str(claims, "jti"),
        purpose=_str(claims, "purpose"),
        method=method,
        rh=rh,
        iat=iat,
        exp=exp,
        kid=kid,
    )


def check_body(rh: str, body: bytes) -> None:
    """The token's `rh` must be the hash of exactly these bytes."""
    if rh != body_hash(body):
        raise TokenError(Reason.BODY_MISMATCH, "rh does not match the request bytes")


def unverified_issuer(token: str) -> str:
    """The `iss` a token claims, before any check (plaintext development mode only)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise TokenError(Reason.MALFORMED_TOKEN, "the signature is not a compact JWS") from None
    iss = claims.get("iss")
    if not isinstance(iss, str) or not iss:
        raise TokenError(Reason.MALFORMED_TOKEN, "token names no issuer")
    return iss


def verify_batch(
    token: str, *, institution: str, jti: str, seq: int, batch: bytes, trust: TrustStore
) -> str:
    """Check one batch's signature (same key rules), bound to the call and its position."""
    claims, _ = signed_claims(token, BATCH_TYP, institution, trust)
    if claims.get("jti") != jti or claims.get("seq") != seq:
        raise TokenError(Reason.BATCH_MISMATCH, "batch signature is for another call or position")
    rh = body_hash(batch)
    if claims.get("rh") != rh:
        raise TokenError(Reason.BODY_MISMATCH, "rh does not match the batch bytes")
    return rh


class ReplayGuard:
    """Remembers (iss, jti) until well after the token expires; a second use is refused.

    In-process. Across replicas the durable audit record's unique (iss, jti) index is the
    shared check (docs/security.md); this guard answers first and cheaply. Expired entries
    leave a few at a time, oldest first, so no request ever waits for a full sweep.
    """

    def __init__(self, clock: Any = time.time) -> None:
        self._seen: dict[tuple[str, str], float] = {}
        self._order: deque[tuple[float, tuple[str, str]]] = deque()
        self._lock = threading.Lock()
        self._clock = clock

    def first_use(self, iss: str, jti: str, exp: int) -> bool:
        """True the first time (iss, jti) is seen within its retention, False after."""
        now = self._clock()
        key = (iss, jti)
        with self._lock:
            for _ in range(8):
                if not self._order or self._order[0][0] > now:
                    break
                _, old = self._order.popleft()
                if self._seen.get(old, now + 1) <= now:
                    del self._seen[old]
            if key in self._seen:
                return False
            keep_until = exp + 2 * SKEW_S
            self._seen[key] = keep_until
            self._order.append((keep_until, key))
            return True
