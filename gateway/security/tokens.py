"""Request tokens: the compact JWS in `x-jisr-signature`, checked as the wire contract says.

Pure: the caller passes the certificate's institution, the called method, the exact
request bytes and the time. Follows RFC 8725: the algorithm is the one pinned on the key
(never the header's choice), keys come only from the trust store (never from jku/jwk/x5u
headers), the token type is explicit, every claim is required and checked.

The compact JWS itself is read strictly by gateway/base/jws.py (size, depth, duplicate
names, surrogates, pinned algorithm) before any claim is looked at. Every string claim has
a precise character set and length (docs/security.md §2).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.base.errors import Reason
from gateway.base.jws import TokenError, body_hash, malformed, signed_claims, unverified
from gateway.security.trust import TrustStore

REQUEST_TYP = "jisr-req+jwt"
BATCH_TYP = "jisr-batch+jwt"
MAX_LIFETIME_S = 300
SKEW_S = 30
REQUIRED = ("iss", "sub", "aud", "iat", "exp", "jti", "purpose", "method", "rh")


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the contract allows in one string claim, and how a partner is told so."""

    pattern: re.Pattern[str]
    says: str


# Printable ASCII only, each claim its own set and length: no control character, no
# surrogate, nothing two stores could fold into the same key (a jti with NUL and one
# with U+FFFD would otherwise meet in the replay index).
CLAIM_SHAPES: Mapping[str, _Shape] = {
    "iss": _Shape(re.compile(r"[A-Z][A-Z0-9_]{1,31}"), "an institution id, [A-Z][A-Z0-9_]{1,31}"),
    "sub": _Shape(re.compile(r"[A-Za-z0-9._:@-]{1,64}"), "1 to 64 of A-Z a-z 0-9 . _ : @ -"),
    "jti": _Shape(re.compile(r"[A-Za-z0-9_-]{16,128}"), "16 to 128 of A-Z a-z 0-9 _ -"),
    "purpose": _Shape(re.compile(r"[A-Z][A-Z0-9_]{1,63}"), "a purpose, [A-Z][A-Z0-9_]{1,63}"),
    "method": _Shape(
        re.compile(r"/[A-Za-z][A-Za-z0-9_.]{0,127}/[A-Za-z][A-Za-z0-9_]{0,63}"),
        "a full method name, /package.Service/Method",
    ),
    "rh": _Shape(
        re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]"),
        "an unpadded base64url SHA-256 (43 characters)",
    ),
}


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


def _shaped(claims: Mapping[str, Any], name: str) -> str:
    """A string claim that matches its rule in CLAIM_SHAPES; the refusal names the claim."""
    value = claims.get(name)
    shape = CLAIM_SHAPES[name]
    if not isinstance(value, str) or not shape.pattern.fullmatch(value):
        raise malformed(f"claim {name} must be {shape.says}")
    return value


def _shaped_claims(claims: Mapping[str, Any]) -> dict[str, str]:
    """Every required claim present, and every string claim in its shape, before any is used."""
    missing = [name for name in REQUIRED if name not in claims]
    if missing:
        raise malformed(f"token lacks claim {missing[0]}")
    return {name: _shaped(claims, name) for name in CLAIM_SHAPES}


def _int(claims: Mapping[str, Any], name: str) -> int:
    """A JSON integer claim: `true` and `1.0` compare equal to 1 in Python, but are not it."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise malformed(f"claim {name} must be a whole number")
    return value


def _check_audience(aud: object, audience: str) -> None:
    """`aud` must be this gateway's id, as one string.

    A list is refused even if it names this gateway: the contract addresses each token to
    one gateway, and a token addressed to several could be spent at each of them.
    """
    if not isinstance(aud, str):
        raise malformed("claim aud must be one string, the gateway id")
    if aud != audience:
        raise TokenError(Reason.WRONG_AUDIENCE, "the token is not addressed to this gateway")


def _check_times(claims: Mapping[str, Any], now: float) -> tuple[int, int]:
    """`iat` and `exp`, once the time claims agree with `now`.

    `iat` and `nbf` (optional) at most SKEW_S ahead of `now`, a lifetime of 1 to
    MAX_LIFETIME_S, `exp` at most SKEW_S behind `now`: every bound inclusive, both sides
    of each pinned by tests.
    """
    iat, exp = _int(claims, "iat"), _int(claims, "exp")
    nbf = _int(claims, "nbf") if "nbf" in claims else None
    if iat > now + SKEW_S:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "iat is in the future")
    if nbf is not None and nbf > now + SKEW_S:
        raise TokenError(Reason.TOKEN_NOT_YET_VALID, "nbf is in the future")
    if exp <= iat or exp - iat > MAX_LIFETIME_S:
        raise TokenError(
            Reason.TOKEN_LIFETIME, f"exp must be after iat by at most {MAX_LIFETIME_S} s"
        )
    if exp < now - SKEW_S:
        raise TokenError(Reason.TOKEN_EXPIRED, "the token has expired")
    return iat, exp


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
    text = _shaped_claims(claims)
    if text["iss"] != institution:
        raise TokenError(Reason.ISSUER_MISMATCH, "iss is not the certificate's institution")
    _check_audience(claims["aud"], audience)
    iat, exp = _check_times(claims, now)
    if text["method"] != method:
        raise TokenError(Reason.METHOD_MISMATCH, "the token was issued for another method")
    if body is not None:
        check_body(text["rh"], body)
    return RequestClaims(
        iss=text["iss"],
        sub=text["sub"],
        jti=text["jti"],
        purpose=text["purpose"],
        method=method,
        rh=text["rh"],
        iat=iat,
        exp=exp,
        kid=kid,
    )


def check_body(rh: str, body: bytes) -> None:
    """The token's `rh` must be the hash of exactly these bytes."""
    if rh != body_hash(body):
        raise TokenError(Reason.BODY_MISMATCH, "rh does not match the request bytes")


def unverified_issuer(token: str) -> str:
    """The `iss` a token claims, before any check (plaintext development mode only).

    Read by the same strict parser as a verified token (size, depth, unique names, shape),
    so this mode is no back door to the decoder.
    """
    _, claims = unverified(token)
    return _shaped(claims, "iss")


def verify_batch(
    token: str, *, institution: str, jti: str, seq: int, batch: bytes, trust: TrustStore
) -> str:
    """Check one batch's signature (same key rules), bound to the call and its position.

    `seq` must be a whole number: JSON `true` or `1.0` is not position 1.
    """
    claims, _ = signed_claims(token, BATCH_TYP, institution, trust)
    position = _int(claims, "seq")
    if claims.get("jti") != jti or position != seq:
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
